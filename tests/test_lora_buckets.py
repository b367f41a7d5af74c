"""Aspect-ratio buckets: sizes, assignment, batching from one bucket, `data build --crop keep`, and
LoRA training (SD 1.5 and SDXL) on photos that are not square."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from dishgen.data.dataset import DatasetError
from dishgen.diffusion import LORA_WEIGHTS_NAME
from dishgen.train.lora import resolve_train_config, train
from dishgen.train.lora_data import assign_bucket, bucket_batch_indices, bucket_sizes

TINY = ["resolution=64", "batch_size=4", "lora_rank=4", "learning_rate=5e-3", "sample_every=0",
        "checkpoint_every=0", "keep_checkpoints=0", "aspect_buckets=true", "bucket_step=16"]


def test_bucket_sizes_hold_about_the_same_pixels_and_a_2_to_1_photo_stays_wide():
    buckets = bucket_sizes(1024, 64, 2.0)
    assert (1024, 1024) in buckets
    assert all(h % 64 == 0 and w % 64 == 0 and h * w <= 1024 * 1024 for h, w in buckets)
    assert all(h * w >= 0.85 * 1024 * 1024 for h, w in buckets)  # about the same pixel count
    assert all(max(h, w) / min(h, w) <= 2.0 for h, w in buckets)
    assert assign_bucket((600, 1200), buckets) == (704, 1408)  # 2:1 photo -> the 2:1 bucket
    assert assign_bucket((1200, 600), buckets) == (1408, 704)
    assert assign_bucket((800, 800), buckets) == (1024, 1024)
    assert bucket_sizes(64, 16, 2.0) == [(48, 80), (64, 64), (80, 48)]


def test_bucket_batches_share_one_bucket_cover_the_epoch_and_split_across_ranks():
    buckets_of = [0] * 9 + [1] * 8 + [2] * 3  # bucket 2 cannot fill a batch of 4
    per_epoch = 9 // 4 + 8 // 4
    seen = []
    for step in range(per_epoch):
        indices, epoch = bucket_batch_indices(buckets_of, 4, step, 0, 1, seed=3)
        assert epoch == 0 and len(indices) == 4 and len({buckets_of[i] for i in indices}) == 1
        seen += indices
    assert len(set(seen)) == 16 and not {17, 18, 19} & set(seen)
    assert bucket_batch_indices(buckets_of, 4, per_epoch, 0, 1, seed=3)[1] == 1  # next epoch
    # two ranks: the same bucket at each step, disjoint halves, and the pure function repeats
    for step in range(4):
        a, _ = bucket_batch_indices(buckets_of, 2, step, 0, 2, seed=1)
        b, _ = bucket_batch_indices(buckets_of, 2, step, 1, 2, seed=1)
        assert {buckets_of[i] for i in a + b} == {buckets_of[a[0]]} and not set(a) & set(b)
        assert bucket_batch_indices(buckets_of, 2, step, 0, 2, seed=1) == (a, 0)
    with pytest.raises(DatasetError, match="no aspect-ratio bucket holds a whole batch.*aspect_buckets=false"):
        bucket_batch_indices([0, 1, 2], 2, 0, 0, 1, seed=0)


def test_data_build_keep_keeps_the_aspect_ratio_and_default_stays_square(tmp_path: Path, sample_images: Path):
    from dishgen.data.build import BuildOptions, build_dataset
    from dishgen.data.dataset import load_split
    from dishgen.data.importer import import_photo_folder

    photos = tmp_path / "photos" / "sarma"
    photos.mkdir(parents=True)
    for i, path in enumerate(sorted((sample_images / "SARMALE (PORK MEAT)").glob("*.jpg"))[:2]):
        with Image.open(path) as im:  # a real photo, made 2:1 (wide) or 1:2 (tall)
            w, h = im.size
            (im.crop((0, h // 4, w, h // 4 + h // 2)) if i == 0 else im.crop((w // 4, 0, w // 4 + w // 2, h))
             ).save(photos / f"{i}.jpg")
    raw = tmp_path / "raw"
    import_photo_folder(tmp_path / "photos", raw)
    kept = build_dataset([raw], tmp_path / "keep", BuildOptions(size=64, min_size=32, crop="keep", workers=1,
                                                               test_fraction=0))
    assert kept["options"]["crop"] == "keep"
    sizes = sorted(Image.open(r.path).size for r in load_split(tmp_path / "keep", "train"))
    assert sizes == [(64, 128), (128, 64)]  # shorter side = size, aspect kept
    build_dataset([raw], tmp_path / "square", BuildOptions(size=64, min_size=32, workers=1, test_fraction=0))
    assert {Image.open(r.path).size for r in load_split(tmp_path / "square", "train")} == {(64, 64)}


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory, sample_images):
    """8 wide (2:1), 8 square and 8 tall (1:2) crops of the real sample photos, shorter side 64."""
    root = tmp_path_factory.mktemp("mixed") / "ds"
    (root / "train").mkdir(parents=True)
    rows = []
    photos = sorted(sample_images.rglob("*.jpg"))[:24]
    for i, path in enumerate(photos):
        with Image.open(path) as im:
            im = im.convert("RGB").resize((128, 128))
            shape = ("wide", "square", "tall")[i % 3]
            box = {"wide": (0, 32, 128, 96), "square": (0, 0, 128, 128), "tall": (32, 0, 96, 128)}[shape]
            cropped = im.crop(box) if shape != "square" else im.resize((64, 64))
            name = f"{i}-{shape}.png"
            cropped.save(root / "train" / name)
        rows.append({"file_name": name, "text": f"a {shape} photo of {path.parent.name.lower()}"})
    (root / "train" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_lora_trains_on_buckets_without_cropping_to_squares(family, mixed_dataset, tiny_sd_dir, tiny_sdxl_dir,
                                                           tmp_path, monkeypatch):
    from dishgen.train import lora_data

    base = tiny_sd_dir if family == "sd" else tiny_sdxl_dir
    shapes, time_ids = [], []
    real = lora_data.latent_sampler

    def spy(*args, **kwargs):
        sample = real(*args, **kwargs)

        def wrapped(indices):
            latents, ids = sample(indices)
            shapes.append(tuple(latents.shape[2:]))
            time_ids.append(ids)
            return latents, ids
        return wrapped

    monkeypatch.setattr("dishgen.train.lora.latent_sampler", spy)
    out = tmp_path / "run"
    config = resolve_train_config(out, base=str(base), overrides=[*TINY, "max_steps=6", "random_flip=false"])
    train(config, mixed_dataset, out, device="cpu")
    # wide photos train at 80x48 (not a 64x64 centre crop), tall at 48x80; one shape per batch
    assert set(shapes) <= {(6, 10), (8, 8), (10, 6)} and len(set(shapes)) >= 2
    ids = torch.cat(time_ids)
    wide = ids[ids[:, 5] == 80]
    assert len(wide) and (wide[:, :2] == torch.tensor([64.0, 128.0])).all()  # original (h, w) of a 2:1 photo
    # 128x64 is resized to 96x48 to cover 80x48, then centre-cropped at left = 8; target (48, 80)
    assert (wide[:, 2:] == torch.tensor([0.0, 8.0, 48.0, 80.0])).all()
    assert (out / LORA_WEIGHTS_NAME).is_file()
