"""Stable Diffusion pipelines: base models, schedulers by name, LoRA loading, one generator.

A diffusion model reference is a diffusers folder (``model_index.json``) or a hub id, optionally
with LoRA files; a dishgen LoRA run directory (or one of its ``checkpoint-<step>/`` folders) names
its base model in ``config.json`` and brings its own ``pytorch_lora_weights.safetensors``::

    gen = load_generator("stable-diffusion-v1-5/stable-diffusion-v1-5", lora=["runs/lora"],
                         scheduler="dpm++", device="cuda", dtype="fp16")
    images = gen.generate(["Sarma in a clay pot"], num_images=2, seed=0, num_inference_steps=25)

The families of the course project load by id with sensible defaults: SD 1.5 / 2.1 (CFG 7.5,
30 steps), SDXL base (CFG 5, 30 steps), SD-Turbo and SDXL-Turbo (guidance off, 1 step, 512 px),
SD 3.5 Medium (CFG 4.5, 40 steps) and SD 3.5 Large Turbo (guidance off, 4 steps). SD3-class models
take only the ``flow-match`` scheduler.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dishgen.errors import DishgenError
from dishgen.families.registry import get_family

logger = logging.getLogger(__name__)

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"

# --scheduler name -> (diffusers class, extra config). Names follow the common UI names.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),  # PLMS, as Stable Diffusion ships it
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "flow-match": ("FlowMatchEulerDiscreteScheduler", {}),
}

KNOBS = get_family("diffusion").knobs  # negative_prompt, guidance_scale, num_inference_steps, height, width, batch_size


class DiffusionError(DishgenError):
    """A diffusion model, scheduler, LoRA or generation argument that cannot be used."""


# -- base models --------------------------------------------------------------------------------


def load_pipeline(location: str | Path, *, device=None, dtype=None, token: str | None = None):
    """Load a diffusers text-to-image pipeline from a folder or hub id.

    Args:
        location: a diffusers folder (``model_index.json``) or a hub id (``owner/name``).
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto``.
        dtype: ``fp32`` (default), ``bf16`` or ``fp16`` (CUDA only).
        token: hub token for gated models (default: ``HF_TOKEN`` / the cached login).

    Raises:
        DiffusionError: the model cannot be found (no such folder, gated without a token; a hub
            id that is not cached while the hub cannot be reached fails within about 1.5 s,
            before any download is tried: see :mod:`dishgen.hub`) or the device/dtype cannot be used.
    """
    from dishgen.hub import resolve_hub_model

    text = str(location)
    is_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and " " not in text
    if not is_hub_id and not Path(text).expanduser().exists():
        raise DiffusionError(
            f"base model {text!r} not found: no such folder, and not a hub id of the form owner/name"
        )
    # before the heavy imports, so that an unreachable hub is reported in about a second
    source = resolve_hub_model(text, what="diffusion model", option="--model PATH", marker="model_index.json",
                               error=DiffusionError)
    from diffusers import DiffusionPipeline

    from dishgen.devices import resolve_device, resolve_dtype

    try:
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
    except ValueError as err:
        raise DiffusionError(str(err)) from None
    try:
        pipe = DiffusionPipeline.from_pretrained(source, token=token, **dtype_kwarg(torch_dtype))
    except Exception as err:  # hub, filesystem and config errors all come through here
        raise DiffusionError(explain_load_error(text, err)) from err
    if not hasattr(pipe, "unet") and not hasattr(pipe, "transformer"):
        raise DiffusionError(f"{text!r} is a {type(pipe).__name__}, not a text-to-image diffusion pipeline")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch_device)


def dtype_kwarg(torch_dtype) -> dict[str, Any]:
    """``from_pretrained``'s dtype argument: ``dtype`` where diffusers has it, else ``torch_dtype``."""
    from diffusers.utils import deprecation_utils

    return {"dtype": torch_dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": torch_dtype}


def explain_load_error(location: str, err: Exception) -> str:
    """One line saying why a model could not be loaded and what to do (gated, bad folder, offline)."""
    name = type(err).__name__
    message = str(err).splitlines()[0] if str(err) else name
    if "Gated" in name or "gated" in message.lower() or "401" in message:
        return (f"{location!r} is a gated model: accept its license on the Hub, then pass --token or set "
                f"HF_TOKEN ({name}: {message})")
    if Path(location).is_dir():
        return (f"{location!r} is a folder but not a loadable diffusers pipeline ({name}: {message}); "
                "it needs model_index.json and the component folders written by save_pretrained")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    hint = ("HF_HUB_OFFLINE is set and it is not in the local cache: download it on a machine with "
            f"internet (`hf download {location}`) or pass a local folder") if offline else (
            "check the id for typos, your network, or pass a local diffusers folder")
    return f"base model {location!r} could not be loaded: {hint} ({name}: {message})"


def model_defaults(pipe, location: str | Path) -> dict[str, Any]:
    """Default knobs for a pipeline: turbo models run without guidance in a few steps."""
    kind = type(pipe).__name__
    turbo = "turbo" in str(location).lower()
    if "StableDiffusion3" in kind:
        return {"guidance_scale": 0.0, "num_inference_steps": 4} if turbo else {
            "guidance_scale": 4.5, "num_inference_steps": 40}
    if "XL" in kind:
        return {"guidance_scale": 0.0, "num_inference_steps": 1, "height": 512, "width": 512} if turbo else {
            "guidance_scale": 5.0, "num_inference_steps": 30}
    if turbo:
        return {"guidance_scale": 0.0, "num_inference_steps": 1}
    return {"guidance_scale": 7.5, "num_inference_steps": 30}


def size_multiple(pipe) -> int:
    """Height and width must be multiples of this (VAE factor, times the patch size for DiT models)."""
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    transformer = getattr(pipe, "transformer", None)
    patch = int(getattr(getattr(transformer, "config", None), "patch_size", 1) or 1) if transformer is not None else 1
    return factor * patch


# -- schedulers ---------------------------------------------------------------------------------


def supported_schedulers(pipe) -> list[str]:
    """The ``--scheduler`` names that this pipeline's scheduler can be swapped for."""
    compatible = {c.__name__ for c in pipe.scheduler.compatibles} | {type(pipe.scheduler).__name__}
    return [name for name, (cls, _) in SCHEDULERS.items() if cls in compatible]


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's scheduler for the one named (``ddim``, ``dpm++``, ``flow-match``...).

    Raises:
        DiffusionError: the name is unknown or the model does not support that scheduler (e.g.
            DDPM/DDIM on an SD3 flow-matching model).
    """
    import diffusers

    if name not in SCHEDULERS:
        raise DiffusionError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    supported = supported_schedulers(pipe)
    if name not in supported:
        raise DiffusionError(
            f"scheduler {name!r} does not work with {type(pipe).__name__} (its scheduler is "
            f"{type(pipe.scheduler).__name__}); choose one of {', '.join(supported)}"
        )
    cls_name, extra = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)


# -- LoRA ---------------------------------------------------------------------------------------


def resolve_lora_path(path: str | Path) -> Path | str:
    """Find the LoRA weights file for a ``--lora`` value.

    Accepts a ``.safetensors`` file, a folder holding ``pytorch_lora_weights.safetensors`` (a
    dishgen run or checkpoint, a diffusers LoRA folder), a dishgen run without final weights
    (its latest checkpoint is used), a folder with exactly one ``.safetensors`` file, or a hub id.

    Raises:
        DiffusionError: pickle formats, empty or ambiguous folders, missing paths.
    """
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix in (".bin", ".pt", ".pth", ".ckpt"):
            raise DiffusionError(
                f"LoRA {str(p)!r} is a pickle file; dishgen loads only safetensors. Convert it once with "
                "safetensors.torch.save_file(torch.load(path, weights_only=True), 'lora.safetensors')"
            )
        return p
    if p.is_dir():
        if (p / LORA_WEIGHTS_NAME).is_file():
            return p / LORA_WEIGHTS_NAME
        checkpoints = sorted(
            (int(c.name.split("-")[1]), c) for c in p.glob("checkpoint-*")
            if c.name.split("-")[1].isdigit() and (c / LORA_WEIGHTS_NAME).is_file()
        )
        if checkpoints:
            logger.warning("%s has no final LoRA weights yet; using %s", p, checkpoints[-1][1])
            return checkpoints[-1][1] / LORA_WEIGHTS_NAME
        files = sorted(p.glob("*.safetensors"))
        if len(files) == 1:
            return files[0]
        raise DiffusionError(
            f"LoRA folder {str(p)!r} holds {len(files)} .safetensors files and no {LORA_WEIGHTS_NAME}; "
            "pass the file itself"
        )
    text = str(path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        return text  # a hub id: diffusers downloads it (or explains that it is offline)
    raise DiffusionError(f"LoRA {text!r} does not exist")


def describe_lora(state_dict: dict) -> str:
    """Say what a LoRA state dict is: its format and the architecture it was trained for."""
    keys = list(state_dict)
    if any("hada_" in k for k in keys) or any("lokr_" in k for k in keys):
        kind = "LoHa" if any("hada_" in k for k in keys) else "LoKr"
        return f"a LyCORIS {kind} file (diffusers loads only plain LoRA; re-export it as LoRA)"
    if any(k.startswith(("lora_te1_", "lora_te2_")) for k in keys):
        fmt, arch = "kohya", "SDXL"
    elif any(k.startswith(("lora_unet_", "lora_te_")) for k in keys):
        fmt, arch = "kohya", None
    elif any(k.startswith(("transformer.", "lora_transformer_")) for k in keys):
        fmt, arch = "diffusers", "a DiT model (SD3/Flux)"
    else:
        fmt, arch = ("diffusers" if any(".lora" in k or "lora_A" in k for k in keys) else "unknown"), None
    if any("text_encoder_2" in k for k in keys):
        arch = "SDXL"
    if arch is None:
        dims = {int(v.shape[1]) for k, v in state_dict.items()
                if "attn2" in k and "to_k" in k and ("down" in k or "lora_A" in k) and v.ndim == 2}
        names = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
        arch = " / ".join(f"{names.get(d, 'an unknown model')} (cross-attention dim {d})" for d in sorted(dims)) or "an unknown model"
    return f"a {fmt}-format LoRA for {arch} with {len(keys)} tensors"


def load_loras(pipe, loras: list[str | Path], scales: list[float] | None = None, token: str | None = None) -> list[str]:
    """Load LoRA files into the pipeline as named adapters and activate them with their scales.

    Each file is handed to diffusers' ``load_lora_weights`` by path (never as a state dict), so a
    LoRA is applied exactly as plain diffusers applies it from the same file: diffusers reads the
    LoRA config (rank, ``lora_alpha``, targets) from the file's safetensors metadata only when it
    reads the file itself; from a dict, alpha would fall back to rank (a LoRA trained with
    ``lora_alpha=16, lora_rank=32`` would come out twice too strong). Diffusers converts
    kohya-format files itself. A file that matches no layer of the model (for another
    architecture) is an error, never a silent no-op.

    Returns:
        The adapter names (``lora0``, ``lora1``...), activated with ``scales`` (default 1 each).
    """
    from dishgen.hub import resolve_hub_model

    scales = list(scales) if scales is not None else [1.0] * len(loras)
    if len(scales) != len(loras):
        raise DiffusionError(f"got {len(loras)} LoRA files but {len(scales)} scales; give one scale per LoRA")
    names = []
    for index, lora in enumerate(loras):
        source = resolve_lora_path(lora)
        if isinstance(source, str):  # a hub id: its cached snapshot, or fail now rather than after retries
            source = resolve_hub_model(source, what="LoRA", option="--lora PATH", error=DiffusionError)
        name = f"lora{index}"
        if isinstance(source, Path):  # a local safetensors file, read by diffusers with its metadata
            where, options = str(source.parent), {"weight_name": source.name, "use_safetensors": True}
        else:
            where, options = source, {"token": token}
        before = _adapter_count(pipe)
        try:
            with _quiet_diffusers():  # "no LoRA keys for the text encoder" is normal; we check below
                pipe.load_lora_weights(where, adapter_name=name, **options)
        except Exception as err:
            raise DiffusionError(
                f"LoRA {str(lora)!r} does not fit {type(pipe).__name__}: it is {_describe_file(source)} "
                f"({type(err).__name__}: {str(err).splitlines()[0][:300]}); use a LoRA trained for this base model"
            ) from err
        if _adapter_count(pipe) == before:
            raise DiffusionError(
                f"LoRA {str(lora)!r} matched no layer of {type(pipe).__name__}: it is {_describe_file(source)}; "
                "use a LoRA trained for this base model"
            )
        names.append(name)
    if names:
        pipe.set_adapters(names, adapter_weights=scales)
    return names


def _describe_file(source) -> str:
    """:func:`describe_lora` of a local file, for an error message (never raises)."""
    if not isinstance(source, Path):
        return "this LoRA"
    try:
        from safetensors.torch import load_file

        return describe_lora(load_file(str(source)))
    except Exception as err:  # a damaged file: say so rather than hide the first error
        return f"a file that safetensors cannot read ({type(err).__name__}: {str(err).splitlines()[0][:200]})"


@contextlib.contextmanager
def _quiet_diffusers():
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def _adapter_count(pipe) -> int:
    return sum(len(v) for v in pipe.get_list_adapters().values())


# -- the generator ------------------------------------------------------------------------------


@dataclass
class DiffusionGenerator:
    """A loaded diffusion pipeline behind the common :class:`dishgen.generation.Generator` call."""

    pipe: Any
    family: str = "diffusion"
    defaults: dict[str, Any] = field(default_factory=dict)
    knobs: tuple[str, ...] = KNOBS
    location: str = ""
    loras: list[str] = field(default_factory=list)

    def generate(self, prompts: list[str], num_images: int = 1, seed: int | None = None, *,
                 first_index: int = 0, **knobs: Any) -> list:
        """Generate ``num_images`` images per prompt, prompt-major.

        Image ``k`` (in prompt-major order) is drawn from its own generator seeded ``seed + k``,
        so a result does not depend on ``batch_size``, and ``first_index=k`` (or ``seed + k``)
        makes image ``k`` again alone.

        Args:
            prompts: captions.
            num_images: images per prompt.
            seed: base seed (random when None).
            first_index: this call's first image is image ``first_index`` of the seed (default 0).
            **knobs: ``negative_prompt``, ``guidance_scale``, ``num_inference_steps``, ``height``,
                ``width``, ``batch_size`` (images per pipeline call, default 4).

        Returns:
            ``len(prompts) * num_images`` PIL images.
        """
        import torch

        from dishgen.generation import check_knobs

        knobs = check_knobs(self.family, self.knobs, knobs)
        args = {**self.defaults, **{k: v for k, v in knobs.items() if v is not None}}
        batch_size = int(args.pop("batch_size", 4))
        if batch_size < 1:
            raise DiffusionError(f"batch_size={batch_size} must be at least 1")
        multiple = size_multiple(self.pipe)
        for side in ("height", "width"):
            value = args.get(side)
            if value is not None and (int(value) <= 0 or int(value) % multiple):
                low = max(multiple, int(value) // multiple * multiple)
                raise DiffusionError(
                    f"{side}={value} is not a positive multiple of {multiple}; use {low} or {low + multiple}"
                )
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        negative = args.pop("negative_prompt", None)
        jobs = [(p, seed + first_index + i * num_images + j) for i, p in enumerate(prompts) for j in range(num_images)]
        images = []
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            call = dict(args)
            if negative is not None:
                call["negative_prompt"] = [negative] * len(chunk)
            out = self.pipe(
                prompt=[p for p, _ in chunk],
                generator=[torch.Generator("cpu").manual_seed(s) for _, s in chunk],
                output_type="pil",
                **call,
            )
            images.extend(out.images)
        return images


def run_scheduler_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The scheduler settings a LoRA run was trained with that differ from its base model's.

    The trainer's noise scheduler is the base model's, except for a ``prediction_type`` override
    (e.g. ``v_prediction`` on an epsilon base); generation must predict what the LoRA learned.

    Args:
        config: the run's ``config.json``.

    Returns:
        Keyword overrides for ``SchedulerClass.from_config`` (empty when the base's apply).
    """
    return {"prediction_type": config["prediction_type"]} if config.get("prediction_type") else {}


def load_generator(
    location: str | Path,
    device=None,
    dtype=None,
    lora: list[str | Path] | str | None = None,
    lora_scale: list[float] | float | None = None,
    scheduler: str | None = None,
    token: str | None = None,
) -> DiffusionGenerator:
    """Load a diffusion model (family ``diffusion``) or a dishgen LoRA run (family ``lora``).

    Args:
        location: a diffusers folder or hub id, or a dishgen LoRA run / checkpoint folder (its
            ``config.json`` names the base model; its LoRA is applied first, at scale 1, and the
            scheduler predicts what the run trained for: :func:`run_scheduler_settings`).
        device: ``cpu`` (default), ``cuda``, ``auto``...
        dtype: ``fp32`` (default), ``bf16``, ``fp16`` (CUDA only).
        lora: extra LoRA files or folders.
        lora_scale: one weight per extra LoRA (default 1); for a LoRA run with no extra LoRA, a
            single value scales the run's own LoRA.
        scheduler: a name from :data:`SCHEDULERS`.
        token: hub token for gated models.

    Returns:
        A :class:`DiffusionGenerator`.
    """
    loras = [lora] if isinstance(lora, (str, Path)) else list(lora or [])
    scales = [lora_scale] if isinstance(lora_scale, (int, float)) else list(lora_scale or [1.0] * len(loras))
    family, base, trained_scheduler = "diffusion", location, {}
    config_file = Path(location) / "config.json"
    if Path(location).is_dir() and not (Path(location) / "model_index.json").is_file() and config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if config.get("family") != "lora" or not config.get("base"):
            raise DiffusionError(f"{str(location)!r} is not a LoRA run: its config.json has no family 'lora' and base")
        family, base = "lora", config["base"]
        trained_scheduler = run_scheduler_settings(config)
        # the run's own LoRA at scale 1; or at the one scale given when there are no other LoRAs
        own = scales.pop() if (not loras and len(scales) == 1) else 1.0
        loras, scales = [location, *loras], [own, *scales]
    pipe = load_pipeline(base, device=device, dtype=dtype, token=token)
    if trained_scheduler:  # before --scheduler, which copies the config
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **trained_scheduler)
    if scheduler:
        set_scheduler(pipe, scheduler)
    load_loras(pipe, loras, scales, token=token)
    return DiffusionGenerator(
        pipe=pipe, family=family, defaults=model_defaults(pipe, base), location=str(location),
        loras=[str(x) for x in loras],
    )


