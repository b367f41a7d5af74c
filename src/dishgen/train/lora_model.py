"""The LoRA trainer's networks: the base Stable Diffusion parts (SD 1.x/2.x-class, or SDXL with its
two text encoders), loaded frozen in the training precision, and the peft LoRA adapters on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dishgen.diffusion import DiffusionError


@dataclass
class BaseModel:
    """The parts of the base pipeline that training uses (``*_2``: SDXL's second text encoder)."""

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    noise_scheduler: Any
    tokenizer_2: Any
    text_encoder_2: Any
    xl: bool
    weight_dtype: torch.dtype  # the frozen weights' dtype (the LoRA weights train in fp32)
    vae_dtype: torch.dtype
    prediction_type: str  # what the UNet learns to predict: epsilon or v_prediction

    @property
    def text_encoders(self) -> list:
        return [self.text_encoder, self.text_encoder_2] if self.xl else [self.text_encoder]


def load_base_model(config, base: str, xl: bool, device: torch.device) -> BaseModel:
    """Load the base's tokenizer(s), text encoder(s), UNet, VAE (or ``config.vae``) and noise scheduler,
    frozen, on ``device``, in the precision training runs at.

    Raises:
        DiffusionError: a part is missing or cannot be loaded (the message says what to do).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from dishgen.diffusion import explain_load_error
    from dishgen.errors import DishgenError

    load = {"revision": config.revision}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **load)
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", variant=config.variant, **load)
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", variant=config.variant, **load)
        noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler", **load)
        tokenizer_2 = text_encoder_2 = None
        if xl:
            tokenizer_2 = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2", **load)
            text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2",
                                                                         variant=config.variant, **load)
        if not config.vae:
            vae = AutoencoderKL.from_pretrained(base, subfolder="vae", variant=config.variant, **load)
    except Exception as err:
        raise DiffusionError(explain_load_error(config.base, err)) from err
    if config.vae:
        try:
            vae = AutoencoderKL.from_pretrained(_hub_or_folder(config.vae, "vae"))
        except DishgenError:
            raise
        except Exception as err:
            raise DiffusionError(explain_load_error(config.vae, err)) from err
    if config.prediction_type:
        noise_scheduler.register_to_config(prediction_type=config.prediction_type)
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
    # SDXL's own VAE overflows in fp16 (NaN latents): keep it in fp32 unless a fixed one was given
    vae_dtype = torch.float32 if xl and weight_dtype == torch.float16 and not config.vae else weight_dtype
    parts = BaseModel(tokenizer, text_encoder, unet, vae, noise_scheduler, tokenizer_2, text_encoder_2, xl,
                      weight_dtype, vae_dtype, noise_scheduler.config.prediction_type)
    for model, dtype in ((unet, weight_dtype), (vae, vae_dtype), *((m, weight_dtype) for m in parts.text_encoders)):
        model.requires_grad_(False)
        if dtype == torch.float32:
            model.to(device)
        else:  # frozen weights in half precision; the LoRA weights are cast back to fp32 by add_lora
            model.to(device, dtype=dtype)
    vae.eval()
    for model in parts.text_encoders:
        model.eval()
    return parts


def add_lora(config, parts: BaseModel, device: torch.device) -> None:
    """peft LoRA adapters on the UNet's attention projections (and the text encoders' with
    ``train_text_encoder``), trained in fp32; attention kernel and gradient checkpointing as configured.

    The caller seeds the random state first: the adapters' initial weights are drawn from it.
    """
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig, inject_adapter_in_model

    lora = {"r": config.lora_rank, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
            "init_lora_weights": "gaussian"}
    parts.unet.add_adapter(LoraConfig(target_modules=list(config.unet_target_modules), **lora))
    with_lora = [parts.unet]
    if config.train_text_encoder:
        # peft directly, not transformers' `add_adapter`: that refuses whole peft releases by version
        # (transformers 5.24 asks for peft >= 0.22 before any was published), for no change here.
        for model in parts.text_encoders:  # SDXL: both
            inject_adapter_in_model(LoraConfig(target_modules=list(config.text_encoder_target_modules), **lora),
                                    model)
        with_lora.extend(parts.text_encoders)
    cast_training_params(with_lora, dtype=torch.float32)  # LoRA weights train in fp32 under autocast
    _set_attention(parts.unet, config.attention, device)
    if config.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            for model in parts.text_encoders:
                model.gradient_checkpointing_enable()
                model.enable_input_require_grads()  # what add_adapter would have switched on


def make_optimizer(config, parts: BaseModel, device: torch.device, world: int):
    """AdamW (8-bit where asked or available on CUDA) over the LoRA weights, the text encoders' at
    ``text_encoder_lr``, and the LR schedule. Returns ``(optimizer, lr_scheduler)``."""
    from diffusers.optimization import get_scheduler

    unet_params = [p for p in parts.unet.parameters() if p.requires_grad]
    groups = [{"params": unet_params, "lr": config.learning_rate}]
    if config.train_text_encoder:
        groups.append({"params": [p for model in parts.text_encoders for p in model.parameters() if p.requires_grad],
                       "lr": config.text_encoder_lr})
    optimizer = _optimizer_class(config.optimizer, device)(
        groups, betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon)
    schedule = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[config.lr_scheduler]
    # accelerate steps a prepared scheduler once per process per step, hence the factor `world`.
    lr_scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=config.lr_warmup_steps * world,
                                 num_training_steps=config.max_steps * world)
    return optimizer, lr_scheduler


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def check_base(base: str, revision: str | None) -> tuple[str, bool]:
    """Fail early, with the fix, when the base model is neither an SD 1.x/2.x-class nor an SDXL pipeline.

    Returns where to load it from (the folder, the cached hub snapshot, or the hub id) and whether
    it is SDXL (a second text encoder and tokenizer in its ``model_index.json``).
    """
    from diffusers import DiffusionPipeline

    from dishgen.diffusion import explain_load_error
    from dishgen.hub import resolve_hub_model

    if not Path(base).expanduser().is_dir() and (base.count("/") != 1 or base.startswith((".", "/", "~"))):
        raise DiffusionError(f"base model {base!r} not found: no such folder, and not a hub id of the form owner/name")
    source = resolve_hub_model(base, what="base model", option="--base PATH", revision=revision,
                               marker="model_index.json", error=DiffusionError)
    try:
        index = DiffusionPipeline.load_config(source, revision=revision)
    except Exception as err:
        raise DiffusionError(explain_load_error(base, err)) from err
    needed = {"unet", "vae", "text_encoder", "tokenizer"}
    xl = {"text_encoder_2", "tokenizer_2"} <= set(index)
    if not needed <= set(index) or ("text_encoder_2" in index and not xl) or "transformer" in index:
        raise DiffusionError(
            f"{base!r} is a {index.get('_class_name', 'pipeline')}; this trainer fine-tunes SD 1.x/2.x-class models "
            "(UNet + one CLIP text encoder) and SDXL (UNet + two CLIP text encoders), e.g. "
            "stable-diffusion-v1-5/stable-diffusion-v1-5 or stabilityai/stable-diffusion-xl-base-1.0"
        )
    return source, xl


def _hub_or_folder(location: str, what: str) -> str:
    """A local folder as it is; a hub id through the cache check (offline and not cached: a clear error)."""
    from dishgen.hub import resolve_hub_model

    if Path(location).expanduser().is_dir():
        return str(Path(location).expanduser())
    return resolve_hub_model(location, what=what, option=f"{what}=PATH", marker="config.json", error=DiffusionError)


def _set_attention(unet, choice: str, device) -> None:
    from dishgen.errors import DishgenError

    has_xformers = _installed("xformers")
    if choice == "xformers" and not has_xformers:
        raise DishgenError("attention=xformers but xformers is not installed; pip install xformers, "
                           "or use attention=sdpa")
    if choice == "xformers" or (choice == "auto" and has_xformers and device.type == "cuda"):
        unet.enable_xformers_memory_efficient_attention()
    # otherwise diffusers' default processor, torch's scaled_dot_product_attention (SDPA)


def _optimizer_class(name: str, device):
    if name == "adamw8bit" or (name == "auto" and _installed("bitsandbytes") and device.type == "cuda"):
        try:
            import bitsandbytes as bnb
        except ImportError:
            from dishgen.errors import DishgenError

            raise DishgenError("optimizer=adamw8bit needs bitsandbytes (pip install bitsandbytes, on a CUDA "
                               "machine); or use optimizer=adamw") from None
        return bnb.optim.AdamW8bit
    return torch.optim.AdamW
