"""Diffusion generation: schedulers, knobs, seeds, LoRA files from other trainers, bad input."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dishgen.diffusion import (
    SCHEDULERS,
    DiffusionError,
    describe_lora,
    load_generator,
    model_defaults,
    resolve_lora_path,
    set_scheduler,
    supported_schedulers,
)


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


@pytest.fixture(scope="module")
def generator(tiny_sd_dir):
    return load_generator(tiny_sd_dir, scheduler="ddim")


@pytest.fixture(scope="module")
def foreign_lora(tiny_sd_dir, tmp_path_factory):
    """A LoRA written by diffusers' own saver from a peft model (as other trainers do), plus its
    kohya-format twin (``lora_unet_*`` keys with ``alpha``)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    torch.manual_seed(1)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for name, param in pipe.unet.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.3)  # a trained-looking LoRA (B starts at zero)
    peft_state = get_peft_model_state_dict(pipe.unet)
    folder = tmp_path_factory.mktemp("foreign_lora")
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(peft_state),
                                              safe_serialization=True)
    kohya = {("lora_unet_" + k): v.contiguous() for k, v in convert_state_dict_to_kohya(peft_state).items()}
    kohya_file = folder.parent / "kohya_lora.safetensors"
    save_file(kohya, str(kohya_file))
    return folder, kohya_file


def test_every_scheduler_generates(generator):
    for name in supported_schedulers(generator.pipe):
        set_scheduler(generator.pipe, name)
        assert type(generator.pipe.scheduler).__name__ == SCHEDULERS[name][0]
        images = generator.generate(["sarma"], seed=0, num_inference_steps=2, height=64, width=64)
        assert images[0].size == (64, 64)
    assert supported_schedulers(generator.pipe) == ["ddpm", "ddim", "pndm", "euler", "euler-a", "dpm++"]
    set_scheduler(generator.pipe, "dpm++")
    assert generator.pipe.scheduler.config.algorithm_type == "dpmsolver++"
    set_scheduler(generator.pipe, "ddim")


def test_schedulers_a_model_does_not_support_are_refused(generator):
    from diffusers import FlowMatchEulerDiscreteScheduler

    with pytest.raises(DiffusionError, match="'flow-match' does not work with StableDiffusionPipeline"):
        set_scheduler(generator.pipe, "flow-match")
    sd3_like = types.SimpleNamespace(scheduler=FlowMatchEulerDiscreteScheduler())
    assert supported_schedulers(sd3_like) == ["flow-match"]
    with pytest.raises(DiffusionError, match="choose one of flow-match"):
        set_scheduler(sd3_like, "ddim")
    with pytest.raises(DiffusionError, match="unknown scheduler 'foo'"):
        set_scheduler(generator.pipe, "foo")


def test_seeds_are_per_image_prompt_major_and_batch_independent(generator):
    args = {"num_inference_steps": 2, "height": 64, "width": 64}
    batched = generator.generate(["sarma", "ćevapi"], num_images=2, seed=3, batch_size=4, **args)
    single = generator.generate(["sarma", "ćevapi"], num_images=2, seed=3, batch_size=1, **args)
    assert len(batched) == 4
    assert np.abs(pixels(batched) - pixels(single)).max() <= 1  # same noise; batched kernels may round
    second = generator.generate(["ćevapi"], num_images=2, seed=5, batch_size=1, **args)  # 3 + 1 * 2
    assert np.array_equal(pixels(second), pixels(single[2:]))
    assert not np.array_equal(pixels(single[:1]), pixels(single[1:2]))  # two images of one prompt differ


def test_knobs_change_the_image_and_bad_knobs_are_refused(generator):
    args = {"num_inference_steps": 2, "height": 64, "width": 64}
    plain = pixels(generator.generate(["sarma"], seed=0, **args))
    negative = pixels(generator.generate(["sarma"], seed=0, negative_prompt="blurry", **args))
    stronger = pixels(generator.generate(["sarma"], seed=0, guidance_scale=15.0, **args))
    wide = generator.generate(["sarma"], seed=0, num_inference_steps=2, height=64, width=96)
    assert not np.array_equal(plain, negative) and not np.array_equal(plain, stronger)
    assert wide[0].size == (96, 64)
    with pytest.raises(TypeError, match="does not take temperature"):
        generator.generate(["sarma"], temperature=1.0)
    with pytest.raises(DiffusionError, match="height=60 is not a positive multiple of 8; use 56 or 64"):
        generator.generate(["sarma"], height=60, width=64)


