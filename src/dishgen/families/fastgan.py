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

from pathlib import Path
from typing import Any

from dishgen import exports
from dishgen.families.cgan import (
    CGANGenerator,
    find_gan_weights,
    load_gan_generator,
    read_model_config,
)
from dishgen.families.registry import get_family
from dishgen.fileio import read_safetensors
from dishgen.generation import ModelReferenceError
from dishgen.models.fastgan import FastGANConfig, Generator

FAMILY = "fastgan"
KNOBS = get_family(FAMILY).knobs  # ("truncation", "batch_size")

# The writers of this format live in dishgen.exports (the trainers use them there).
model_metadata = exports.fastgan_metadata
save_model = exports.save_fastgan_model


def find_weights(location: str | Path) -> tuple[Path, Path]:
    """Resolve a run dir, checkpoint folder or export to ``(folder, generator weights file)``.

    A run directory gives its export ``model/`` when present, else its latest complete checkpoint.

    Raises:
        ModelReferenceError: the folder is not a FastGAN, or holds no weights yet.
    """
    return find_gan_weights(location, FAMILY)


def load_G_ema(location: str | Path) -> tuple[Generator, dict[str, Any]]:
    """Load the EMA generator of any saved FastGAN folder (CPU, eval mode, float32) and its metadata.

    Weights saved in float16 (the bundled model) are cast up on load.
    """
    folder, weights = find_weights(location)
    meta = read_model_config(folder)
    if "model" not in meta or "text_encoder" not in meta:
        raise ModelReferenceError(f"{str(folder / 'config.json')!r} lacks 'model' or 'text_encoder'")
    from dishgen.config import config_from_dict

    G = Generator(config_from_dict(FastGANConfig, meta["model"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_safetensors(weights).items()}
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
