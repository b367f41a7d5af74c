"""FastGAN on disk, and its generator behind the common generation interface.

A saved FastGAN folder (a training checkpoint or an export) holds ``config.json``::

    {"family": "fastgan", "kind": "model" | "checkpoint", "step": N,
     "model": {FastGANConfig fields}, "text_encoder": {"id": "minilm", "dim": 384}, "train": {...}}

and safetensors weights: ``model.safetensors`` (the EMA generator) in an export, or
``G.safetensors``, ``D.safetensors``, ``G_ema.safetensors`` (+ optimizer, scaler and RNG state) in
a ``checkpoint-<step>/`` folder: the cGAN's layout. Generation uses the EMA generator and the text
encoder named in ``text_encoder.id``; it runs exactly as the cGAN's (same knobs, same noise stream),
so that code is shared (:class:`dishgen.families.cgan.CGANGenerator`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from dishgen.families.cgan import (
    CGANGenerator,
    gan_metadata,
    load_gan_generator,
    write_gan_export,
)
from dishgen.generation import ModelReferenceError
from dishgen.models.fastgan import FastGANConfig, Generator

FAMILY = "fastgan"
KNOBS = ("truncation", "batch_size")


def model_metadata(model_config: FastGANConfig, text_encoder: dict[str, Any], *, kind: str, step: int,
                   train_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a saved folder."""
    return gan_metadata(FAMILY, model_config, text_encoder, kind=kind, step=step, train_config=train_config)


def save_model(folder: str | Path, G_ema: torch.nn.Module, model_config: FastGANConfig, text_encoder: dict[str, Any],
               *, step: int, train_config: dict[str, Any] | None = None, run_dir: str | Path | None = None,
               data: str | Path | None = None) -> Path:
    """Export the EMA generator to ``folder`` (written atomically): config.json, weights, model card.

    Args:
        folder: the export folder (replaced if it exists).
        G_ema: the averaged generator.
        model_config: its shape.
        text_encoder: ``{"id": ..., "dim": ...}`` of the encoder it was trained with.
        step: training step of these weights.
        train_config: the resolved training config, kept for provenance.
        run_dir: the run directory, whose newest sample grid and log the card shows.
        data: the training dataset (its hub id, when it has one, goes in the card's ``datasets``).
    """
    meta = model_metadata(model_config, text_encoder, kind="model", step=step, train_config=train_config)
    return write_gan_export(folder, G_ema, meta, run_dir=run_dir, data=data)


def find_weights(location: str | Path) -> tuple[Path, Path]:
    """Resolve a run dir, checkpoint folder or export to ``(folder, generator weights file)``.

    A run directory gives its export ``model/`` when present, else its latest complete checkpoint.

    Raises:
        ModelReferenceError: the folder is not a FastGAN, or holds no weights yet.
    """
    path = Path(location)
    meta = _read_config(path)
    if meta.get("family") != FAMILY:
        raise ModelReferenceError(
            f"{str(path)!r} holds a {meta.get('family')!r} model, not a fastgan one; load it with its own family"
        )
    for name in ("model.safetensors", "G_ema.safetensors"):
        if (path / name).is_file():
            return path, path / name
    if (path / "model" / "model.safetensors").is_file():
        return find_weights(path / "model")
    from dishgen.train.common import RunDir

    checkpoints = RunDir(path, FAMILY).checkpoints()
    if checkpoints:
        return find_weights(checkpoints[-1][1])
    raise ModelReferenceError(
        f"{str(path)!r} is a fastgan run without an export (model/) or a complete checkpoint yet; "
        "train longer (checkpoint_every=...) or pass a checkpoint folder"
    )


def _read_config(path: Path) -> dict[str, Any]:
    config = path / "config.json"
    if not config.is_file():
        raise ModelReferenceError(f"{str(path)!r} has no config.json; it is not a dishgen model folder")
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelReferenceError(f"{str(config)!r} could not be read: {err}") from err


def load_G_ema(location: str | Path) -> tuple[Generator, dict[str, Any]]:
    """Load the EMA generator of any saved FastGAN folder (CPU, eval mode, float32) and its metadata.

    Weights saved in float16 (the bundled model) are cast up on load.
    """
    folder, weights = find_weights(location)
    meta = _read_config(folder)
    if "model" not in meta or "text_encoder" not in meta:
        raise ModelReferenceError(f"{str(folder / 'config.json')!r} lacks 'model' or 'text_encoder'")
    from dishgen.config import config_from_dict

    G = Generator(config_from_dict(FastGANConfig, meta["model"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    G.load_state_dict(state)
    return G.eval().requires_grad_(False), meta


class FastGANGenerator(CGANGenerator):
    """A trained FastGAN generator with its text encoder: the common :class:`Generator` interface.

    Knobs: ``truncation`` (noise scale, 1 = none) and ``batch_size`` (images per forward pass).
    Image ``k`` of a seeded call takes row ``k`` of the seed's noise stream (``first_index``).
    """

    family = FAMILY
    knobs = KNOBS


def load_generator(location: str | Path, device=None, dtype=None, **options: Any) -> FastGANGenerator:
    """Load a FastGAN run dir, ``checkpoint-<step>/`` folder or export as a generator.

    Args:
        location: the folder.
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto``.
        dtype: ``fp32`` (default) or ``bf16`` (``fp16`` on CUDA).
        **options: none are taken; any given is an error (``lora`` is for diffusion models).

    Raises:
        ModelReferenceError: unknown options, another family, or no weights.
        TextEncoderNotAvailable: the model's text encoder is not installed here.
    """
    return load_gan_generator(location, family=FAMILY, load_weights=load_G_ema, find=find_weights,
                              generator_class=FastGANGenerator, device=device, dtype=dtype, options=options)