def test_defaults_of_the_course_model_families():
    def fake(cls_name):
        return type(cls_name, (), {})()

    assert model_defaults(fake("StableDiffusionPipeline"), "stabilityai/sd-turbo") == {
        "guidance_scale": 0.0, "num_inference_steps": 1}
    assert model_defaults(fake("StableDiffusionXLPipeline"), "stabilityai/sdxl-turbo")["guidance_scale"] == 0.0
    assert model_defaults(fake("StableDiffusionXLPipeline"), "stabilityai/stable-diffusion-xl-base-1.0") == {
        "guidance_scale": 5.0, "num_inference_steps": 30}
    assert model_defaults(fake("StableDiffusion3Pipeline"), "stabilityai/stable-diffusion-3.5-large-turbo") == {
        "guidance_scale": 0.0, "num_inference_steps": 4}
    assert model_defaults(fake("StableDiffusion3Pipeline"), "stabilityai/stable-diffusion-3.5-medium") == {
        "guidance_scale": 4.5, "num_inference_steps": 40}
    assert model_defaults(fake("StableDiffusionPipeline"), "stabilityai/stable-diffusion-2-1")["guidance_scale"] == 7.5


def test_lora_from_another_trainer_loads_through_the_cli(tiny_sd_dir, foreign_lora, tmp_path):
    from click.testing import CliRunner
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from PIL import Image

    from dishgen.cli import cli

    folder, _ = foreign_lora
    common = ["sarma in a clay pot", "--model", str(tiny_sd_dir), "--scheduler", "ddim", "--steps", "2",
              "--height", "64", "--width", "64", "--seed", "0", "--guidance-scale", "7"]
    outputs = {}
    for name, extra in {"lora": ["--lora", str(folder)], "zero": ["--lora", str(folder), "--lora-scale", "0"],
                        "base": []}.items():
        result = CliRunner().invoke(cli, ["generate", *common, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        (png,) = sorted((tmp_path / name).glob("*.png"))
        outputs[name] = np.asarray(Image.open(png), dtype=np.int16)

    # the same LoRA through diffusers' own loader gives the same picture
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(folder)
    expected = pipe("sarma in a clay pot", num_inference_steps=2, height=64, width=64, guidance_scale=7,
                    generator=torch.Generator().manual_seed(0)).images[0]
    assert np.array_equal(outputs["lora"], np.asarray(expected, dtype=np.int16))
    assert np.abs(outputs["lora"] - outputs["base"]).mean() > 1.0
    assert np.array_equal(outputs["zero"], outputs["base"])  # --lora-scale 0 switches it off


def test_kohya_format_is_converted(tiny_sd_dir, foreign_lora):
    folder, kohya_file = foreign_lora
    args = {"num_inference_steps": 2, "height": 64, "width": 64}
    diffusers_format = load_generator(tiny_sd_dir, scheduler="ddim", lora=[folder])
    kohya = load_generator(tiny_sd_dir, scheduler="ddim", lora=[str(kohya_file)])
    base = load_generator(tiny_sd_dir, scheduler="ddim")
    a = pixels(diffusers_format.generate(["sarma"], seed=0, **args))
    b = pixels(kohya.generate(["sarma"], seed=0, **args))
    c = pixels(base.generate(["sarma"], seed=0, **args))
    assert np.abs(a - b).max() <= 2 and np.abs(a - c).mean() > 1.0


def test_lora_files_for_other_models_are_explained(tiny_sd_dir, tmp_path):
    # A LoRA for a UNet with another cross-attention width (as SD 1.x vs SD 2.x vs SDXL).
    state = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight": torch.zeros(4, 64),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.up.weight": torch.zeros(32, 4),
    }
    save_file(state, str(tmp_path / "wide.safetensors"))
    with pytest.raises(DiffusionError, match=r"does not fit StableDiffusionPipeline.*cross-attention dim 64"):
        load_generator(tiny_sd_dir, lora=[str(tmp_path / "wide.safetensors")])
    xl = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 8),
          "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(8, 4)}
    save_file(xl, str(tmp_path / "xl.safetensors"))
    with pytest.raises(DiffusionError, match="kohya-format LoRA for SDXL"):
        load_generator(tiny_sd_dir, lora=[str(tmp_path / "xl.safetensors")])
    assert "LyCORIS LoHa" in describe_lora({"lora_unet_x.hada_w1_a": torch.zeros(1)})
    (tmp_path / "old.bin").write_bytes(b"not read")
    with pytest.raises(DiffusionError, match="pickle file; dishgen loads only safetensors"):
        load_generator(tiny_sd_dir, lora=[str(tmp_path / "old.bin")])
    with pytest.raises(DiffusionError, match="2 LoRA files but 1 scales"):
        load_generator(tiny_sd_dir, lora=[str(tmp_path / "xl.safetensors")] * 2, lora_scale=[1.0])


