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
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from dishgen.errors import DishgenError
from dishgen.families import announce_choice
from dishgen.fileio import atomic_path, atomic_write_json

FAMILY = "cvae"
WEIGHTS_FILE = "model.safetensors"
KNOBS = ("temperature", "batch_size")


class CVAEModelError(DishgenError):
    """A cvae model folder that is missing, incomplete or inconsistent."""


class CVAEInputError(DishgenError, ValueError):
    """A generation request that cannot be served (empty prompt, bad knob value)."""


def save_model(folder: str | Path, model, *, text_encoder_id: str, training: dict[str, Any] | None = None,
               run_dir: str | Path | None = None, data: str | Path | None = None,
               evaluation: dict[str, Any] | None = None, step: int | None = None) -> Path:
    """Write a loadable model folder: ``config.json``, ``model.safetensors`` and (LSTM) ``vocab.json``;
    for the final export (``run_dir`` given) also the model card ``README.md`` and ``samples.png``.

    Args:
        folder: destination (created; existing files replaced atomically one by one).
        model: a :class:`dishgen.models.cvae.CVAE` (unwrapped).
        text_encoder_id: ``minilm``, ``clip:<id>`` or ``lstm``.
        training: the resolved training config, stored for provenance.
        run_dir: the run directory of a final export: its newest sample grid and log go in the card
            (:func:`dishgen.publish.model_card`); ``None`` (a checkpoint) writes no card.
        data: the training dataset (its hub id, when it has one, goes in the card's ``datasets``).
        evaluation: measured figures for the card (the export's ``metrics.json``).
        step: the training step of these weights, for the card.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "family": FAMILY,
        "model": asdict(model.config),
        "text_encoder": {"id": text_encoder_id, "dim": model.config.c_dim},
    }
    if model.text_model is not None:
        config["lstm"] = asdict(model.text_model.config)
        model.text_model.tokenizer.save(folder / "vocab.json")
    if training is not None:
        config["training"] = training
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"family": FAMILY})
    atomic_write_json(folder / "config.json", config)
    if run_dir is not None:
        from dishgen.fileio import atomic_write_text
        from dishgen.publish import export_card

        card, grid = export_card(FAMILY, training or {}, run=run_dir, step=step, data=data, model=config["model"],
                                 text_encoder=config["text_encoder"], evaluation=evaluation)
        atomic_write_text(folder / "README.md", str(card))
        if grid is not None:
            with atomic_path(folder / "samples.png") as tmp:
                shutil.copyfile(grid, tmp)
    return folder


def resolve_model_folder(location: str | Path) -> Path:
    """A run directory -> its ``model/`` export, else its latest complete checkpoint; a model folder -> itself."""
    from dishgen.train.common import RunDir

    path = Path(location)
    if not path.is_dir():
        raise CVAEModelError(f"cvae model {str(path)!r} is not a folder")
    if (path / WEIGHTS_FILE).is_file():
        return path
    if (path / "model" / WEIGHTS_FILE).is_file():
        return path / "model"
    checkpoints = RunDir(path, FAMILY).checkpoints()
    if checkpoints:
        return checkpoints[-1][1]
    raise CVAEModelError(
        f"{str(path)!r} holds no cvae weights: no {WEIGHTS_FILE}, no model/ export and no complete "
        "checkpoint-<step>/ folder (was the run stopped before its first checkpoint?)"
    )


def load_model(location: str | Path, device=None, dtype=None, *, attach_text_encoder: bool = True):
    """Load a :class:`dishgen.models.cvae.CVAE` from a model folder or run directory.

    Args:
        location: a model folder (``model/``, ``checkpoint-<step>/``) or a run directory.
        device: ``cpu`` (default), ``cuda``...
        dtype: ``fp32`` (default) or ``bf16``/``fp16``.
        attach_text_encoder: also load the frozen text encoder named in ``config.json``.

    Raises:
        CVAEModelError: the folder is not a complete cvae model.
        TextEncoderNotAvailable: the text encoder it was trained with is not installed here.
    """
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
    if text_model is None and attach_text_encoder:
        from dishgen.text import load_text_encoder

        encoder = load_text_encoder(encoder_id, device=device)
        if encoder.dim != model_config.c_dim:
            raise CVAEModelError(
                f"text encoder {encoder_id!r} gives {encoder.dim}-d vectors, but the model was trained on "
                f"{model_config.c_dim}-d ones"
            )
        model.attach_text_encoder(encoder)
    return model


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
    """A loaded cvae model behind the common :class:`dishgen.generation.Generator` interface."""

    family = FAMILY
    knobs = KNOBS
    defaults = {"temperature": 1.0}

    def __init__(self, model, folder: Path):
        self.model = model
        self.folder = folder

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
        images = self.model.generate(list(prompts), num_samples=num_images, seed=seed,
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
    model = load_model(location, device=device, dtype=dtype)
    folder = resolve_model_folder(location)
    announce_choice(location, folder)
    return CVAEGenerator(model, folder)
