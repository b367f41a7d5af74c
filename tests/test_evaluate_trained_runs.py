"""The comparison report for real (tiny) trained runs on the repository's sample photos."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_evaluate_harness import _numbers, _table_rows

from dishgen.cli import cli
from dishgen.evaluate.report import COLUMNS

TINY_CGAN = dict(resolution=32, base_channels=8, max_channel_mult=4, z_dim=16, cond_dim=16, batch_size=4,
                 r1_every=2, log_every=1, sample_every=100, checkpoint_every=3, keep_checkpoints=0, max_steps=6)
TINY_CVAE = dict(base_channels=8, max_channels=32, z_dim=16, cond_dim=32, batch_size=8, lr=2e-3, lr_warmup_steps=2,
                 log_every=2, samples_per_prompt=2, num_recon_images=4, sample_every=100, checkpoint_every=2,
                 max_steps=4)


@pytest.fixture(scope="module")
def two_runs(tiny_dataset_64, tmp_path_factory):
    """A tiny cGAN run (32 px, checkpoints at steps 3 and 6) and a tiny cVAE run (64 px, steps 2 and 4)."""
    from dishgen.config import resolve_config
    from dishgen.train import cgan, cvae

    root = tmp_path_factory.mktemp("runs")
    gan = cgan.train(resolve_config(cgan.CGANTrainConfig, overrides=TINY_CGAN), tiny_dataset_64, root / "gan")
    vae = cvae.train(resolve_config(cvae.CVAETrainConfig, overrides=TINY_CVAE), tiny_dataset_64, root / "vae")
    return gan, vae


def test_report_of_two_trained_runs_equals_its_json(two_runs, tiny_dataset_64, tiny_clip_dir, tmp_path):
    run_a, run_b = two_runs
    out = tmp_path / "report"
    args = ["evaluate", "--model", str(run_a), "--model", str(run_b), "--checkpoints", "all",
            "--data", str(tiny_dataset_64), "--out", str(out), "--clip-model", str(tiny_clip_dir),
            "--feature-backbone", "clip", "--seed", "0", "--bootstrap", "25", "--no-progress"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = report["results"]
    assert [(r["component"], r["step"], r["family"]) for r in rows] == [
        ("gan", 3, "cgan"), ("gan", 6, "cgan"), ("vae", 2, "cvae"), ("vae", 4, "cvae")]
    assert [r["image_sizes"] for r in rows] == [[[32, 32]]] * 2 + [[[64, 64]]] * 2
    assert all(r["n_generated"] == 9 for r in rows)
    fids = [r["metrics"]["fid"]["value"] for r in rows]
    assert len(set(fids)) == 4 and all(f > 0 for f in fids)  # four different models, four numbers
    table = _table_rows((out / "report.md").read_text(), "Results")
    for cells, row in zip(table, rows, strict=True):
        assert cells[:2] == [row["component"], str(row["step"])]
        for cell, (key, _, scale, _, _) in zip(cells[2:-1], COLUMNS, strict=True):
            metric = row["metrics"][key]
            shown = _numbers(cell)
            decimals = len(cell.split()[0].split(".")[1])
            for number, exact in zip(shown, [metric["value"], *metric["ci"]], strict=True):
                assert number == pytest.approx(exact * scale, abs=0.51 * 10**-decimals)
    # A re-run finds every image on disk and reproduces the report's numbers exactly.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == stamps
    assert json.loads((out / "report.json").read_text())["results"] == rows


def test_a_diffusion_pipeline_goes_through_the_same_harness(tiny_sd_dir, tiny_dataset, tiny_clip_dir, tmp_path):
    out = tmp_path / "report"
    args = ["evaluate", "--model", str(tiny_sd_dir), "--data", str(tiny_dataset), "--out", str(out),
            "--clip-model", str(tiny_clip_dir), "--num-samples", "4", "--knob", "num_inference_steps=2",
            "--knob", "truncation=0.5", "--metrics", "fid,clip-score", "--bootstrap", "10", "--no-progress"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "report.json").read_text())["results"]
    assert row["family"] == "diffusion" and row["n_generated"] == 4 and row["image_sizes"] == [[64, 64]]
    settings = json.loads((next((out / "images").iterdir()) / "generation.json").read_text())
    assert settings["knobs"] == {"num_inference_steps": 2}  # truncation is a cGAN knob
    assert row["metrics"]["fid"]["value"] > 0 and 0 <= row["metrics"]["clip_score"]["value"] <= 100
