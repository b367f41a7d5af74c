"""``dishgen evaluate`` on the command line, with a tiny CLIP as both CLIP model and feature network."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_evaluate_harness import _write_images, fake_models  # noqa: F401  (fixture)

from dishgen.cli import cli
from dishgen.errors import DishgenError, user_error_types


def test_cli_scores_a_folder_with_tiny_clip_features(tiny_dataset, tiny_clip_dir, tmp_path):
    images = _write_images(tmp_path / "sd-images", [40] * 6, captions=["a photo of baclava"] * 6)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, [
        "evaluate", "--images", str(images), "--data", str(tiny_dataset), "--out", str(out),
        "--feature-backbone", "clip", "--clip-model", str(tiny_clip_dir), "--bootstrap", "10", "--no-progress",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["feature"] == {"backbone": "clip", "model": str(tiny_clip_dir), "network": "ClipImageFeatures",
                                 "dim": 32, "image_size": 32}
    (row,) = report["results"]
    assert set(row["metrics"]) == {"fid", "kid", "clip_score", "clip_cosine", "clip_score_rescaled", "memorization",
                                   "spectral_distance", "edge_ratio", "grid_excess", "dish_retrieval"}
    # Baclava is a training dish: no image's caption is a test photo's, so dish retrieval says why it is empty.
    assert row["metrics"]["dish_retrieval"]["value"] is None and row["metrics"]["dish_retrieval"]["skipped_images"] == 6
    assert "sd-images" in result.output and f"report: {out / 'report.md'}" in result.output
    assert (out / "report.md").is_file() and (out / "charts" / "metrics.png").is_file()
    listing = [json.loads(line) for line in open(row["per_image"], encoding="utf-8")]
    assert len(listing) == 6 and all(r["text"] == "a photo of baclava" for r in listing)
    cosines = [r["clip_cosine"] for r in listing]
    assert cosines == sorted(cosines)  # worst first
    assert sum(cosines) / 6 == pytest.approx(row["metrics"]["clip_cosine"]["value"], abs=1e-5)
    assert all((tiny_dataset / "train").as_posix() in r["nearest_train_image"] for r in listing)


def test_cli_passes_knobs_and_sweeps_checkpoints(tiny_dataset, tiny_clip_dir, tmp_path, fake_models):  # noqa: F811
    run = fake_models("gan", alpha=0.5, steps=(10, 30))
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, [
        "evaluate", "--model", str(run), "--checkpoints", "all", "--data", str(tiny_dataset), "--out", str(out),
        "--metrics", "fid,clip-score", "--clip-model", str(tiny_clip_dir), "--feature-backbone", "clip",
        "--knob", "truncation=0.7", "--knob", "guidance_scale=7.5", "-k", "2", "--seed", "3", "--bootstrap", "0",
        "--no-progress",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {c[3]["truncation"] for c in fake_models.calls} == {0.7}  # guidance_scale is not a cgan knob
    assert all("guidance_scale" not in c[3] for c in fake_models.calls)
    report = json.loads((out / "report.json").read_text())
    assert [r["step"] for r in report["results"]] == [10, 30]
    assert all(r["n_generated"] == 18 and r["metrics"]["fid"]["ci"] is None for r in report["results"])
    settings = json.loads((out / "images" / "gan-step-10" / "generation.json").read_text())
    assert settings["knobs"] == {"truncation": 0.7} and settings["seed"] == 3


def test_cli_bad_input_is_a_user_error(tiny_dataset, tmp_path):
    runner = CliRunner()
    bad_metric = runner.invoke(cli, ["evaluate", "--images", str(tmp_path), "--data", str(tiny_dataset),
                                     "--out", str(tmp_path / "o"), "--metrics", "fid,sharpness"])
    assert bad_metric.exit_code == 2 and "unknown metric(s) sharpness" in bad_metric.output
    nothing = runner.invoke(cli, ["evaluate", "--data", str(tiny_dataset), "--out", str(tmp_path / "o")])
    assert nothing.exit_code == 2 and "give --model" in nothing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(cli, ["evaluate", "--images", str(tmp_path / "empty"), "--data", str(tiny_dataset),
                                "--out", str(tmp_path / "o")])
    # main() prints errors of these types as one line and exits with status 2.
    assert isinstance(empty.exception, DishgenError) and isinstance(empty.exception, user_error_types())
    assert "holds 0 image(s)" in str(empty.exception)
