"""SDXL LoRA fine-tuning on the tiny local SDXL pipeline: train, reload in plain diffusers, resume,
stack through dishgen, and the size/crop conditioning."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from dishgen.diffusion import LORA_WEIGHTS_NAME
from dishgen.train.lora import resolve_train_config, train

TINY = ["resolution=64", "batch_size=4", "lora_rank=4", "learning_rate=5e-3", "validation_steps=2",
        "validation_prompts=[\"sarma in a clay pot\"]", "keep_checkpoints=0", "validation_guidance_scale=5"]


def run_lora(base, data, out, *overrides, resume=False):
    config = resolve_train_config(out, base=str(base), overrides=[*TINY, *overrides], resume=resume)
    return train(config, data, out, resume=resume, device="cpu")


def lora_modules(model, adapter):
    return {name: m for name, m in model.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A}


@pytest.fixture(scope="module")
def xl_run(tiny_sdxl_dir, tiny_dataset_64, tmp_path_factory):
    """UNet + both text encoders, 4 steps, alpha != rank, checkpoints and samples every 2 steps."""
    out = tmp_path_factory.mktemp("lora_xl") / "run"
    run_lora(tiny_sdxl_dir, tiny_dataset_64, out, "max_steps=4", "checkpoint_every=2", "sample_every=2",
             "train_text_encoder=true", "lora_alpha=8", "text_encoder_lr=1e-3")
    return out


def test_sdxl_run_dir_has_all_three_loras_and_an_sdxl_card(xl_run, tiny_sdxl_dir):
    rows = [json.loads(line) for line in (xl_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)
    state = load_file(str(xl_run / LORA_WEIGHTS_NAME))
    assert {k.split(".")[0] for k in state} == {"unet", "text_encoder", "text_encoder_2"}
    assert (xl_run / "samples" / "step-4.png").is_file()
    card = (xl_run / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert "stable-diffusion-xl" in meta["tags"] and "StableDiffusionXLPipeline.from_pretrained" in card


def test_sdxl_lora_loads_in_plain_diffusers_and_changes_the_output(xl_run, tiny_sdxl_dir):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    pipe.set_progress_bar_config(disable=True)

    def picture():
        return pipe("sarma in a clay pot", num_inference_steps=3, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images[0]

    before = picture()
    pipe.load_lora_weights(xl_run)
    state = load_file(str(xl_run / LORA_WEIGHTS_NAME))
    for prefix, model in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder),
                          ("text_encoder_2", pipe.text_encoder_2)):
        modules = lora_modules(model, "default_0")
        assert len({k for k in state if k.startswith(prefix + ".")}) == 2 * len(modules) > 0
        for module in modules.values():
            assert module.scaling["default_0"] == pytest.approx(8 / 4)  # alpha / rank survives the file
    # the loaded B matrices are the trained ones (non-zero: B starts at zero)
    assert any(m.lora_B["default_0"].weight.abs().sum() > 0 for m in lora_modules(pipe.unet, "default_0").values())
    assert np.abs(picture() - before).mean() > 1e-3


def test_sdxl_resume_is_bit_identical(xl_run, tiny_sdxl_dir, tiny_dataset_64, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(xl_run, copy)
    shutil.rmtree(copy / "checkpoint-4")
    (copy / LORA_WEIGHTS_NAME).unlink()
    run_lora(tiny_sdxl_dir, tiny_dataset_64, copy, resume=True)
    expected, got = load_file(str(xl_run / LORA_WEIGHTS_NAME)), load_file(str(copy / LORA_WEIGHTS_NAME))
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_sdxl_unet_lora_with_caches_generates_and_stacks_through_dishgen(xl_run, tiny_sdxl_dir, tiny_dataset_64,
                                                                         tmp_path):
    from dishgen.generation import load_generator

    out = tmp_path / "run"
    run_lora(tiny_sdxl_dir, tiny_dataset_64, out, "max_steps=2", "sample_every=0", "checkpoint_every=0",
             "snr_gamma=5", "caption_dropout=0.5", "gradient_checkpointing=true")
    assert all(k.startswith("unet.") for k in load_file(str(out / LORA_WEIGHTS_NAME)))
    generator = load_generator(str(out), lora=[xl_run])  # the run's LoRA + another one stacked
    assert generator.family == "lora" and type(generator.pipe).__name__ == "StableDiffusionXLPipeline"
    assert len(generator.pipe.get_list_adapters()["unet"]) == 2
    pictures = generator.generate(["sarma"], num_images=1, seed=1, num_inference_steps=2, height=64, width=64)
    assert pictures[0].size == (64, 64)


def test_sdxl_time_ids_keep_the_original_size_and_mirrored_crop():
    from types import SimpleNamespace

    from dishgen.train.lora_data import latent_sampler, sdxl_time_ids

    assert sdxl_time_ids((300, 600), (0, 10), (64, 64)).tolist() == [300, 600, 0, 10, 64, 64]

    class FakeVae:  # records the pixels it was given; latents are their 8x8 means
        config = SimpleNamespace(scaling_factor=1.0)

        def encode(self, pixels):
            mean = torch.nn.functional.avg_pool2d(pixels, 8).repeat(1, 2, 1, 1)[:, :4]
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, std=torch.zeros_like(mean)))

    wide = torch.zeros(3, 64, 128, dtype=torch.uint8)  # a 2:1 photo, shorter side 64
    for cache in (True, False):
        config = SimpleNamespace(resolution=64, random_flip=False, cache_latents=cache, crop="center")
        sample = latent_sampler(FakeVae(), [wide], config, "cpu", torch.float32, originals=[(600, 1200)])
        latents, time_ids = sample([0])
        assert latents.shape == (1, 4, 8, 8)
        assert time_ids.tolist() == [[600, 1200, 0, 32, 64, 64]]  # centre crop of 128 -> 64 starts at 32
    config = SimpleNamespace(resolution=64, random_flip=True, cache_latents=True, crop="center")
    sample = latent_sampler(FakeVae(), [torch.zeros(3, 64, 100, dtype=torch.uint8)], config, "cpu", torch.float32)
    torch.manual_seed(0)
    seen = {tuple(sample([0])[1][0].tolist()) for _ in range(16)}
    assert seen == {(64, 100, 0, 18, 64, 64)}  # centred: the mirror of left=18 is 100 - 18 - 64 = 18
