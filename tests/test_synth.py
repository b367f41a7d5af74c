"""Synthetic data: template variations, augment (resume, failures), mix (shares, dishes, dups)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dishgen.data.dataset import load_split
from dishgen.data.split import dish_key
from dishgen.data.synth import (
    MAX_WORDS,
    AugmentOptions,
    MixOptions,
    SynthError,
    TemplateVariator,
    VariationInput,
    augment_dataset,
    content_hash,
    mix_datasets,
    validate_variation,
)
from dishgen.fileio import read_jsonl


class FakeGenerator:
    """Follows the Generator protocol: one noise image per (prompt, seed + index), prompt-major."""

    family = "fake"
    knobs = ("batch_size",)

    def __init__(self, fail_on_call: int | None = None, side: int = 16):
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call
        self.side = side

    def generate(self, prompts, num_images=1, seed=None, **knobs):
        assert set(knobs) <= set(self.knobs)
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt  # stands for a kill in the middle of a run
        self.calls.append(list(prompts))
        images = []
        for i, prompt in enumerate(prompts):
            for j in range(num_images):
                key = hashlib.sha256(f"{prompt}|{seed + i * num_images + j}".encode()).digest()
                rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
                images.append(
                    Image.fromarray(rng.integers(0, 256, (self.side, self.side, 3), dtype=np.uint8))
                )
        return images


def rows_of(dataset: Path, split: str) -> list[dict]:
    return read_jsonl(dataset / split / "metadata.jsonl")


# -- variations ---------------------------------------------------------------------------------


def test_template_variations_are_distinct_valid_deterministic_and_name_the_dish():
    item = VariationInput(
        "A photo of sarma, served on a white plate.", "Sarma", key="train/sarma_0.png"
    )
    first = TemplateVariator(seed=0).vary(item, 5)
    assert first.error is None and len(first.texts) == 5 and len(set(first.texts)) == 5
    for text in first.texts:
        assert 2 <= len(text.split()) <= MAX_WORDS
        assert text.lower().startswith("sarma, cabbage rolls")
        assert text != item.caption
    assert TemplateVariator(seed=0).vary(item, 5).texts == first.texts
    assert TemplateVariator(seed=1).vary(item, 5).texts != first.texts
    other_photo = VariationInput(item.caption, item.dish, key="train/sarma_1.png")
    assert TemplateVariator(seed=0).vary(other_photo, 5).texts != first.texts
    # A long dish description still fits in 25 words: details are dropped, not the dish.
    long_dish = VariationInput("x", "karađorđeva šnicla sa pomfritom i tartar sosom", key="k")
    assert all(len(t.split()) <= MAX_WORDS for t in TemplateVariator().vary(long_dish, 3).texts)
    shouted = VariationInput("x", "7 DAY's CROISSANT WITH OREO CREAM FILLING", key="k")
    assert TemplateVariator().vary(shouted, 1).texts[0].startswith("7 day's croissant with oreo")


def test_validate_variation_cleans_and_rejects():
    assert validate_variation("1. Ćevapi on a wooden board, from above", "ćevapi")[0] == (
        "Ćevapi on a wooden board, from above"
    )
    assert (
        validate_variation('"Cevapi with onions in a tavern."', "Ćevapi")[0]
        == "Cevapi with onions in a tavern."
    )
    assert "words" in validate_variation("Sarma", "sarma")[1]
    assert "words" in validate_variation("sarma " * 26, "sarma")[1]
    assert "does not name the dish" in validate_variation("A pizza on a wooden board", "sarma")[1]
    assert (
        "same as the source" in validate_variation("Sarma in a pot.", "sarma", "sarma in a pot")[1]
    )
    # The English description counts as naming the dish.
    assert validate_variation("Cabbage rolls in a clay pot, seen from above", "sarma")[0]


# -- augment ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory, tiny_dataset) -> Path:
    """The tiny dataset's train split: 3 template variations per photo, by a fake generator."""
    out = tmp_path_factory.mktemp("synth") / "synth"
    augment_dataset(
        tiny_dataset, out, AugmentOptions(variations=3, seed=0), generator=FakeGenerator()
    )
    return out


