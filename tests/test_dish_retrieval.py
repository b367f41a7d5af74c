"""Dish retrieval, the backbone-free caption-fidelity signal, on the real photo sample."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner
from test_evaluate_harness import fake_models  # noqa: F401  (fixture)

from dishgen.cli import cli
from dishgen.evaluate import EvaluationConfig, evaluate
from dishgen.evaluate import metrics as M
from dishgen.evaluate import pixels as P
from dishgen.evaluate.imagesets import ImageSet
from dishgen.evaluate.scoring import (
    DishIndex,
    colour_descriptors,
    dish_retrieval,
    dish_retrieval_reference,
)


@pytest.fixture(scope="module")
def held_out(sample_images):
    """The sample (16 dishes, 2-3 photos each) split like a generation: each dish's first photo is a
    query "generated for" its caption, the other photos make the dish prototypes."""
    paths = sorted(sample_images.rglob("*.jpg"))
    dishes = [p.parent.name.lower() for p in paths]
    captions = [f"a photo of {d} on a white background" for d in dishes]
    first = sorted({d: i for i, d in reversed(list(enumerate(dishes)))}.values())
    rest = [i for i in range(len(paths)) if i not in first]
    index = DishIndex.build(ImageSet("reference photos", [paths[i] for i in rest], [captions[i] for i in rest]),
                            [dishes[i] for i in rest])
    queries = ImageSet("queries", [paths[i] for i in first], [captions[i] for i in first])
    labels = index.labels_for_captions(queries.captions, len(queries))
    return index, colour_descriptors(queries), labels


def test_real_photos_find_their_dish_far_above_chance(held_out):
    index, descriptors, labels = held_out
    assert len(index.names) == 16 and labels.tolist() == list(range(16))  # every caption found its dish
    result = dish_retrieval(index, descriptors, labels, bootstrap=50)
    assert result["dishes"] == 16 and result["n"] == 16 and result["skipped_images"] == 0
    assert result["chance"] == {"top1": 1 / 16, "top5": 5 / 16, "mean_rank": 7.5}
    assert result["value"] >= 0.6 > 5 * result["chance"]["top1"]  # 0.75 on this sample
    assert result["top5"]["value"] >= 0.9 and result["mean_rank"]["value"] < 1.5
    low, high = result["ci"]
    assert low <= result["value"] <= high


def test_shuffled_captions_fall_to_chance(held_out):
    index, descriptors, labels = held_out
    true = dish_retrieval(index, descriptors, labels, bootstrap=0)
    top1, mean_rank = [], []
    for shift in range(1, 16):  # every query gets every other dish's caption once
        shuffled = dish_retrieval(index, descriptors, torch.roll(labels, shift), bootstrap=0)
        top1.append(shuffled["value"])
        mean_rank.append(shuffled["mean_rank"]["value"])
    assert sum(top1) / 15 < 1 / 16 < true["value"] / 5
    assert abs(sum(mean_rank) / 15 - 7.5) < 1.0 and min(mean_rank) > 4 * true["mean_rank"]["value"]


@pytest.mark.parametrize("colour", [(150, 100, 60), (60, 160, 60), (200, 40, 40), (128, 128, 128)])
def test_one_flat_colour_for_every_caption_scores_chance(held_out, colour):
    index, _, labels = held_out
    flat = torch.tensor(colour, dtype=torch.uint8).view(1, 3, 1, 1).expand(16, 3, 64, 64).contiguous()
    result = dish_retrieval(index, P.colour_histograms(flat), labels, bootstrap=0)
    # One image per dish, all alike: the dishes' ranks are one ordering, so chance, or a little worse
    # where dishes tie (the 4 dishes with one reference photo have prototypes of the same norm, equally
    # far from a colour none of them has, and ties count against the image).
    assert result["value"] <= 1 / 16 and 7.5 <= result["mean_rank"]["value"] <= 8.5


def test_an_image_without_a_dish_is_a_miss_at_the_worst_rank(held_out):
    index, descriptors, labels = held_out
    blank = P.colour_histograms(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8))
    assert blank.isnan().all()
    ranks = M.retrieval_ranks(torch.cat([blank, descriptors[:2]]), labels[:4], index.prototypes)
    assert ranks[:2].tolist() == [15, 15] and ranks[2:].max() < 15
    result = dish_retrieval(index, torch.cat([blank, descriptors[2:]]), labels, bootstrap=0)
    assert result["images_without_dish"] == 2


def test_colour_histogram_is_a_hellinger_embedding_of_the_dish_only():
    image = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)  # white background: not counted
    image[0, :, :4, :4] = torch.tensor([200, 30, 30]).view(3, 1, 1)  # red
    image[0, :, 4:, 4:] = torch.tensor([30, 200, 30]).view(3, 1, 1)  # green, as much of it
    image[1, :, 2:6, 2:6] = torch.tensor([200, 30, 30]).view(3, 1, 1)  # red only
    h = P.colour_histograms(image)
    assert h.shape == (2, 64) and torch.allclose(h.norm(dim=1), torch.ones(2, dtype=torch.float64))
    red, green = (3 * 4 + 0) * 4 + 0, (0 * 4 + 3) * 4 + 0
    assert h[0, red] == pytest.approx(math.sqrt(0.5)) and h[0, green] == pytest.approx(math.sqrt(0.5))
    hellinger = math.sqrt(1 - math.sqrt(0.5))  # sqrt(1 - sum sqrt(p q)) for (1/2, 1/2) vs (1, 0)
    assert float((h[0] - h[1]).norm()) == pytest.approx(math.sqrt(2) * hellinger)


def test_leave_one_out_equals_prototypes_rebuilt_without_each_photo():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4, 1, 0, 2, 3, 3, -1, 4])
    x[17] = float("nan")  # dish 3 keeps two usable photos... and one without a descriptor
    ranks = M.leave_one_out_ranks(x, labels, 5)
    for i in range(20):
        others = torch.arange(20) != i
        prototypes, counts = M.class_prototypes(x[others], labels[others], 5)
        if labels[i] < 0 or x[i].isnan().any() or counts[labels[i]] == 0:
            assert ranks[i] == -1
        else:
            assert ranks[i] == M.retrieval_ranks(x[i : i + 1], labels[i : i + 1], prototypes)[0]
    assert (ranks >= 0).sum() == 18


def test_retrieval_in_an_offline_evaluation_report(tiny_dataset, tmp_path, fake_models):  # noqa: F811
    copier = fake_models("copier", alpha=1.0)  # copies training photos: other dishes than the captions'
    out = tmp_path / "report"
    report = evaluate(EvaluationConfig(data=tiny_dataset, out=out, models=[str(copier)],
                                       images=[str(tiny_dataset / "test")], bootstrap=20, progress=False,
                                       feature_backbone="none"))
    assert "retrieval" in report["metrics"]
    saved = json.loads((out / "report.json").read_text())
    refs = {r["component"]: r for r in saved["references"]}
    loo = refs["real test photos, leave one out"]["metrics"]["dish_retrieval"]
    assert loo["dishes"] == 3 and loo["n"] == 9 and loo["left_out"] == 0 and loo["value"] > 1 / 3
    rows = {r["component"]: r["metrics"]["dish_retrieval"] for r in saved["results"]}
    # The test photos scored as if generated (their captions matched to the split's rows) find
    # their dish; the copier's photos of training dishes do not beat the real photos.
    assert rows["test"]["n"] == 9 and rows["test"]["skipped_images"] == 0 and rows["test"]["value"] >= 2 / 3
    assert rows["copier"]["n"] == 9 and rows["copier"]["chance"]["top1"] == pytest.approx(1 / 3)
    assert rows["copier"]["value"] < rows["test"]["value"]
    md = (out / "report.md").read_text()
    assert "| dish top-1 ↑ | N |" in md and "## Dish retrieval detail" in md
    test_line = next(line for line in md.split("## Results")[1].splitlines() if line.startswith("| test |"))
    assert f"{rows['test']['value']:.3f} [{rows['test']['ci'][0]:.3f}, {rows['test']['ci'][1]:.3f}]" in test_line
    assert "0.333 / 1.000 / 1.0 | 3 | 9 (0) |" in md  # chance with 3 dishes (top-5 covers all), N (skipped)
    listing = [json.loads(line) for line in (out / "per_image" / "test.jsonl").read_text().splitlines()]
    assert all(r["dish"] in r["text"] and isinstance(r["dish_rank"], int) for r in listing)
    assert sum(r["dish_rank"] == 0 for r in listing) / 9 == pytest.approx(rows["test"]["value"])
    assert (out / "charts" / "metrics.png").is_file()


def test_fewer_than_two_dishes_skips_with_a_note(tiny_dataset, tmp_path):
    data = tmp_path / "one-dish"
    shutil.copytree(tiny_dataset, data)
    meta = data / "test" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    meta.write_text("".join(json.dumps({**r, "dish": "sarma"}) + "\n" for r in rows))
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["evaluate", "--images", str(data / "test"), "--data", str(data), "--out", str(out),
                                      "--metrics", "retrieval", "--feature-backbone", "none", "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    (row,) = report["results"]
    skipped = row["metrics"]["dish_retrieval"]
    assert skipped["value"] is None and "has 1 named dish(es)" in skipped["note"]
    assert skipped["note"] in row["warnings"] and report["references"] == []
    assert "needs at least 2" in (out / "report.md").read_text()
    assert dish_retrieval_reference(DishIndex.build(ImageSet("x", [], []), [])) is None
