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
    from dishgen.generation import WEIGHTS_DIR

    cvae = WEIGHTS_DIR / "cvae-ffml64"  # by name: the default is another family
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"family": "cvae"}))
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (24, 48, 72)))
    for step in (25, 75):
        shutil.copytree(cvae, run / f"checkpoint-{step}")
        (run / f"checkpoint-{step}" / "COMPLETE").write_text(str(step))
    if final:
        shutil.copytree(cvae, run / "model")
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


# -- d: a build says when its split is not what was asked ----------------------------------------


def test_split_notes_name_forced_one_photo_dishes_and_an_empty_test_split():
    from dishgen.data.split import split_indices, split_notes

    groups = ["sarma", "sarma", "ajvar", "burek", "burek", "pita"]
    _, test = split_indices(groups, 0.3, seed=0)
    notes = split_notes(groups, test, 0.3)
    assert notes["one_photo_dishes_in_train"] == ["ajvar", "pita"]
    assert len(notes["warnings"]) == 1 and "2 dish(es) with a single photo were put in train" in notes["warnings"][0]
    singles = ["a", "b", "c", "d"]
    _, test = split_indices(singles, 0.5, seed=0)
    assert test == []
    warnings = split_notes(singles, test, 0.5)["warnings"]
    assert "the test split is empty (no dish has two or more photos" in warnings[0]
    assert split_notes(singles, [], 0.0)["warnings"] == []  # no test split asked for, nothing to say
    assert split_notes(singles, [1, 2], 0.5, by="image") == {"one_photo_dishes_in_train": [], "warnings": []}


def test_build_logs_and_records_an_empty_test_split(tmp_path, sample_images, caplog):
    import logging

    from dishgen.data.build import BuildOptions, build_dataset
    from dishgen.data.importer import import_photo_folder

    photos = tmp_path / "photos"
    for dish in sorted(p for p in sample_images.iterdir() if p.is_dir())[:3]:  # one photo of each of 3 dishes
        (photos / dish.name).mkdir(parents=True)
        shutil.copy(sorted(dish.glob("*.jpg"))[0], photos / dish.name / "01.jpg")
    raw = tmp_path / "raw"
    import_photo_folder(photos, raw)
    with caplog.at_level(logging.WARNING, logger="dishgen.data.build"):
        summary = build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, workers=1, test_fraction=0.4))
    assert summary["counts"]["test"]["images"] == 0
    recorded = json.loads((tmp_path / "ds" / "dataset.json").read_text())["split"]
    assert len(recorded["one_photo_dishes_in_train"]) == 3 and recorded["test_fraction"] == 0.4
    assert any("the test split is empty" in w for w in recorded["warnings"])
    logged = [r.getMessage() for r in caplog.records]
    assert logged == recorded["warnings"]


# -- e: import follows symlinked folders, once, and says what it skipped -------------------------


def test_import_follows_symlinked_dish_folders_and_skips_loops(tmp_path, sample_images):
    from dishgen.data.importer import import_photo_folder
    from dishgen.data.records import read_records

    dishes = sorted(p for p in sample_images.iterdir() if p.is_dir())[:2]
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    shutil.copytree(dishes[0], root / "sarma")
    shutil.copytree(dishes[1], elsewhere / "burek")
    (root / "burek").symlink_to(elsewhere / "burek", target_is_directory=True)  # a dish kept elsewhere
    (root / "sarma" / "again").symlink_to(root, target_is_directory=True)  # a loop back to the top
    (elsewhere / "burek" / "up").symlink_to(elsewhere, target_is_directory=True)  # a loop through the link
    (root / "burek-copy").symlink_to(elsewhere / "burek", target_is_directory=True)  # the same folder twice

    result = import_photo_folder(root, tmp_path / "raw")
    records = read_records(tmp_path / "raw")
    n_sarma, n_burek = (len(list(d.glob("*.jpg"))) for d in dishes)
    assert result["added"] == n_sarma + n_burek == len(records)
    assert sorted({r.name for r in records}) == ["burek", "sarma"]
    reasons = dict(result["skipped"])
    assert reasons[str(root / "sarma" / "again")] == f"symlink loop: it leads back to {root}"
    # burek/up is a new folder (elsewhere/), whose burek/ is the folder being walked: the loop closes there
    assert reasons[str(root / "burek" / "up" / "burek")] == f"symlink loop: it leads back to {root / 'burek'}"
    assert "already imported" in reasons[str(root / "burek-copy")]