def test_augment_writes_a_standard_dataset_of_train_variations(synth, tiny_dataset):
    source = load_split(tiny_dataset, "train")
    rows = rows_of(synth, "train")
    assert not (synth / "test").exists() and not (synth.parent / "synth.partial").exists()
    assert len(rows) == 3 * len(source) == len(load_split(synth, "train"))
    assert len({r["file_name"] for r in rows}) == len(rows)
    source_by_name = {f"train/{r.path.name}": r for r in source}
    for r in rows:
        assert r["synthetic"] is True and r["source"] == "synthetic"
        origin = source_by_name[r["source_image"]]  # a training photo, never a test one
        assert r["source_caption"] == origin.text and r["dish"] == origin.dish
        assert r["generator"] == "fake:FakeGenerator" and r["captioner"] == "template"
        settings = json.loads(r["generator_settings"])
        assert settings["family"] == "fake" and settings["variation"] in (0, 1, 2)
        with Image.open(synth / "train" / r["file_name"]) as im:
            assert im.size == (32, 32)  # resized to the source images' size
    summary = json.loads((synth / "dataset.json").read_text())
    assert summary["counts"]["train"]["images"] == len(rows) and summary["failures"] == []


def test_augment_resumes_after_an_interruption_without_duplicates(tmp_path, tiny_dataset, synth):
    out = tmp_path / "synth"
    options = AugmentOptions(variations=3, seed=0, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        augment_dataset(tiny_dataset, out, options, generator=FakeGenerator(fail_on_call=4))
    work = tmp_path / "synth.partial"
    assert not out.exists() and len(read_jsonl(work / "_rows.jsonl")) == 4 * 8
    with open(work / "_rows.jsonl", "a") as f:
        f.write('{"file_name": "torn')  # a writer killed in the middle of a line
    (work / "images" / "train" / read_jsonl(work / "_rows.jsonl")[-1]["file_name"]).unlink()

    second = FakeGenerator()
    augment_dataset(tiny_dataset, out, options, generator=second)
    total = 3 * len(load_split(tiny_dataset, "train"))
    # Only the unfinished batches are rendered again: the fourth (one image lost) and the rest.
    assert sum(len(c) for c in second.calls) == total - 3 * 8
    resumed, straight = rows_of(out, "train"), rows_of(synth, "train")
    assert [r["file_name"] for r in resumed] == [r["file_name"] for r in straight]
    for a, b in zip(resumed, straight, strict=True):
        assert a["text"] == b["text"]
        assert content_hash(out / "train" / a["file_name"]) == content_hash(
            synth / "train" / b["file_name"]
        )


def test_augment_refuses_to_resume_with_other_settings_and_to_overwrite(
    tmp_path, tiny_dataset, synth
):
    out = tmp_path / "synth"
    with pytest.raises(KeyboardInterrupt):
        augment_dataset(
            tiny_dataset, out, AugmentOptions(seed=0), generator=FakeGenerator(fail_on_call=1)
        )
    with pytest.raises(SynthError, match="other settings.*seed"):
        augment_dataset(tiny_dataset, out, AugmentOptions(seed=1), generator=FakeGenerator())
    with pytest.raises(SynthError, match="already exists"):
        augment_dataset(tiny_dataset, synth, AugmentOptions(), generator=FakeGenerator())


def test_augment_fails_before_any_work_when_the_generator_cannot_load(tmp_path, tiny_dataset):
    from dishgen.generation import ModelReferenceError

    for model in ("default", str(tmp_path / "no-such-run")):  # no bundled model in a fresh tree
        if (
            model == "default"
            and (Path(__file__).parents[1] / "src/dishgen/weights/default.json").exists()
        ):
            continue
        with pytest.raises(ModelReferenceError):
            augment_dataset(tiny_dataset, tmp_path / "out", AugmentOptions(model=model))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    with pytest.raises(TypeError, match="does not take"):  # a knob the family lacks
        augment_dataset(
            tiny_dataset,
            tmp_path / "out",
            AugmentOptions(knobs={"guidance_scale": 7}),
            generator=FakeGenerator(),
        )
    assert not (tmp_path / "out.partial").exists()


# -- mix ----------------------------------------------------------------------------------------


def check_mix(
    out: Path, train_fraction: float | None, val_fraction: float, test_fraction: float
) -> dict:
    """Shares exact within one image, no dish in two splits, every split loadable."""
    summary = json.loads((out / "dataset.json").read_text())
    dishes = {}
    for split, wanted in (
        ("train", train_fraction),
        ("validation", val_fraction),
        ("test", test_fraction),
    ):
        rows = rows_of(out, split)
        assert len(load_split(out, split)) == len(rows)
        synthetic = sum(r["synthetic"] for r in rows)
        counts = summary["counts"][split]
        assert (counts["synthetic"], counts["total"]) == (synthetic, len(rows))
        if wanted is not None:
            assert abs(synthetic - wanted * len(rows)) <= 1, (split, synthetic, len(rows), wanted)
        dishes[split] = {dish_key(r["dish"]) for r in rows}
    assert not dishes["train"] & dishes["validation"]
    assert not dishes["train"] & dishes["test"] and not dishes["validation"] & dishes["test"]
    return summary


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.6])
def test_mix_hits_the_requested_shares_and_keeps_test_real(tmp_path, tiny_dataset, synth, fraction):
    out = tmp_path / "mixed"
    summary = mix_datasets(
        tiny_dataset, synth, out, MixOptions(synthetic_fraction=fraction, val_synthetic=0.5)
    )
    check_mix(out, fraction, 0.5, 0.0)
    assert not any(r["synthetic"] for r in rows_of(out, "test"))
    assert {r["file_name"] for r in rows_of(out, "test")} == {
        r.path.name for r in load_split(tiny_dataset, "test")
    }
    real_train = {r.path.name for r in load_split(tiny_dataset, "train")}
    kept_real = [
        r["file_name"]
        for s in ("train", "validation")
        for r in rows_of(out, s)
        if not r["synthetic"]
    ]
    assert sorted(kept_real) == sorted(real_train)  # every real photo is kept, once
    assert summary["counts"]["validation"]["real"] >= 1


