"""The SDXL bench's dataset trim (bench/bench_lora_sdxl.py): few enough training images that a short
warm-up fills dishgen's caches before the timed steps. No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_lora_sdxl as bench  # noqa: E402


def test_keep_first_images_trims_the_train_split_rows_and_files(tmp_path):
    from datasets import load_dataset

    data = write_tiny_dataset(tmp_path / "data", size=16)
    rows = (data / "train" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    tests_before = sorted(p.name for p in (data / "test").iterdir())
    assert len(rows) > 2

    bench.keep_first_images(data, 2)

    kept = [json.loads(row) for row in (data / "train" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert kept == [json.loads(row) for row in rows[:2]]
    assert sorted(p.name for p in (data / "train").iterdir()) == sorted([*(r["file_name"] for r in kept),
                                                                         "metadata.jsonl"])
    assert sorted(p.name for p in (data / "test").iterdir()) == tests_before
    # what the plain diffusers step reads (a datasets imagefolder) sees the two images with their captions
    train = load_dataset("imagefolder", data_dir=str(data))["train"]
    assert sorted(train["text"]) == sorted(r["text"] for r in kept)


@pytest.mark.parametrize("count", [0, 10_000])
def test_keep_first_images_names_the_bad_count(tmp_path, count):
    data = write_tiny_dataset(tmp_path / "data", size=16)
    with pytest.raises(SystemExit, match=rf"--images {count}: the sample has \d+ training images; pick 1 to \d+"):
        bench.keep_first_images(data, count)
