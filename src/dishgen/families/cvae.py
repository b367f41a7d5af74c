"""Saving, loading and generating with conditional VAE models.

A cvae model folder (a ``checkpoint-<step>/`` or the final ``model/`` export) holds::

    config.json          {"family": "cvae", "model": {...}, "text_encoder": {"id", "dim"},
                          "lstm": {...} (LSTM only), "training": {...}}
    model.safetensors    the weights (the LSTM text encoder's included)
    vocab.json           the LSTM's vocabulary (LSTM only)

``load_generator`` accepts such a folder or a run directory (its ``model/`` export if present,
else its latest complete checkpoint) and returns a :class:`dishgen.generation.Generator`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from dishgen import exports
from dishgen.errors import DishgenError
from dishgen.families import announce_choice, get_family

FAMILY = "cvae"
KNOBS = get_family(FAMILY).knobs  # ("temperature", "batch_size")

# The writers of this format live in dishgen.exports (the trainers use them there).
WEIGHTS_FILE = exports.CVAE_WEIGHTS_FILE
save_model = exports.save_cvae_model


class CVAEModelError(DishgenError):
    """A cvae model folder that is missing, incomplete or inconsistent."""


class CVAEInputError(DishgenError, ValueError):
    """A generation request that cannot be served (empty prompt, bad knob value)."""


def resolve_model_folder(location: str | Path) -> Path:
    """A run directory -> its ``model/`` export, else its latest complete checkpoint; a model folder -> itself."""
    from dishgen.runs import final_or_latest

    path = Path(location)
    if not path.is_dir():
        raise CVAEModelError(f"cvae model {str(path)!r} is not a folder")
    if (path / WEIGHTS_FILE).is_file():
        return path
    found = final_or_latest(path, WEIGHTS_FILE)
    if found is not None:
        return found
    raise CVAEModelError(
        f"{str(path)!r} holds no cvae weights: no {WEIGHTS_FILE}, no model/ export and no complete "
        "checkpoint-<step>/ folder (was the run stopped before its first checkpoint?)"
    )


def load_model(location: str | Path, device=None, dtype=None, *, attach_text_encoder: bool = True):
    """Load the network, a :class:`dishgen.models.cvae.CVAE`, from a model folder or run directory.

    The network takes caption vectors (or LSTM token ids), not captions; to go from captions use
    :func:`load_generator` and its :meth:`CVAEGenerator.text_inputs`, as for the GAN families.

    Args:
        location: a model folder (``model/``, ``checkpoint-<step>/``) or a run directory.
        device: ``cpu`` (default), ``cuda``...
        dtype: ``fp32`` (default) or ``bf16``/``fp16``.
        attach_text_encoder: also load the frozen text encoder named in ``config.json`` and attach
            it, so the deprecated ``model.generate(["caption"])`` keeps working until dishgen
            0.2.0 (which drops it and this argument). Pass ``False`` to load the network alone.

    Raises:
        CVAEModelError: the folder is not a complete cvae model.
        TextEncoderNotAvailable: the text encoder it was trained with is not installed here.
    """
    model, encoder_id = _load_network(location, device, dtype)
    if model.text_model is None and attach_text_encoder:
        model._attach_text_encoder(_load_frozen_encoder(encoder_id, model))
    return model


def _load_network(location: str | Path, device, dtype):
    """The CVAE of a model folder or run directory, and the id of the text encoder it was trained with."""
    from dishgen.devices import resolve_device, resolve_dtype
    from dishgen.models.cvae import CVAE, CVAEModelConfig
    from dishgen.text.lstm import LSTMConfig, LSTMTextEncoder, VocabularyError, WordTokenizer

    folder = resolve_model_folder(location)
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CVAEModelError(f"{str(config_path)!r} could not be read: {err}") from err
    if config.get("family") != FAMILY:
        raise CVAEModelError(f"{str(folder)!r} holds a {config.get('family')!r} model, not a cvae")
    for key in ("model", "text_encoder"):
        if key not in config:
            raise CVAEModelError(f"{str(config_path)!r} has no {key!r} entry; it was not written by dishgen's cvae trainer")
    from dishgen.config import ConfigError, config_from_dict

    try:
        model_config = config_from_dict(CVAEModelConfig, config["model"])
    except (ConfigError, ValueError) as err:
        raise CVAEModelError(f"{str(config_path)!r}: bad model config: {err}") from err
    encoder_id = config["text_encoder"]["id"]
    text_model = None
    if encoder_id == "lstm":
        try:
            tokenizer = WordTokenizer.load(folder / "vocab.json")
        except VocabularyError as err:
            raise CVAEModelError(str(err)) from err
        text_model = LSTMTextEncoder(LSTMConfig(**config["lstm"]), tokenizer)
    model = CVAE(model_config, text_model)
    # A bundled model keeps only what generation needs (no image encoder), in float16.
    generation_only = config.get("weights", {}).get("parts") == "generation-only"
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
        missing, unexpected = model.load_state_dict(state, strict=not generation_only)
        if generation_only and (unexpected or any(not k.startswith("encoder.") for k in missing)):
            raise ValueError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    except Exception as err:  # safetensors header errors, missing/unexpected keys, shape mismatches
        raise CVAEModelError(f"{str(folder / WEIGHTS_FILE)!r} does not match its config.json: {err}") from err
    if generation_only:
        model.encoder = _LeftOutEncoder(folder)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    model.to(device=device, dtype=torch_dtype).eval().requires_grad_(False)
    return model, encoder_id


def _load_frozen_encoder(encoder_id: str, model):
    """The frozen text encoder a model was trained with, on the model's device; refuses another width."""
    from dishgen.text import load_text_encoder

    encoder = load_text_encoder(encoder_id, device=next(model.parameters()).device)
    if encoder.dim != model.config.c_dim:
        raise CVAEModelError(
            f"text encoder {encoder_id!r} gives {encoder.dim}-d vectors, but the model was trained on "
            f"{model.config.c_dim}-d ones"
        )
    return encoder