def test_mix_default_takes_all_train_synthetics_and_same_seed_same_validation(
    tmp_path, tiny_dataset, synth
):
    a = mix_datasets(tiny_dataset, synth, tmp_path / "a", MixOptions())
    mix_datasets(tiny_dataset, synth, tmp_path / "b", MixOptions(synthetic_fraction=0.0))
    check_mix(tmp_path / "a", None, 0.5, 0.0)
    val_dishes = {dish_key(r["dish"]) for r in rows_of(tmp_path / "a", "validation")}
    eligible = [r for r in rows_of(synth, "train") if dish_key(r["dish"]) not in val_dishes]
    assert a["counts"]["train"]["synthetic"] == len(eligible)
    # Real-only and mixed datasets share validation and test: models meet the same photos.
    for split in ("validation", "test"):
        assert rows_of(tmp_path / "a", split) == rows_of(tmp_path / "b", split)


def test_mix_loads_with_hugging_face_datasets(tmp_path, tiny_dataset, synth):
    datasets = pytest.importorskip("datasets")
    mix_datasets(tiny_dataset, synth, tmp_path / "mixed", MixOptions(synthetic_fraction=0.5))
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "mixed"))
    assert set(loaded) == {"train", "validation", "test"}
    assert (
        sum(loaded["train"]["synthetic"])
        == json.loads((tmp_path / "mixed" / "dataset.json").read_text())["counts"]["train"][
            "synthetic"
        ]
    )
    assert not any(loaded["test"]["synthetic"]) and loaded["test"][0]["generator"] == ""
    assert len(datasets.load_dataset("imagefolder", data_dir=str(synth))["train"]) == len(
        rows_of(synth, "train")
    )


