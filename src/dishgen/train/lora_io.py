"""The files of a LoRA run that other tools read: the LoRA in diffusers' safetensors format (written
by :func:`save_lora`, read back on resume by :func:`load_lora_into`) and the model card.
"""

from __future__ import annotations

from pathlib import Path

from dishgen.diffusion import LORA_WEIGHTS_NAME, DiffusionError
from dishgen.fileio import read_safetensors
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

    state = read_safetensors(Path(folder) / LORA_WEIGHTS_NAME)
    unet_state = convert_unet_state_dict_to_peft({k[5:]: v for k, v in state.items() if k.startswith("unet.")})
    result = set_peft_model_state_dict(unet, unet_state, adapter_name="default")
    if getattr(result, "unexpected_keys", None):
        raise DiffusionError(f"{folder}: LoRA keys do not fit the UNet: {result.unexpected_keys[:3]}")
    if text_encoder is not None:
        _set_state_dict_into_text_encoder(state, prefix="text_encoder.", text_encoder=text_encoder)
    if text_encoder_2 is not None:
        _set_state_dict_into_text_encoder(state, prefix="text_encoder_2.", text_encoder=text_encoder_2)


def write_model_card(path: Path, config: LoraTrainConfig, data: str | Path, step: int, *,
                     prediction_type: str = "epsilon", xl: bool = False) -> None:
    """README.md beside the LoRA: the hub-parsed card of :func:`dishgen.cards.model_card` (base model
    as a hub id, datasets, licence, tags, widget, losses from the run's log, the training config),
    showing the run's newest sample grid where it lies (``samples/step-<N>.png``).

    Args:
        path: the card's path (``RUN/README.md``).
        config: the run's config.
        data: the training dataset (its hub id, when it has one, goes in ``datasets``).
        step: the training step of the LoRA.
        prediction_type: what the UNet learnt to predict (the config's, else the base scheduler's).
        xl: an SDXL base.
    """
    from dishgen.cards import export_card
    from dishgen.config import config_to_dict
    from dishgen.fileio import atomic_write_text

    tags = ["stable-diffusion-xl" if xl else "stable-diffusion"]
    card, _ = export_card("lora", config_to_dict(config), run=path.parent, step=step, data=data,
                          grid_name=None, extra_tags=tags,
                          resolved={"prediction_type": prediction_type})
    atomic_write_text(path, str(card))
