"""The SD 1.5 part of the LoRA bench (bench/bench_lora.py --sd15): its timed "cached" steps are cache
hits (a warm-up of one epoch over few images, dishgen's random_flip off), and the bench says when a
warm-up is too short. No timing is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import write_tiny_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _common  # noqa: E402
import bench_lora as bench  # noqa: E402


def test_warmup_warning_only_when_the_warmup_misses_images():
    assert _common.warmup_warning(1, 1, 1) is None
    assert _common.warmup_warning(2, 2, 4) is None
    assert _common.warmup_warning(1, 2, 4) == ("warning: 1 warm-up steps of batch 2 do not meet all 4 images: "
                                               "the cached variant's timed steps will include cache misses")


def test_sd15_cached_steps_after_the_warmup_do_not_run_the_vae(tiny_sd_dir, tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    encoded = []
    real_encode = AutoencoderKL.encode

    def counting_encode(self, *args, **kwargs):
        encoded.append(args[0].shape[0])
        return real_encode(self, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting_encode)
    data = _common.keep_first_images(write_tiny_dataset(tmp_path / "data", size=32), 2)
    overrides = ["resolution=32", "batch_size=2", *bench.SD15_OURS_OVERRIDES]
    seconds = bench.dishgen_steps(tiny_sd_dir, data, tmp_path / "run", steps=2, warmup=1, overrides=overrides)

    assert len(seconds) == 2
    # one encode per training image, so all in the warm-up step: with random flips (the bench's old
    # setting) the timed steps meet (image, flip) pairs not seen yet and run the VAE again
    assert encoded == [1, 1]