def test_mix_removes_exact_duplicates_of_real_and_synthetic_images(tmp_path, tiny_dataset, synth):
    copy = tmp_path / "synth"
    shutil.copytree(synth, copy)
    rows = rows_of(copy, "train")
    real = load_split(tiny_dataset, "train")[0]
    # One synthetic image is a real photo saved again (same pixels, other bytes); two are equal.
    with Image.open(real.path) as im:
        im.save(copy / "train" / rows[0]["file_name"], compress_level=0)
    shutil.copy(copy / "train" / rows[2]["file_name"], copy / "train" / rows[1]["file_name"])
    summary = mix_datasets(
        tiny_dataset, copy, tmp_path / "mixed", MixOptions(val_fraction=0.0, val_synthetic=0)
    )
    assert summary["removed_duplicates"]["synthetic"] == 2
    assert {d["of"] for d in summary["duplicates"]} == {"real", "synthetic"}
    hashes = [content_hash(p) for p in (tmp_path / "mixed" / "train").glob("*.png")]
    assert len(hashes) == len(set(hashes)) == summary["counts"]["train"]["total"]
    assert summary["counts"]["train"]["synthetic"] == len(rows) - 2


def test_mix_fails_clearly_when_a_share_cannot_be_met(tmp_path, tiny_dataset, synth):
    with pytest.raises(SynthError, match=r"needs \d+ synthetic images.*at most 0\.7"):
        mix_datasets(tiny_dataset, synth, tmp_path / "m1", MixOptions(synthetic_fraction=0.9))
    with pytest.raises(SynthError, match="augment the test split"):
        mix_datasets(tiny_dataset, synth, tmp_path / "m2", MixOptions(test_synthetic=0.2))
    with pytest.raises(SynthError, match=r"in \[0, 1\]"):
        mix_datasets(tiny_dataset, synth, tmp_path / "m3", MixOptions(val_synthetic=1.5))
    assert not any(tmp_path.iterdir())


def test_mix_with_an_augmented_test_split_puts_its_synthetics_only_in_test(tmp_path, tiny_dataset):
    synth = tmp_path / "synth"
    augment_dataset(
        tiny_dataset,
        synth,
        AugmentOptions(variations=2, splits=["train", "test"]),
        generator=FakeGenerator(),
    )
    assert len(rows_of(synth, "test")) == 2 * len(load_split(tiny_dataset, "test"))
    out = tmp_path / "mixed"
    mix_datasets(tiny_dataset, synth, out, MixOptions(synthetic_fraction=0.5, test_synthetic=0.4))
    check_mix(out, 0.5, 0.5, 0.4)
    test_sources = {r["source_image"] for r in rows_of(synth, "test")}
    for split in ("train", "validation"):
        assert not {r["source_image"] for r in rows_of(out, split)} & test_sources
    # Even labelled with a training dish, an image made from a test photo stays out of train.
    meta = synth / "test" / "metadata.jsonl"
    train_dish = rows_of(synth, "train")[0]["dish"]
    relabelled = [r | {"dish": train_dish} for r in rows_of(synth, "test")]
    meta.write_text("".join(json.dumps(r) + "\n" for r in relabelled))
    summary = mix_datasets(tiny_dataset, synth, tmp_path / "relabelled", MixOptions(val_fraction=0))
    assert summary["left_out"]["synthetic_fitting_no_split"] == len(rows_of(synth, "test"))
    assert not {r["source_image"] for r in rows_of(tmp_path / "relabelled", "train")} & test_sources
