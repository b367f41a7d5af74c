"""Labels that tell the truth (issue 13, item 7): docs, evaluation labels, checkpoint choice, splits."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_evaluate_harness import TinyFeatures, fake_models  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_cgan_doc_names_the_model_actually_bundled():
    weights = ROOT / "src" / "dishgen" / "weights"
    name = json.loads((weights / "default.json").read_text())["model"]
    family = json.loads((weights / name / "config.json").read_text())["family"]
    doc = (ROOT / "docs" / "cgan.md").read_text(encoding="utf-8")
    sentences = [s for s in re.split(r"(?<=[.;])\s+", doc.replace("\n", " ")) if "bundled" in s.lower()]
    assert sentences, "docs/cgan.md should say which model is bundled"
    assert f"`{name}`" in doc
    for sentence in sentences:  # each mention of the bundled model names its real family
        assert ("cVAE" in sentence) == (family == "cvae"), sentence


# -- a, c: the step and the weights a run directory is actually loaded from ----------------------


def _cvae_run(tmp_path: Path, final: bool) -> Path:
    """A stopped cvae run: checkpoint-25 and checkpoint-75 (the bundled weights), log up to step 72."""
    from dishgen.generation import default_model_path

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"family": "cvae"}))
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (24, 48, 72)))
    for step in (25, 75):
        shutil.copytree(default_model_path(), run / f"checkpoint-{step}")
        (run / f"checkpoint-{step}" / "COMPLETE").write_text(str(step))
    if final:
        shutil.copytree(default_model_path(), run / "model")
    return run


def test_generate_from_a_stopped_run_says_which_checkpoint_it_used(tmp_path):
    from dishgen.cli import cli

    run = _cvae_run(tmp_path, final=False)
    result = CliRunner().invoke(cli, ["generate", "sarma", "--model", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "using" in line]
    assert lines == [f"{run}: using checkpoint-75 (step 75); the run has no final weights (model/) yet"]
    assert "checkpoint" not in result.stdout


def test_generate_from_a_finished_run_says_it_used_the_final_weights(tmp_path):
    from dishgen.cli import cli

    run = _cvae_run(tmp_path, final=True)
    result = CliRunner().invoke(cli, ["generate", "sarma", "--model", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "using" in line] == [
        f"{run}: using its final weights (model/, step not recorded)"]
    named = CliRunner().invoke(cli, ["generate", "sarma", "--model", str(run / "checkpoint-25"),
                                     "--out", str(tmp_path / "out2")])
    assert named.exit_code == 0 and "using" not in named.stderr  # the folder named is the folder used


def test_evaluate_labels_a_stopped_run_with_the_checkpoint_it_scored(tiny_dataset, tmp_path, fake_models):  # noqa: F811
    from dishgen.evaluate import EvaluationConfig, evaluate

    run = fake_models("stopped", alpha=0.5, steps=(25, 75))
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (24, 48, 72)))
    finished = fake_models("finished", alpha=0.5, steps=(25,))
    (finished / "model").mkdir()
    (finished / "model" / "config.json").write_text(json.dumps({"family": "cgan", "step": 100}))
    report = evaluate(EvaluationConfig(data=tiny_dataset, out=tmp_path / "out", models=[str(run), str(finished)],
                                       metrics=("fid",), image_size=32, bootstrap=0, progress=False),
                      feature_network=TinyFeatures(), write=False)
    assert [(r["component"], r["step"]) for r in report["results"]] == [("stopped", 75), ("finished", 100)]


# -- b: the reference row names the split it used ------------------------------------------------


@pytest.mark.parametrize("split", ["test", "train"])
def test_reference_row_names_the_split_used(split, tiny_dataset, tiny_clip_dir, tmp_path):
    from dishgen.evaluate import EvaluationConfig, evaluate
    from dishgen.evaluate.report import markdown

    images = tmp_path / "images"
    shutil.copytree(tiny_dataset / "test", images)
    report = evaluate(EvaluationConfig(data=tiny_dataset, out=tmp_path / "out", images=[str(images)], split=split,
                                       clip_model=str(tiny_clip_dir), metrics=("fid", "clip-score"), image_size=32,
                                       bootstrap=0, progress=False),
                      feature_network=TinyFeatures(), write=False)
    rows = {r["component"]: r for r in report["references"]}
    # scoring the train split leaves no separate train photos for an FID floor row
    assert set(rows) == ({"real test photos", "real train photos"} if split == "test" else {"real train photos"})
    clip_row = rows[f"real {split} photos"]
    assert clip_row["split"] == split and f"{split!r} split" in clip_row["note"] and "clip_score" in clip_row["metrics"]
    assert f"*real {split} photos*" in markdown(report, charts=[], grid=None)
