"""The files of a LoRA run that other tools read: the LoRA in diffusers' safetensors format (written
by :func:`save_lora`, read back on resume by :func:`load_lora_into`) and the model card.
"""

from __future__ import annotations

from pathlib import Path

from dishgen.diffusion import LORA_WEIGHTS_NAME, DiffusionError
from dishgen.train.lora_config import LoraTrainConfig


def save_lora(folder: str | Path, unet, text_encoder=None, weight_name: str = LORA_WEIGHTS_NAME, *,
              text_encoder_2=None, xl: bool = False) -> Path:
    """Write the peft LoRA of ``unet`` (and the text encoders) as diffusers' LoRA file.

    The file is what ``StableDiffusionPipeline.save_lora_weights`` (``StableDiffusionXLPipeline``'s
    when ``xl``) writes, with the LoRA configs (rank, alpha, targets) in its metadata so that
    ``load_lora_weights`` restores the scale ``lora_alpha / lora_rank`` even when alpha differs from rank.

    Args:
        folder: where to write.
        unet: the peft-wrapped UNet.
        text_encoder: the (first) text encoder when it trained a LoRA.
        weight_name: the file name.
        text_encoder_2: SDXL's second text encoder when it trained a LoRA.
        xl: write SDXL's layout (keys ``unet.``, ``text_encoder.``, ``text_encoder_2.``).

    Returns:
        The file written.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    def layers_and_metadata(model):
        if model is None:
            return None, None
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(model, save_embedding_layers=False))
        return layers, model.peft_config["default"].to_dict()

    unet_layers, unet_meta = layers_and_metadata(unet)
    te_layers, te_meta = layers_and_metadata(text_encoder)
    if xl:
        te2_layers, te2_meta = layers_and_metadata(text_encoder_2)
        StableDiffusionXLPipeline.save_lora_weights(
            str(folder), unet_lora_layers=unet_layers, text_encoder_lora_layers=te_layers,
            text_encoder_2_lora_layers=te2_layers, weight_name=weight_name, safe_serialization=True,
            unet_lora_adapter_metadata=unet_meta, text_encoder_lora_adapter_metadata=te_meta,
            text_encoder_2_lora_adapter_metadata=te2_meta,
        )
        return Path(folder) / weight_name
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=unet_layers, text_encoder_lora_layers=te_layers,
        weight_name=weight_name, safe_serialization=True,
        unet_lora_adapter_metadata=unet_meta, text_encoder_lora_adapter_metadata=te_meta,
    )
    return Path(folder) / weight_name


def load_lora_into(folder: str | Path, unet, text_encoder=None, text_encoder_2=None) -> None:
    """Load a file written by :func:`save_lora` back into peft-wrapped models (exactly)."""
    from diffusers.training_utils import _set_state_dict_into_text_encoder
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / LORA_WEIGHTS_NAME))
    unet_state = convert_unet_state_dict_to_peft({k[5:]: v for k, v in state.items() if k.startswith("unet.")})
    result = set_peft_model_state_dict(unet, unet_state, adapter_name="default")
    if getattr(result, "unexpected_keys", None):
        raise DiffusionError(f"{folder}: LoRA keys do not fit the UNet: {result.unexpected_keys[:3]}")
    if text_encoder is not None:
        _set_state_dict_into_text_encoder(state, prefix="text_encoder.", text_encoder=text_encoder)
    if text_encoder_2 is not None:
        _set_state_dict_into_text_encoder(state, prefix="text_encoder_2.", text_encoder=text_encoder_2)


def write_model_card(path: Path, config: LoraTrainConfig, data: str | Path, step: int, log: list[dict],
                     prediction_type: str = "epsilon", xl: bool = False) -> None:
    """README.md with YAML metadata (base model, dataset, training settings) and how to use it."""
    import yaml

    from dishgen.fileio import atomic_write_text

    last = [r["loss"] for r in log[-100:] if "loss" in r]
    metadata = {
        "base_model": config.base,
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        "tags": ["stable-diffusion-xl" if xl else "stable-diffusion", "text-to-image", "diffusers", "lora",
                 "dishgen", "food"],
        "dataset": str(data),
        "training": {
            "steps": step, "resolution": config.resolution, "batch_size": config.batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "learning_rate": config.learning_rate, "lr_scheduler": config.lr_scheduler,
            "lora_rank": config.lora_rank, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
            "train_text_encoder": config.train_text_encoder, "mixed_precision": config.mixed_precision,
            "prediction_type": prediction_type, "snr_gamma": config.snr_gamma, "noise_offset": config.noise_offset,
            "caption_dropout": config.caption_dropout, "seed": config.seed,
            **({"vae": config.vae} if config.vae else {}),
        },
    }
    # a prediction type other than the base's must reach the sampler too (dishgen reads config.json)
    scheduler_line = (f"\npipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, "
                      f"prediction_type=\"{config.prediction_type}\")  # as trained" if config.prediction_type else "")
    pipeline_class = "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline"
    trained = (" (UNet and text encoders)" if xl else " (UNet and text encoder)") if config.train_text_encoder \
        else " (UNet only)"
    loss_line = f"Mean training loss over the last {len(last)} steps: {sum(last) / len(last):.4f}." if last else ""
    text = f"""---
{yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).strip()}
---

# LoRA: Serbian dishes on {config.base}

A LoRA (rank {config.lora_rank}, alpha {config.lora_alpha}) fine-tuned with `dishgen train lora` for
{step} steps at {config.resolution} px on the dataset `{data}`{trained}.
{loss_line}

## Use

```bash
dishgen generate "Sarma, cabbage rolls in a clay pot" --model {path.parent} --steps 30 --seed 0
```

```python
from diffusers import {pipeline_class}
pipe = {pipeline_class}.from_pretrained("{config.base}"){scheduler_line}
pipe.load_lora_weights("{path.parent}")   # reads {LORA_WEIGHTS_NAME}
image = pipe("Sarma, cabbage rolls in a clay pot").images[0]
```

Validation images for fixed prompts and seeds are in `samples/`, training curves in `plots/`,
the full configuration in `config.json`.
"""
    atomic_write_text(path, text)