# -- the "shape-only" SD 1.5 (real architecture, random weights, no download) -------------------

SD15_UNET_CONFIG = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
SD15_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_TEXT_ENCODER_CONFIG = {  # openai/clip-vit-large-patch14's text tower, as SD 1.5 ships it
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
SD15_SCHEDULER_CONFIG = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
}


def build_shape_only_sd15(path: str | Path, tokenizer, seed: int = 0, dtype=None) -> Path:
    """Save a Stable Diffusion 1.5 pipeline with the real shapes and random weights.

    The UNet (860 M parameters), VAE (84 M) and CLIP text encoder (123 M) use SD 1.5's published
    configs, so a training step or an image costs what it costs with the real model: a benchmark
    without a download. The images it makes are noise.

    Args:
        path: output folder (about 4.3 GB in fp32, half in fp16).
        tokenizer: a ``CLIPTokenizer`` (the weights do not depend on it).
        seed: torch seed for the random weights.
        dtype: save in this torch dtype (default float32).

    Returns:
        The folder, loadable with ``StableDiffusionPipeline.from_pretrained`` and usable as
        ``--base`` for ``dishgen train lora``.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(**SD15_UNET_CONFIG),
        vae=AutoencoderKL(**SD15_VAE_CONFIG),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER_CONFIG)),
        tokenizer=tokenizer,
        scheduler=PNDMScheduler(**SD15_SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    if dtype is not None:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(str(path), safe_serialization=True)
    return Path(path)


# -- the "shape-only" SDXL base 1.0 (real architecture, random weights, no download) ------------------

SDXL_UNET_CONFIG = {  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (2.57 B parameters)
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280], "layers_per_block": 2, "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048, "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32, "norm_eps": 1e-5, "act_fn": "silu",
}
SDXL_VAE_CONFIG = {**SD15_VAE_CONFIG, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
SDXL_TEXT_ENCODER_2_CONFIG = {  # OpenCLIP ViT-bigG/14's text tower, as SDXL ships it (695 M parameters)
    "vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_attention_heads": 20, "max_position_embeddings": 77, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    "projection_dim": 1280, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
SDXL_SCHEDULER_CONFIG = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "steps_offset": 1, "timestep_spacing": "leading", "prediction_type": "epsilon",
}


def build_shape_only_sdxl(path: str | Path, tokenizer, seed: int = 0, dtype=None) -> Path:
    """Save an SDXL base 1.0 pipeline with the real shapes and random weights (for benchmarks).

    UNet 2.57 B, text encoders 123 M + 695 M, VAE 84 M parameters from SDXL's published configs:
    a training step costs what it costs with the real model, with no download. Images are noise.

    Args:
        path: output folder (about 14 GB in fp32, half in fp16).
        tokenizer: a ``CLIPTokenizer`` (used for both tokenizers; the weights do not depend on it).
        seed: torch seed for the random weights.
        dtype: save in this torch dtype (default float32).

    Returns:
        The folder, loadable with ``StableDiffusionXLPipeline.from_pretrained`` and usable as
        ``--base`` for ``dishgen train lora``.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    pipe = StableDiffusionXLPipeline(
        unet=UNet2DConditionModel(**SDXL_UNET_CONFIG),
        vae=AutoencoderKL(**SDXL_VAE_CONFIG),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER_CONFIG)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_ENCODER_2_CONFIG)),
        tokenizer=tokenizer, tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG),
    )
    if dtype is not None:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(str(path), safe_serialization=True)
    return Path(path)