class _LeftOutEncoder(nn.Module):
    """Stands in for the image encoder of a generation-only export, with a clear error if used."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def forward(self, *args, **kwargs):
        raise CVAEModelError(
            f"{self.folder} is a generation-only export: its image encoder was left out to keep it small, "
            "so it can generate images but not encode or reconstruct them; use the training run's model/ folder"
        )


class CVAEGenerator:
    """A loaded cvae model with its text encoder: the common :class:`dishgen.generation.Generator` interface.

    Shaped like :class:`dishgen.families.cgan.CGANGenerator`: the network (``model``) takes caption
    vectors, and this wrapper encodes the captions with ``text_encoder``, the frozen encoder the
    model was trained with (``None`` for a model that trained its own LSTM: it takes token ids).
    """

    family = FAMILY
    knobs = KNOBS
    defaults = {"temperature": 1.0}

    def __init__(self, model, folder: Path, text_encoder=None):
        self.model = model
        self.folder = folder
        # (a model from the deprecated load_model(..., attach_text_encoder=True) brings its encoder along)
        self.text_encoder = text_encoder if text_encoder is not None else model.frozen_text_encoder
        if self.text_encoder is None and model.text_model is None:
            raise CVAEModelError(f"{folder}: a cvae without its own LSTM needs the frozen text encoder it was trained with")

    def text_inputs(self, captions: list[str]):
        """Captions -> the model's ``text`` input on its device: caption vectors (B, c_dim) from the
        frozen encoder, or (B, T) token ids for a model with its own LSTM."""
        device = next(self.model.parameters()).device
        lstm = self.model.text_model
        if lstm is not None:
            return lstm.tokenizer.encode(list(captions), lstm.config.max_length).to(device)
        return self.text_encoder.encode(list(captions)).to(device)

    def generate(self, prompts: list[str], num_images: int = 1, seed: int | None = None, *,
                 first_index: int = 0, **knobs: Any) -> list:
        """Sample ``num_images`` images per prompt from the prior (no image is used).

        Image ``k`` of a call (prompt-major) takes row ``k`` of the seed's noise stream, so
        ``generate([caption_k], seed=seed, first_index=k)`` makes that image again alone.

        Args:
            prompts: captions.
            num_images: images per caption.
            seed: repeatable noise; the same seed gives the same images for any ``batch_size``.
            first_index: where this call starts in the seed's noise stream (default 0).
            **knobs: ``temperature`` (latent noise scale, default 1.0) and ``batch_size`` (default 64).

        Returns:
            ``len(prompts) * num_images`` PIL images, prompt-major.
        """
        from dishgen.generation import check_knobs
        from dishgen.images_tensor import tensor_to_pil

        knobs = check_knobs(FAMILY, KNOBS, knobs)
        if isinstance(prompts, str):
            prompts = [prompts]
        bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
        if bad:
            raise CVAEInputError(f"prompts must be non-empty strings; got {bad[0]!r}")
        if num_images < 1:
            raise CVAEInputError(f"num_images must be at least 1; got {num_images}")
        temperature = float(knobs.get("temperature", 1.0))
        if not temperature >= 0:
            raise CVAEInputError(f"temperature must be >= 0; got {temperature}")
        batch_size = int(knobs.get("batch_size", 64))
        if batch_size < 1:
            raise CVAEInputError(f"batch_size must be at least 1; got {batch_size}")
        if not prompts:
            return []
        if first_index < 0:
            raise CVAEInputError(f"first_index must be >= 0; got {first_index}")
        images = self.model.generate(self.text_inputs(prompts), num_samples=num_images, seed=seed,
                                     temperature=temperature, batch_size=batch_size, first_index=first_index)
        return tensor_to_pil(images)


def load_generator(location: str | Path, device=None, dtype=None, **options: Any) -> CVAEGenerator:
    """Load a cvae run directory, checkpoint or exported model as a Generator.

    Args:
        location: a run directory (its ``model/`` export if present, else its latest checkpoint),
            a ``checkpoint-<step>/`` folder or an exported model folder.
        device: ``cpu`` (default), ``cuda``, ``auto``...
        dtype: ``fp32`` (default), ``bf16``, ``fp16`` (CUDA only).
        **options: none are taken; any given is an error (for example ``lora``, which only
            diffusion models take).
    """
    if options:
        raise CVAEModelError(
            f"the cvae family takes no loader options; got {', '.join(sorted(options))} "
            "(those belong to diffusion models)"
        )
    model, encoder_id = _load_network(location, device, dtype)
    encoder = None if model.text_model is not None else _load_frozen_encoder(encoder_id, model)
    folder = resolve_model_folder(location)
    announce_choice(location, folder)
    return CVAEGenerator(model, folder, encoder)
