"""One unreadable image in a dataset never stops training: every family skips it, says why in
RUN/skipped-images.jsonl and trains on the rest; a dataset with no readable image is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dishgen.config import resolve_config
from dishgen.data.dataset import DatasetError, load_split
from dishgen.images_tensor import decode_each, load_images_uint8_skipping

GAN = dict(resolution=32, z_dim=16, cond_dim=16, batch_size=4, max_steps=2, checkpoint_every=2, sample_every=2,
           log_every=1, keep_checkpoints=0, sample_per_prompt=1)
CVAE = dict(base_channels=8, max_channels=32, z_dim=16, cond_dim=32, batch_size=8, max_steps=2, checkpoint_every=2,
            sample_every=2, log_every=1, samples_per_prompt=1, num_recon_images=2, lr_warmup_steps=1,
            text_encoder="lstm", lstm_embed_dim=16, lstm_hidden_dim=16, lstm_out_dim=16)


def damaged(dataset: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of ``dataset`` with one truncated, one missing and one non-image train file."""
    copy = tmp_path / "damaged"
    shutil.copytree(dataset, copy)
    rows = load_split(copy, "train")
    truncated, missing, text = rows[1].path, rows[4].path, rows[7].path
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    missing.unlink()
    text.write_text("not an image")
    return copy, [str(p) for p in (truncated, missing, text)]


def skipped_record(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "skipped-images.jsonl").read_text().splitlines()]


def test_decode_each_keeps_going_and_says_why(tiny_dataset, tmp_path):
    data, bad = damaged(tiny_dataset, tmp_path)
    paths = [r.path for r in load_split(data, "train", require_files=False)]
    images, kept, skipped = load_images_uint8_skipping(paths, 16)
    assert [s["path"] for s in skipped] == bad and [s["index"] for s in skipped] == [1, 4, 7]
    assert images.shape == (len(paths) - 3, 3, 16, 16) and kept == [i for i in range(len(paths)) if i not in (1, 4, 7)]
    reasons = [s["reason"] for s in skipped]
    assert "truncated" in reasons[0] and reasons[1].startswith("FileNotFoundError") and "cannot identify" in reasons[2]
    assert decode_each([], len) == ([], [])


@pytest.mark.parametrize("family", ["cgan", "fastgan"])
def test_gans_train_past_unreadable_images(family, tiny_dataset, tmp_path, caplog):
    import importlib

    trainer = importlib.import_module(f"dishgen.train.{family}")
    config_class = trainer.CGANTrainConfig if family == "cgan" else trainer.FastGANTrainConfig
    widths = dict(base_channels=8, max_channel_mult=4) if family == "cgan" else dict(
        g_channels=8, d_channels=8, max_channels=32, decoder_channels=16)
    data, bad = damaged(tiny_dataset, tmp_path)
    run = tmp_path / "run"
    trainer.train(resolve_config(config_class, overrides={**GAN, **widths}), data, run)
    assert (run / "model" / "model.safetensors").is_file()
    assert [s["path"] for s in skipped_record(run)] == bad
    assert "3 of" in caplog.text and "skipped-images.jsonl" in caplog.text


def test_cvae_trains_past_unreadable_images(tiny_dataset_64, tmp_path):
    from dishgen.train.cvae import CVAETrainConfig, train

    data, bad = damaged(tiny_dataset_64, tmp_path)
    test_row = load_split(data, "test")[0].path  # the damage is in train
    test_row.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    run = tmp_path / "run"
    train(resolve_config(CVAETrainConfig, overrides=CVAE), data, run)
    assert (run / "model" / "model.safetensors").is_file()
    record = skipped_record(run)
    assert [(s["split"], s["path"]) for s in record] == [("train", p) for p in bad] + [("test", str(test_row))]


def test_lora_trains_past_unreadable_images(tiny_sd_dir, tiny_dataset_64, tmp_path):
    from dishgen.train.lora import resolve_train_config, train

    data, bad = damaged(tiny_dataset_64, tmp_path)
    out = tmp_path / "run"
    config = resolve_train_config(out, base=str(tiny_sd_dir), overrides=[
        "resolution=64", "batch_size=2", "lora_rank=4", "max_steps=1", "validation_steps=1", "checkpoint_every=1",
        "keep_checkpoints=0", "validation_prompts=[\"sarma\"]"])
    train(config, data, out, device="cpu")
    assert [s["path"] for s in skipped_record(out)] == bad


def test_a_dataset_with_no_readable_image_is_refused(tiny_dataset, tmp_path):
    from dishgen.train.fastgan import FastGANTrainConfig, train

    data = tmp_path / "unreadable"
    shutil.copytree(tiny_dataset, data)
    for row in load_split(data, "train"):
        row.path.write_text("not an image")
    config = resolve_config(FastGANTrainConfig, overrides={**GAN, "g_channels": 8, "d_channels": 8,
                                                           "max_channels": 32, "decoder_channels": 16})
    with pytest.raises(DatasetError, match="none of the .* training images could be read .*cannot identify"):
        train(config, data, tmp_path / "run")


def test_non_square_images_are_centre_cropped_not_squashed(tmp_path, caplog):
    from PIL import Image

    wide = tmp_path / "wide.png"  # left third red, middle third green, right third blue
    canvas = Image.new("RGB", (96, 32))
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        canvas.paste(Image.new("RGB", (32, 32), colour), (32 * i, 0))
    canvas.save(wide)
    square = tmp_path / "square.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(square)
    images, kept, skipped = load_images_uint8_skipping([wide, square], 16)
    assert kept == [0, 1] and not skipped
    assert images[0, :, :, 2:-2].tolist() == images[0, :, :1, :1].expand(3, 16, 12).tolist()  # all green
    assert images[0, :, 0, 0].tolist() == [0, 255, 0] and images[1, :, 0, 0].tolist() == [10, 20, 30]
    assert "1 of 2 images are not square (e.g. " in caplog.text and "wide.png" in caplog.text
