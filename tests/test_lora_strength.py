"""A LoRA comes out of dishgen at the strength it was trained with.

dishgen's images equal plain diffusers' from the same folder or file: for ``lora_alpha != lora_rank``,
UNet and text encoder(s), SD 1.5 and SDXL, several stacked LoRAs with scales; and a run's
prediction type reaches generation. (diffusers restores ``lora_alpha`` from the file's metadata
only when it reads the file itself; handed a state dict, it would scale by 1 instead of alpha/rank.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dishgen.diffusion import load_generator
from dishgen.train.lora import resolve_train_config, train

RANK = 4
PROMPT = "sarma in a clay pot"
ARGS = {"num_inference_steps": 2, "height": 64, "width": 64}


def train_run(base, data, out, *overrides):
    """A 2-step UNet + text-encoder LoRA with large steps, so that alpha/rank shows in the pixels."""
    config = resolve_train_config(out, base=str(base), overrides=[
        "resolution=64", "batch_size=4", f"lora_rank={RANK}", "max_steps=2", "learning_rate=3e-2",
        "text_encoder_lr=3e-2", "train_text_encoder=true", "sample_every=0", "checkpoint_every=0", *overrides])
    return train(config, data, out, device="cpu")


def as_array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def lora_scalings(model) -> set[float]:
    """Every ``scaling`` (alpha / rank x adapter weight) of the peft LoRA layers in ``model``."""
    return {s for m in model.modules() if hasattr(m, "lora_A") for s in m.scaling.values()}


@pytest.fixture(scope="module")
def runs(tiny_sd_dir, tiny_dataset_64, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_strength")
    return {alpha: train_run(tiny_sd_dir, tiny_dataset_64, root / f"alpha{alpha}", f"lora_alpha={alpha}")
            for alpha in (1, 8)}


@pytest.mark.parametrize("alpha", [1, 8])
def test_cli_generates_what_plain_diffusers_generates_from_the_run(runs, tiny_sd_dir, alpha, tmp_path):
    from click.testing import CliRunner
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from dishgen.cli import cli

    run = runs[alpha]
    result = CliRunner().invoke(cli, ["generate", PROMPT, "--model", str(run), "--steps", "2", "--height", "64",
                                      "--width", "64", "--seed", "0", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (png,) = sorted((tmp_path / "out").glob("*.png"))
    ours = as_array(Image.open(png).convert("RGB"))

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)  # the base's own scheduler, as dishgen's default
    pipe.set_progress_bar_config(disable=True)
    base = as_array(pipe(PROMPT, generator=torch.Generator().manual_seed(0), **ARGS).images[0])
    pipe.load_lora_weights(run)
    plain = as_array(pipe(PROMPT, generator=torch.Generator().manual_seed(0), **ARGS).images[0])
    assert np.abs(plain - base).mean() > 1.0  # the LoRA shows in the pixels ...
    assert np.array_equal(ours, plain)  # ... exactly as diffusers applies it


@pytest.mark.parametrize("alpha", [1, 8])
def test_the_python_api_applies_alpha_over_rank_to_unet_and_text_encoder(runs, alpha):
    generator = load_generator(str(runs[alpha]))
    assert lora_scalings(generator.pipe.unet) == {alpha / RANK}
    assert lora_scalings(generator.pipe.text_encoder) == {alpha / RANK}
    halved = load_generator(str(runs[alpha]), lora_scale=0.5)  # a run's own scale multiplies it
    assert lora_scalings(halved.pipe.unet) == {0.5 * alpha / RANK}


def test_stacked_loras_with_scales_match_plain_diffusers(runs, tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    ours = load_generator(str(runs[1]), lora=[runs[8] / "pytorch_lora_weights.safetensors"], lora_scale=[0.6])
    pictures = ours.generate([PROMPT, "ćevapi"], seed=3, **ARGS)

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(runs[1], adapter_name="a")
    pipe.load_lora_weights(runs[8], adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[1.0, 0.6])
    plain = pipe([PROMPT, "ćevapi"], generator=[torch.Generator().manual_seed(s) for s in (3, 4)], **ARGS).images
    assert np.array_equal(np.stack([as_array(p) for p in pictures]), np.stack([as_array(p) for p in plain]))


def write_sdxl_lora(sdxl_dir, folder, alpha: float, seed: int):
    """A rank-4 LoRA on the UNet and both text encoders, saved as diffusers' trainers save it."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_dir)
    pipe.unet.add_adapter(LoraConfig(r=RANK, lora_alpha=alpha, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=alpha, target_modules=["q_proj", "v_proj"]), encoder)
    torch.manual_seed(seed)
    layers, metadata = {}, {}
    for name, model in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder), ("text_encoder_2", pipe.text_encoder_2)):
        for key, param in model.named_parameters():
            if "lora_B" in key:
                param.data.normal_(0, 0.5)  # a trained-looking LoRA (B starts at zero)
        layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
        metadata[f"{name}_lora_adapter_metadata"] = model.peft_config["default"].to_dict()
    StableDiffusionXLPipeline.save_lora_weights(folder, safe_serialization=True, **layers, **metadata)
    return folder / "pytorch_lora_weights.safetensors"


def test_sdxl_loras_load_at_their_strength(tiny_sdxl_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    low = write_sdxl_lora(tiny_sdxl_dir, tmp_path / "low", alpha=1, seed=1)
    high = write_sdxl_lora(tiny_sdxl_dir, tmp_path / "high", alpha=8, seed=2)
    ours = load_generator(tiny_sdxl_dir, lora=[low.parent, high], lora_scale=[1.0, 0.5])
    for model in (ours.pipe.unet, ours.pipe.text_encoder, ours.pipe.text_encoder_2):
        assert lora_scalings(model) == {1 / RANK, 0.5 * 8 / RANK}
    pictures = ours.generate([PROMPT], seed=0, guidance_scale=5.0, **ARGS)

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    pipe.set_progress_bar_config(disable=True)
    base = as_array(pipe(PROMPT, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), **ARGS).images[0])
    pipe.load_lora_weights(low.parent, adapter_name="low")
    pipe.load_lora_weights(high.parent, adapter_name="high")
    pipe.set_adapters(["low", "high"], adapter_weights=[1.0, 0.5])
    plain = as_array(pipe(PROMPT, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), **ARGS).images[0])
    assert np.abs(plain - base).mean() > 1.0
    assert np.array_equal(as_array(pictures[0]), plain)


def test_a_runs_prediction_type_reaches_generation(tiny_sd_dir, tiny_dataset_64, tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    run = train_run(tiny_sd_dir, tiny_dataset_64, tmp_path / "run", "prediction_type=v_prediction",
                    "train_text_encoder=false", "checkpoint_every=1")
    assert StableDiffusionPipeline.from_pretrained(tiny_sd_dir).scheduler.config.prediction_type == "epsilon"
    for reference in (run, run / "checkpoint-1"):
        assert load_generator(str(reference)).pipe.scheduler.config.prediction_type == "v_prediction"
    ours = load_generator(str(run), scheduler="ddim")  # a --scheduler keeps it
    assert ours.pipe.scheduler.config.prediction_type == "v_prediction"
    # what the model card tells plain-diffusers users to do gives the same picture
    card = (run / "README.md").read_text()
    assert 'from_config(pipe.scheduler.config, prediction_type="v_prediction")' in card
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    pipe.load_lora_weights(run)
    plain = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **ARGS).images[0]
    assert np.array_equal(as_array(ours.generate([PROMPT], seed=0, **ARGS)[0]), as_array(plain))
    assert json.loads((run / "config.json").read_text())["prediction_type"] == "v_prediction"