def test_lora_paths_resolve_to_weight_files(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoint-10").mkdir()
    for folder in ("checkpoint-2", "checkpoint-10"):
        (run / folder / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    assert resolve_lora_path(run) == run / "checkpoint-10" / "pytorch_lora_weights.safetensors"
    (run / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    assert resolve_lora_path(run) == run / "pytorch_lora_weights.safetensors"
    assert resolve_lora_path("someone/serbian-food-lora") == "someone/serbian-food-lora"
    with pytest.raises(DiffusionError, match="does not exist"):
        resolve_lora_path(tmp_path / "nothing")


def test_models_that_cannot_be_loaded_name_the_fix(tiny_sd_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DiffusionError, match="nobody/no-such-model is not in the local Hugging Face cache .*HF_HUB_OFFLINE is set"):
        load_generator("nobody/no-such-model")
    with pytest.raises(DiffusionError, match="no such folder"):
        load_generator(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffusionError, match="not a loadable diffusers pipeline"):
        load_generator(str(tmp_path / "empty"))
    with pytest.raises(DiffusionError, match="fp16 is not supported on the CPU"):
        load_generator(tiny_sd_dir, dtype="fp16")


def test_shape_only_sd15_has_the_real_sizes():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dishgen.diffusion import SD15_TEXT_ENCODER_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG

    with torch.device("meta"):  # shapes only: no memory, no time
        models = (UNet2DConditionModel(**SD15_UNET_CONFIG), AutoencoderKL(**SD15_VAE_CONFIG),
                  CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER_CONFIG)))
    counts = [sum(p.numel() for p in m.parameters()) for m in models]
    assert counts == [859_520_964, 83_653_863, 123_060_480]  # SD 1.5's UNet, VAE, CLIP ViT-L/14 text


def test_from_png_remakes_a_lora_image_with_its_negative_caption(tiny_sd_dir, foreign_lora, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from dishgen.cli import cli
    from dishgen.generation_io import read_provenance

    folder, _ = foreign_lora
    args = ["generate", "ćevapi na tanjiru", "--model", str(tiny_sd_dir), "--scheduler", "ddim", "--steps", "2",
            "--height", "64", "--width", "64", "--seed", "4", "-n", "2", "--guidance-scale", "7",
            "--negative-prompt", "mutno, ružno", "--lora", str(folder), "--lora-scale", "0.5", "--no-grid"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    first, second = sorted((tmp_path / "a").glob("*.png"))
    with Image.open(second) as im:
        parameters = im.text["parameters"]
    assert parameters.startswith("ćevapi na tanjiru\nNegative prompt: mutno, ružno\n"
                                 "Steps: 2, Sampler: ddim, CFG scale: 7.0, Seed: 4, Image index: 1, Size: 64x64, ")
    assert f"{folder}:0.5" in parameters.split("Lora: ")[1]
    record = read_provenance(second)
    assert record["lora"] == [{"path": str(folder), "scale": 0.5}] and record["negative_caption"] == "mutno, ružno"

    again = CliRunner().invoke(cli, ["generate", "--from-png", str(second), "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    (remade,) = sorted((tmp_path / "b").glob("*.png"))
    assert read_provenance(remade) == record
    assert np.abs(pixels([Image.open(remade)]) - pixels([Image.open(second)])).max() <= 1
    assert np.abs(pixels([Image.open(remade)]) - pixels([Image.open(first)])).mean() > 1
