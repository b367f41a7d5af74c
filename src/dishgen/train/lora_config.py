"""The settings of a LoRA run: :class:`LoraTrainConfig`, its presets, and how a run's config is
resolved (defaults -> preset -> config file -> ``key=value`` overrides, or the saved one on resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dishgen.config import (
    ConfigError,
    apply_overrides,
    resolve_run_config,
)
from dishgen.diffusion import DEFAULT_BASE

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class LoraTrainConfig:
    """Every setting of a LoRA run (saved as the run's ``config.json``)."""

    base: str = DEFAULT_BASE  # diffusers folder or hub id of an SD 1.x/2.x-class model
    revision: str | None = None
    variant: str | None = None  # e.g. "fp16" to download the half-precision weights
    # data and augmentation
    resolution: int = 512
    crop: Literal["center", "random"] = "center"
    random_flip: bool = True
    caption_dropout: float = 0.0  # probability of training on the empty caption
    # LoRA
    lora_rank: int = 8
    lora_alpha: float = 8.0  # the update is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0
    unet_target_modules: list[str] = field(default_factory=lambda: list(UNET_TARGETS))
    train_text_encoder: bool = False
    text_encoder_target_modules: list[str] = field(default_factory=lambda: list(TEXT_ENCODER_TARGETS))
    # optimisation
    max_steps: int = 2000
    batch_size: int = 4  # per process and micro-step
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    text_encoder_lr: float = 5e-5
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    lr_warmup_steps: int = 0
    optimizer: Literal["adamw", "adamw8bit", "auto"] = "adamw"  # auto: 8-bit on CUDA with bitsandbytes
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # 0 turns clipping off (the norm is still logged)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    attention: Literal["auto", "sdpa", "xformers"] = "auto"  # auto: xformers on CUDA when installed
    # objective
    snr_gamma: float | None = None  # min-SNR-gamma weighting (5.0 is the paper's choice)
    noise_offset: float = 0.0
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
    validation_seed: int = 0
    validation_steps: int = 25
    validation_guidance_scale: float = 7.5
    validation_scheduler: str = "dpm++"
    sample_every: int = 250
    checkpoint_every: int = 500
    keep_checkpoints: int = 3  # 0 keeps all
    max_minutes: float = 0.0  # wall-clock limit per invocation: checkpoint, save the LoRA, stop; 0 = none
    checkpoint_every_minutes: float = 30.0  # also checkpoint after this much time; 0 = off
    seed: int = 0
    tensorboard: bool = True  # when tensorboard is installed

    def validate(self) -> None:
        """Reject settings that cannot work, naming the fix."""
        from dishgen.train.common import check_stop_config

        check_stop_config(self)
        if self.resolution <= 0 or self.resolution % 8:
            raise ConfigError(f"resolution={self.resolution} must be a positive multiple of 8 (e.g. 512)")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ConfigError(f"caption_dropout={self.caption_dropout} must be in [0, 1)")
        if self.crop == "random" and self.cache_latents:
            raise ConfigError("crop=random needs fresh latents every step; also set cache_latents=false "
                              "(or keep crop=center)")
        for key in ("lora_rank", "max_steps", "batch_size", "gradient_accumulation_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} must be at least 1")
        if self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError("lora_alpha must be > 0 and lora_dropout in [0, 1)")
        from dishgen.diffusion import SCHEDULERS

        if self.validation_scheduler not in SCHEDULERS:
            raise ConfigError(f"validation_scheduler={self.validation_scheduler!r}; choose one of "
                              f"{', '.join(SCHEDULERS)}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ConfigError(f"snr_gamma={self.snr_gamma} must be > 0 (or none to turn it off)")


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
    config = resolve_run_config(LoraTrainConfig, out, presets=PRESETS, preset=preset, config_file=config_file,
                                overrides=overrides, resume=resume)
    if base:
        config = apply_overrides(config, {"base": base})
    if Path(config.base).expanduser().is_dir():  # a local folder: store it absolute (cwd may change)
        config = apply_overrides(config, {"base": str(Path(config.base).expanduser().resolve())})
    else:  # a hub id: offline and not cached fails here, in about a second, before torch and diffusers load
        from dishgen.hub import resolve_hub_model

        resolve_hub_model(config.base, what="base model", option="--base PATH", revision=config.revision,
                          marker="model_index.json")
    return config
