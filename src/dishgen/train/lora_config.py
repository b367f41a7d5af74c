"""The settings of a LoRA run: :class:`LoraTrainConfig`, its presets, and how a run's config is
resolved (defaults -> preset -> config file -> ``key=value`` overrides, or the saved one on resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from dishgen.config import (
    MAX_SEED,
    MINUTES,
    ConfigError,
    apply_overrides,
    checked,
    resolve_run_config,
)
from dishgen.diffusion import DEFAULT_BASE, SCHEDULERS
from dishgen.train.common import TRACKERS

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class LoraTrainConfig:
    """Every setting of a LoRA run (saved as the run's ``config.json``)."""

    # diffusers folder or hub id of an SD 1.x/2.x-class or SDXL model (told apart by its model_index.json)
    base: str = checked(DEFAULT_BASE, non_empty=True)
    revision: str | None = None
    variant: str | None = None  # e.g. "fp16" to download the half-precision weights
    # another VAE (an AutoencoderKL folder or hub id), e.g. madebyollin/sdxl-vae-fp16-fix, whose fp16
    # activations do not overflow; without it SDXL's own VAE stays in fp32 under fp16 mixed precision
    vae: str | None = None
    # data and augmentation
    resolution: int = checked(512, multiple_of=8, min=8, max=4096)
    crop: Literal["center", "random"] = "center"
    # aspect-ratio buckets: each image trains at the bucket of about resolution**2 pixels nearest to its
    # aspect ratio (sides multiples of bucket_step), batches drawn from one bucket; false: squares
    aspect_buckets: bool = False
    bucket_step: int = checked(64, multiple_of=8, min=8)  # 64 for SD/SDXL (their UNets downsample 8x in latent)
    max_bucket_aspect: float = checked(2.0, min=1)
    random_flip: bool = True
    caption_dropout: float = checked(0.0, min=0, max=1, max_open=True)  # probability of training on ""
    # LoRA
    lora_rank: int = checked(8, min=1)
    lora_alpha: float = checked(8.0, min=0, min_open=True)  # the update is scaled by lora_alpha / lora_rank
    lora_dropout: float = checked(0.0, min=0, max=1, max_open=True)
    unet_target_modules: list[str] = checked(default_factory=lambda: list(UNET_TARGETS), non_empty=True)
    train_text_encoder: bool = False
    text_encoder_target_modules: list[str] = checked(default_factory=lambda: list(TEXT_ENCODER_TARGETS),
                                                     non_empty=True)
    # optimisation
    max_steps: int = checked(2000, min=1)
    batch_size: int = checked(4, min=1)  # per process and micro-step
    gradient_accumulation_steps: int = checked(1, min=1)
    learning_rate: float = checked(1e-4, min=0, min_open=True)
    text_encoder_lr: float = checked(5e-5, min=0)
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    lr_warmup_steps: int = checked(0, min=0)
    optimizer: Literal["adamw", "adamw8bit", "auto"] = "adamw"  # auto: 8-bit on CUDA with bitsandbytes
    adam_beta1: float = checked(0.9, min=0, max=1, max_open=True)
    adam_beta2: float = checked(0.999, min=0, max=1, max_open=True)
    adam_weight_decay: float = checked(1e-2, min=0)
    adam_epsilon: float = checked(1e-8, min=0, min_open=True)
    # 0 turns clipping off (the norm is still logged)
    max_grad_norm: float = checked(1.0, min=0, text="at least 0 (0 turns clipping off)")
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    attention: Literal["auto", "sdpa", "xformers"] = "auto"  # auto: xformers on CUDA when installed
    # objective
    # min-SNR-gamma weighting (5.0 is the paper's choice)
    snr_gamma: float | None = checked(None, min=0, min_open=True, text="> 0 (or none to turn it off)")
    noise_offset: float = checked(0.0, min=0)
    prediction_type: Literal["epsilon", "v_prediction"] | None = None  # None: the base model's
    # caching
    cache_latents: bool = True
    cache_text_embeddings: bool = True  # only while the text encoder is frozen
    # validation, logging, checkpoints
    validation_prompts: list[str] = field(default_factory=lambda: [
        "Sarma, cabbage rolls in a clay pot",
        "Ćevapi with onions and kajmak on a wooden board",
        "Gibanica, a layered cheese pie, on a white plate",
    ])
    validation_seed: int = checked(0, min=0, max=MAX_SEED)
    validation_steps: int = checked(25, min=1)
    validation_guidance_scale: float = checked(7.5, min=0)
    validation_scheduler: str = checked("dpm++", choices=tuple(SCHEDULERS))
    sample_every: int = checked(250, min=0, text="at least 0 (0 turns sampling off)")
    checkpoint_every: int = checked(500, min=0, text="at least 0 (0: a checkpoint at the end only)")
    keep_checkpoints: int = checked(3, min=0, text="at least 0 (0 keeps all)")
    # wall-clock limit per invocation: checkpoint, save the LoRA, stop; 0 = none
    max_minutes: float = checked(0.0, min=0, text=MINUTES)
    # also checkpoint after this much time; 0 = off
    checkpoint_every_minutes: float = checked(30.0, min=0, text=MINUTES)
    seed: int = checked(0, min=0, max=MAX_SEED)
    log_with: str = checked("none", choices=TRACKERS)  # also log the scalars to tensorboard or wandb
    # keys of older versions that a saved config may still hold: dropped on --resume
    RETIRED_KEYS: ClassVar[tuple[str, ...]] = ("tensorboard",)  # now log_with=tensorboard

    def validate(self) -> None:
        """The checks no single field declares (called by :func:`~dishgen.config.validate_config`)."""
        if self.aspect_buckets and self.bucket_step > self.resolution:
            raise ConfigError(f"bucket_step={self.bucket_step} is larger than resolution={self.resolution}; "
                              "choose a bucket_step that divides the resolution (64 for SD/SDXL)")
        if self.crop == "random" and self.cache_latents:
            raise ConfigError("crop=random needs fresh latents every step; also set cache_latents=false "
                              "(or keep crop=center)")


PRESETS: dict[str, dict] = {
    # The settings of a tiny CPU run (tests, smoke runs): 64 px, a few steps.
    "tiny": {"resolution": 64, "batch_size": 4, "max_steps": 20, "lora_rank": 4, "lora_alpha": 4,
             "learning_rate": 1e-3, "sample_every": 10, "checkpoint_every": 10, "validation_steps": 4,
             "validation_prompts": ["sarma in a clay pot", "ćevapi with onions"]},
    # SD 1.5 on one 16 GB GPU, like the original project (batch 4 x 4 accumulation), made safer.
    "sd15": {"resolution": 512, "batch_size": 4, "gradient_accumulation_steps": 4, "max_steps": 3000,
             "learning_rate": 1e-4, "lr_scheduler": "cosine", "lr_warmup_steps": 100, "lora_rank": 16,
             "lora_alpha": 16, "mixed_precision": "fp16", "gradient_checkpointing": True, "snr_gamma": 5.0,
             "caption_dropout": 0.05, "optimizer": "auto", "checkpoint_every": 500, "sample_every": 250},
    # SD 2.1 (768 px, v-prediction from its scheduler).
    # SDXL base 1.0 on one 24 GB GPU: 1024 px, the fp16-fix VAE, UNet LoRA (as diffusers' SDXL example).
    "sdxl": {"base": "stabilityai/stable-diffusion-xl-base-1.0", "vae": "madebyollin/sdxl-vae-fp16-fix",
             "resolution": 1024, "batch_size": 1, "gradient_accumulation_steps": 4, "max_steps": 3000,
             "learning_rate": 1e-4, "lr_scheduler": "cosine", "lr_warmup_steps": 100, "lora_rank": 16,
             "lora_alpha": 16, "mixed_precision": "fp16", "gradient_checkpointing": True, "snr_gamma": 5.0,
             "caption_dropout": 0.05, "optimizer": "auto", "validation_guidance_scale": 5.0},
    "sd21": {"base": "stabilityai/stable-diffusion-2-1", "resolution": 768, "batch_size": 2,
             "gradient_accumulation_steps": 8, "max_steps": 3000, "learning_rate": 1e-4,
             "lr_scheduler": "cosine", "lr_warmup_steps": 100, "lora_rank": 16, "lora_alpha": 16,
             "mixed_precision": "fp16", "gradient_checkpointing": True, "snr_gamma": 5.0},
}


def resolve_train_config(out: str | Path, *, base=None, preset=None, config_file=None, overrides=(),
                         resume=False) -> LoraTrainConfig:
    """The run's config: on ``--resume`` the saved one, else defaults -> preset; then file, overrides.

    Raises:
        ConfigError: an unknown key or a bad value.
        HubModelUnavailable: the base is a hub id that is not cached while the hub cannot be reached.
    """
    config = resolve_run_config(LoraTrainConfig, out, family="lora", presets=PRESETS, preset=preset,
                                config_file=config_file, overrides=overrides, resume=resume)
    if base:
        config = apply_overrides(config, {"base": base})
    if config.vae and Path(config.vae).expanduser().is_dir():
        config = apply_overrides(config, {"vae": str(Path(config.vae).expanduser().resolve())})
    if Path(config.base).expanduser().is_dir():  # a local folder: store it absolute (cwd may change)
        config = apply_overrides(config, {"base": str(Path(config.base).expanduser().resolve())})
    else:  # a hub id: offline and not cached fails here, in about a second, before torch and diffusers load
        from dishgen.hub import resolve_hub_model

        resolve_hub_model(config.base, what="base model", option="--base PATH", revision=config.revision,
                          marker="model_index.json")
    return config
