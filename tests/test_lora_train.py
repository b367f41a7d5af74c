"""LoRA fine-tuning on the tiny local Stable Diffusion pipeline: train, resume, reload, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from dishgen.config import ConfigError
from dishgen.diffusion import LORA_WEIGHTS_NAME, DiffusionError
from dishgen.train.lora import (
    LoraTrainConfig,
    min_snr_weights,
    offset_noise,
    resolve_train_config,
    train,
)

TINY = ["resolution=64", "batch_size=4", "lora_rank=4", "learning_rate=5e-3", "validation_steps=2",
        "validation_prompts=[\"sarma in a clay pot\"]", "keep_checkpoints=0"]


def run_lora(tiny_sd_dir, data, out, *overrides, resume=False):
    config = resolve_train_config(out, base=str(tiny_sd_dir), overrides=[*TINY, *overrides], resume=resume)
    return train(config, data, out, resume=resume, device="cpu")


def lora_modules(model, adapter):
    """name -> peft LoRA layer holding ``adapter``."""
    return {name: m for name, m in model.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A}


def images(pipe, seed=0):
    out = pipe(["sarma in a clay pot", "ćevapi"], num_inference_steps=3, height=64, width=64, output_type="np",
               generator=[torch.Generator().manual_seed(seed + i) for i in range(2)])
    return out.images


@pytest.fixture(scope="module")
def te_run(tiny_sd_dir, tiny_dataset_64, tmp_path_factory):
    """UNet + text encoder, 4 steps, alpha != rank, a checkpoint every 2 steps and samples."""
    out = tmp_path_factory.mktemp("lora_te") / "run"
    run_lora(tiny_sd_dir, tiny_dataset_64, out, "max_steps=4", "checkpoint_every=2", "sample_every=2",
             "train_text_encoder=true", "lora_alpha=8", "text_encoder_lr=1e-3", "lr_scheduler=cosine",
             "lr_warmup_steps=1")
    return out


def test_run_dir_is_complete_and_documented(te_run, tiny_sd_dir):
    config = json.loads((te_run / "config.json").read_text())
    assert config["family"] == "lora" and config["base"] == str(tiny_sd_dir)
    rows = [json.loads(line) for line in (te_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
    # warm-up then cosine: LR rises from 0 at step 1 to the peak, then decays; separate TE rate
    assert rows[0]["lr_unet"] == pytest.approx(5e-3) and rows[-1]["lr_unet"] < rows[1]["lr_unet"]
    assert rows[0]["lr_text_encoder"] == pytest.approx(1e-3)
    for name in ("loss", "grad_norm", "learning_rate"):
        assert (te_run / "plots" / f"{name}.png").stat().st_size > 1000
    assert (te_run / "samples" / "step-2.png").is_file() and (te_run / "samples" / "step-4.png").is_file()
    card = (te_run / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert "base_model" not in meta and f"`<local>/{tiny_sd_dir.name}`" in card  # a local base: no hub id
    training = json.loads(card.split("## Training configuration")[1].split("```json")[1].split("```")[0])
    assert training["train_text_encoder"] is True and training["lora_alpha"] == 8 and "lora" in meta["tags"]
    assert "![samples](samples/step-4.png)" in card and str(tiny_sd_dir) not in card
    for step in (2, 4):
        checkpoint = te_run / f"checkpoint-{step}"
        assert json.loads((checkpoint / "config.json").read_text())["family"] == "lora"
        assert (checkpoint / LORA_WEIGHTS_NAME).is_file()
        for name in ("optimizer", "scheduler", "rng_state_0"):  # safetensors + JSON, as cgan/cvae
            assert (checkpoint / f"{name}.safetensors").is_file() and (checkpoint / f"{name}.json").is_file()
        # accelerate must not have written the whole UNet: only the LoRA file holds weights
        assert not list(checkpoint.glob("model*.safetensors"))
    final = load_file(str(te_run / LORA_WEIGHTS_NAME))
    last = load_file(str(te_run / "checkpoint-4" / LORA_WEIGHTS_NAME))
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    assert any(k.startswith("text_encoder.") for k in final) and any(k.startswith("unet.") for k in final)
    # nothing in the run directory needs pickle to load (README: "all in safetensors")
    assert not [p for p in te_run.rglob("*") if p.suffix in (".bin", ".pkl", ".pt", ".pth", ".ckpt")]


def test_resume_continues_to_the_same_state(te_run, tiny_sd_dir, tiny_dataset_64, tmp_path):
    # A run killed after checkpoint-2: resuming must end exactly where the uninterrupted run did.
    copy = tmp_path / "run"
    shutil.copytree(te_run, copy)
    shutil.rmtree(copy / "checkpoint-4")
    (copy / LORA_WEIGHTS_NAME).unlink()
    run_lora(tiny_sd_dir, tiny_dataset_64, copy, resume=True)
    expected = load_file(str(te_run / LORA_WEIGHTS_NAME))
    resumed = load_file(str(copy / LORA_WEIGHTS_NAME))
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    rows = [json.loads(line) for line in (copy / "log.jsonl").read_text().splitlines()]
    original = [json.loads(line) for line in (te_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == [r["loss"] for r in original]


def test_resume_with_cached_latents_text_and_accumulation_is_bit_identical(tiny_sd_dir, tiny_dataset_64, tmp_path):
    # UNet only, so captions are cached too; the caches are filled on first use, and on resume the
    # first batches that meet an image differ from the uninterrupted run's. Entries must not depend
    # on their batch (they did by ~6e-8, which then grew through training).
    settings = ["max_steps=6", "checkpoint_every=3", "gradient_accumulation_steps=2", "sample_every=0"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_lora(tiny_sd_dir, tiny_dataset_64, whole, *settings)
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / "checkpoint-6")
    (resumed / LORA_WEIGHTS_NAME).unlink()
    run_lora(tiny_sd_dir, tiny_dataset_64, resumed, resume=True)
    expected, got = load_file(str(whole / LORA_WEIGHTS_NAME)), load_file(str(resumed / LORA_WEIGHTS_NAME))
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    rows = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    original = [json.loads(line) for line in (whole / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in original]


def test_lora_reloads_exactly_in_plain_diffusers(te_run, tiny_sd_dir):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    before = images(pipe)
    pipe.load_lora_weights(te_run)  # reads pytorch_lora_weights.safetensors
    state = load_file(str(te_run / LORA_WEIGHTS_NAME))
    for prefix, model in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
        modules = lora_modules(model, "default_0")
        keys = {k for k in state if k.startswith(prefix + ".")}
        assert len(keys) == 2 * len(modules) > 0
        for name, module in modules.items():
            down = state.get(f"{prefix}.{name}.lora.down.weight", state.get(f"{prefix}.{name}.lora_linear_layer.down.weight"))
            up = state.get(f"{prefix}.{name}.lora.up.weight", state.get(f"{prefix}.{name}.lora_linear_layer.up.weight"))
            assert torch.equal(module.lora_A["default_0"].weight, down)
            assert torch.equal(module.lora_B["default_0"].weight, up)
            assert module.scaling["default_0"] == pytest.approx(8 / 4)  # alpha / rank survives the file
    after = images(pipe)
    assert np.abs(after - before).mean() > 1e-3


def test_unet_only_with_all_objective_options_loads_through_dishgen(tiny_sd_dir, tiny_dataset_64, tmp_path):
    from dishgen.generation import load_generator

    out = tmp_path / "run"
    run_lora(tiny_sd_dir, tiny_dataset_64, out, "max_steps=2", "gradient_accumulation_steps=2",
             "snr_gamma=5", "noise_offset=0.05", "caption_dropout=0.5", "checkpoint_every=1", "keep_checkpoints=1",
             "sample_every=0", "mixed_precision=bf16", "gradient_checkpointing=true", "max_grad_norm=0.01")
    state = load_file(str(out / LORA_WEIGHTS_NAME))
    assert state and all(k.startswith("unet.") for k in state)
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]  # keep-limit
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    # The run dir and its checkpoint are model references (family "lora", base from config.json).
    for reference in (out, out / "checkpoint-2"):
        generator = load_generator(str(reference), scheduler="ddim")
        assert generator.family == "lora"
        pictures = generator.generate(["sarma"], num_images=2, seed=1, num_inference_steps=2, height=64, width=64)
        assert [p.size for p in pictures] == [(64, 64)] * 2


def test_training_lowers_the_loss_on_a_fixed_batch(tiny_sd_dir, tiny_dataset_64, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "run"
    run_lora(tiny_sd_dir, tiny_dataset_64, out, "max_steps=25", "learning_rate=2e-2", "lora_rank=8",
             "lora_alpha=8", "sample_every=0", "checkpoint_every=0", "random_flip=false")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    from PIL import Image

    from dishgen.data.dataset import load_split
    from dishgen.images_tensor import pil_to_tensor

    rows = load_split(tiny_dataset_64, "train")[:8]
    pixels = torch.stack([pil_to_tensor(Image.open(r.path)) for r in rows])
    ids = pipe.tokenizer([r.text for r in rows], padding="max_length", max_length=77, return_tensors="pt").input_ids
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        hidden = pipe.text_encoder(ids)[0]
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, 1000, (len(rows),), generator=gen)
        noisy = pipe.scheduler.add_noise(latents, noise, t)

        def loss():
            return torch.nn.functional.mse_loss(pipe.unet(noisy, t, hidden).sample, noise).item()

        base = loss()
        pipe.load_lora_weights(out)
        tuned = loss()
    assert tuned < base * 0.98


def test_v_prediction_follows_the_base_scheduler(tiny_dataset_64, tmp_path):
    from tiny_models import build_tiny_sd

    base = build_tiny_sd(tmp_path / "vpred", prediction_type="v_prediction")
    out = tmp_path / "run"
    run_lora(base, tiny_dataset_64, out, "max_steps=1", "sample_every=0", "snr_gamma=5")
    card = (out / "README.md").read_text()
    training = json.loads(card.split("## Training configuration")[1].split("```json")[1].split("```")[0])
    assert training["prediction_type"] == "v_prediction"  # as resolved from the base's scheduler
    assert json.loads((out / "checkpoint-1" / "training_state.json").read_text())["prediction_type"] == "v_prediction"


def test_min_snr_weights_and_noise_offset():
    snr = torch.tensor([0.5, 5.0, 50.0])
    assert torch.allclose(min_snr_weights(snr, 5.0, "epsilon"), torch.tensor([1.0, 1.0, 0.1]))
    assert torch.allclose(min_snr_weights(snr, 5.0, "v_prediction"), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))
    noise = torch.zeros(2, 4, 8, 8)
    torch.manual_seed(0)
    shifted = offset_noise(noise, 0.1)
    assert torch.equal(shifted, shifted[:, :, :1, :1].expand_as(shifted))  # constant per (sample, channel)
    assert shifted.abs().max() > 0 and torch.equal(offset_noise(noise, 0.0), noise)


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("resolution=60", "multiple of 8"),
    ("crop=random", "cache_latents=false"),
    ("caption_dropout=1.5", "caption_dropout"),
    ("validation_scheduler=foo", "dpm++"),
    ("lora_rnak=4", "lora_rank"),
])
def test_bad_config_values_name_the_fix(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        resolve_train_config(tmp_path / "run", overrides=[override])


def test_fp16_on_cpu_is_refused(tiny_sd_dir, tiny_dataset_64, tmp_path):
    from dishgen.errors import DishgenError

    with pytest.raises(DishgenError, match="fp16 needs a CUDA GPU"):
        run_lora(tiny_sd_dir, tiny_dataset_64, tmp_path / "run", "mixed_precision=fp16")


def test_images_smaller_than_resolution_are_refused(tiny_sd_dir, tiny_dataset, tmp_path):
    from dishgen.data.dataset import DatasetError

    with pytest.raises(DatasetError, match=r"smaller than resolution=64 .* 32x32.*resolution=32"):
        run_lora(tiny_sd_dir, tiny_dataset, tmp_path / "run")


def test_base_models_that_cannot_be_trained(tiny_dataset_64, tmp_path):
    with pytest.raises(DiffusionError, match="no such folder"):
        run_lora(tmp_path / "missing", tiny_dataset_64, tmp_path / "run1")
    sd3 = tmp_path / "sd3"  # a transformer, three text encoders: not a UNet model
    sd3.mkdir()
    (sd3 / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"]}))
    with pytest.raises(DiffusionError, match="StableDiffusion3Pipeline; this trainer fine-tunes SD 1.x/2.x-class .* SDXL"):
        run_lora(sd3, tiny_dataset_64, tmp_path / "run2")


def test_nan_loss_stops_with_step_and_last_checkpoint(tiny_sd_dir, tiny_dataset_64, tmp_path):
    from dishgen.train.common import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+: loss=nan.*checkpoint-1"):
        run_lora(tiny_sd_dir, tiny_dataset_64, tmp_path / "run", "max_steps=20", "learning_rate=1e30",
                 "max_grad_norm=0", "checkpoint_every=1", "sample_every=0")


def test_config_defaults_validate():
    LoraTrainConfig().validate()


def test_a_run_scale_applies_to_its_own_lora(te_run):
    from dishgen.diffusion import load_generator

    args = {"num_inference_steps": 2, "height": 64, "width": 64}
    off = load_generator(str(te_run), scheduler="ddim", lora_scale=0.0).generate(["sarma"], seed=0, **args)
    full = load_generator(str(te_run), scheduler="ddim").generate(["sarma"], seed=0, **args)
    base = load_generator(json.loads((te_run / "config.json").read_text())["base"], scheduler="ddim")
    plain = base.generate(["sarma"], seed=0, **args)
    assert np.array_equal(np.asarray(off[0]), np.asarray(plain[0]))
    assert not np.array_equal(np.asarray(full[0]), np.asarray(plain[0]))


def test_text_encoder_lora_learns_with_gradient_checkpointing(tiny_sd_dir, tiny_dataset_64, tmp_path):
    """The text-encoder LoRA goes in through peft directly (transformers' add_adapter refuses whole peft
    releases by version); with gradient checkpointing its weights must still get gradients."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    run_lora(tiny_sd_dir, tiny_dataset_64, out, "max_steps=2", "checkpoint_every=0", "sample_every=0",
             "train_text_encoder=true", "text_encoder_lr=1e-2", "gradient_checkpointing=true")
    weights = load_file(out / LORA_WEIGHTS_NAME)
    te_up = [v for k, v in weights.items() if k.startswith("text_encoder.") and k.endswith(".up.weight")]
    assert te_up, sorted(weights)[:5]
    assert all(v.abs().max() > 0 for v in te_up)  # B starts at zero: only training moves it


def test_validation_samples_are_what_generate_makes_from_the_checkpoint(te_run):
    # The grid's row i is prompt i at seed validation_seed + i, with the validation scheduler,
    # steps and guidance: `dishgen generate` from the checkpoint of that step makes the same picture
    # (alpha != rank here, so a LoRA applied at the wrong strength would not).
    from PIL import Image

    from dishgen.diffusion import load_generator
    from dishgen.image_grid import LABEL_WIDTH

    grid = Image.open(te_run / "samples" / "step-2.png").convert("RGB")
    row = np.asarray(grid.crop((LABEL_WIDTH, 0, LABEL_WIDTH + 64, 64)), dtype=np.int16)
    generator = load_generator(str(te_run / "checkpoint-2"), scheduler="dpm++")
    (picture,) = generator.generate(["sarma in a clay pot"], seed=0, num_inference_steps=2, guidance_scale=7.5,
                                    height=64, width=64)
    # <= 1: the grid rounds (x * 2 - 1 + 1) * 127.5, diffusers' PIL output x * 255
    assert np.abs(row - np.asarray(picture, dtype=np.int16)).max() <= 1
