"""The cGAN on disk, and its generator behind the common generation interface.

A saved cGAN folder (a training checkpoint or an export) holds ``config.json``::

    {"family": "cgan", "kind": "model" | "checkpoint", "step": N,
     "model": {CGANConfig fields}, "text_encoder": {"id": "minilm", "dim": 384}, "train": {...}}

and safetensors weights: ``model.safetensors`` (the EMA generator) in an export, or
``G.safetensors``, ``D.safetensors``, ``G_ema.safetensors`` (+ optimizer, scaler and RNG state) in
a ``checkpoint-<step>/`` folder. Generation always uses the EMA generator, and the text encoder
named in ``text_encoder.id`` (never one guessed from the embedding size).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dishgen import exports
from dishgen.exports import gan_metadata, state_dict_for_file, write_gan_export  # noqa: F401  (importable here too)
from dishgen.families import announce_choice, get_family
from dishgen.fileio import read_safetensors
from dishgen.generation import ModelReferenceError, check_knobs
from dishgen.models.cgan import CGANConfig, Generator
from dishgen.models.layers import noise_rows

FAMILY = "cgan"
KNOBS = get_family(FAMILY).knobs  # ("truncation", "batch_size")

# The writers of this format live in dishgen.exports (the trainers use them there).
model_metadata = exports.cgan_metadata
save_model = exports.save_cgan_model


def find_weights(location: str | Path) -> tuple[Path, Path]:
    """Resolve a run dir, checkpoint folder or export to ``(folder, generator weights file)``.

    A run directory gives its export ``model/`` when present, else its latest complete checkpoint.

    Raises:
        ModelReferenceError: the folder is not a cGAN, or holds no weights yet.
    """
    return find_gan_weights(location, FAMILY)


def find_gan_weights(location: str | Path, family: str) -> tuple[Path, Path]:
    """:func:`find_weights` for any GAN family saved in this layout (cGAN, FastGAN)."""
    path = Path(location)
    meta = read_model_config(path)
    if meta.get("family") != family:
        raise ModelReferenceError(
            f"{str(path)!r} holds a {meta.get('family')!r} model, not a {family} one; load it with its own family"
        )
    for name in ("model.safetensors", "G_ema.safetensors"):
        if (path / name).is_file():
            return path, path / name
    from dishgen.runs import final_or_latest

    found = final_or_latest(path, "model.safetensors")
    if found is not None:
        return find_gan_weights(found, family)
    raise ModelReferenceError(
        f"{str(path)!r} is a {family} run without an export (model/) or a complete checkpoint yet; "
        "train longer (checkpoint_every=...) or pass a checkpoint folder"
    )


def read_model_config(path: Path) -> dict[str, Any]:
    """A saved GAN folder's ``config.json``; a clear error when it is missing or unreadable."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelReferenceError(f"{str(path)!r} has no config.json; it is not a dishgen model folder")
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelReferenceError(f"{str(config)!r} could not be read: {err}") from err


def load_G_ema(location: str | Path) -> tuple[Generator, dict[str, Any]]:
    """Load the EMA generator of any saved cGAN folder (CPU, eval mode) and its metadata."""
    folder, weights = find_weights(location)
    meta = read_model_config(folder)
    if "model" not in meta or "text_encoder" not in meta:
        raise ModelReferenceError(f"{str(folder / 'config.json')!r} lacks 'model' or 'text_encoder'")
    from dishgen.config import config_from_dict

    model_config = config_from_dict(CGANConfig, meta["model"])
    G = Generator(model_config)
    G.load_state_dict(read_safetensors(weights))
    return G.eval().requires_grad_(False), meta


class CGANGenerator:
    """A trained cGAN generator with its text encoder: the common :class:`Generator` interface.

    Knobs: ``truncation`` (noise scale, 1 = none), ``anchor`` (0-1: how far a caption's embedding
    moves onto its nearest training captions, :mod:`dishgen.caption_bank`; default 1 for a model
    saved with its training captions, else 0) and ``batch_size`` (images per forward pass).
    Results depend only on the seed, not on ``batch_size``. After a call with anchoring,
    ``last_neighbours`` maps each caption to the training dishes it was drawn as, with weights.
    """

    family = FAMILY
    knobs = KNOBS

    def __init__(self, G: Generator, text_encoder, meta: dict[str, Any], device=None, dtype=None, bank=None):
        self.bank = bank
        self.defaults = {"truncation": 1.0, "anchor": 1.0 if bank is not None else 0.0}
        self.last_neighbours: dict[str, list[tuple[str, float]]] = {}
        self.device = torch.device(device or "cpu")
        self.dtype = dtype or torch.float32
        self.G = G.to(self.device).to(memory_format=torch.channels_last)
        if self.dtype != torch.float32:
            self.G = self.G.to(self.dtype)
        self.text_encoder = text_encoder
        self.meta = meta
        self.resolution = G.config.resolution

    @torch.inference_mode()
    def generate(self, prompts: list[str], num_images: int = 1, seed: int | None = None, *,
                 first_index: int = 0, **knobs: Any) -> list:
        """Generate ``num_images`` images per prompt (prompt-major) as PIL images.

        Image ``k`` of a call takes row ``k`` of the seed's noise stream, so
        ``generate([caption_k], seed=seed, first_index=k)`` makes that image again alone.

        Args:
            prompts: captions.
            num_images: images per caption.
            seed: makes the result repeatable; ``None`` draws a fresh seed.
            first_index: where this call starts in the seed's noise stream (default 0).
            **knobs: ``truncation`` (float >= 0, default 1), ``anchor`` (0-1, see the class) and
                ``batch_size`` (default 64).
        """
        from dishgen.images_tensor import tensor_to_pil

        knobs = check_knobs(self.family, self.knobs, knobs)  # also serves FastGAN
        truncation = float(knobs.get("truncation", 1.0))
        anchor = float(knobs.get("anchor", self.defaults["anchor"]))
        if anchor != 0 and self.bank is None:
            raise ValueError(f"anchor={anchor} needs the training captions saved with the model "
                             "(captions.safetensors); this model was saved without them: use anchor=0")
        batch_size = int(knobs.get("batch_size") or 64)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if not prompts or num_images < 1:
            return []
        unique = list(dict.fromkeys(prompts))
        vectors = self.text_encoder.encode(unique)  # (U, c_dim)
        self.last_neighbours = {}
        if anchor != 0:
            vectors, neighbours = self.bank.anchor(vectors, anchor, captions=unique)
            self.last_neighbours = dict(zip(unique, neighbours, strict=True))
        rows = torch.tensor([unique.index(p) for p in prompts]).repeat_interleave(num_images)
        c = vectors[rows]  # (N, c_dim), prompt-major
        if truncation < 0:
            raise ValueError(f"truncation={truncation} must be >= 0 (1 = no truncation)")
        if first_index < 0:
            raise ValueError(f"first_index={first_index} must be >= 0")
        # All noise up front on the CPU, so the images do not depend on batch_size or device.
        z = noise_rows(len(c), self.G.z_dim, seed, first_index) * truncation  # (N, z_dim)
        images = []
        for start in range(0, len(c), batch_size):
            zb = z[start : start + batch_size].to(self.device, self.dtype)
            cb = c[start : start + batch_size].to(self.device, self.dtype)
            images.extend(tensor_to_pil(self.G(zb, cb).float()))
        return images


def load_generator(location: str | Path, device=None, dtype=None, **options: Any) -> CGANGenerator:
    """Load a cGAN run dir, ``checkpoint-<step>/`` folder or export as a generator.

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
                              generator_class=CGANGenerator, device=device, dtype=dtype, options=options)


def load_gan_generator(location: str | Path, *, family: str, load_weights, find, generator_class, device, dtype,
                       options: dict[str, Any]):
    """What the GAN families' loaders share: check options, load G_ema, say which weights were picked,
    and attach the text encoder the model was trained with (refusing one of another width).

    Args:
        location: a run dir, ``checkpoint-<step>/`` folder or export.
        family: the family's name, for messages.
        load_weights: ``location -> (G_ema, metadata)`` of the family.
        find: ``location -> (weights file, config file)`` of the family.
        generator_class: the family's generator wrapper, called as ``(G, encoder, meta, device=, dtype=)``.
        device: the device asked for.
        dtype: the dtype asked for.
        options: loader options given (none are taken).
    """
    if options:
        raise ModelReferenceError(
            f"the {family} family takes no loader options, got {', '.join(sorted(options))}"
            + (" (LoRA files apply to diffusion models only)" if "lora" in options else "")
        )
    from dishgen.devices import resolve_device, resolve_dtype
    from dishgen.text import TextEncoderNotAvailable, load_text_encoder

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    G, meta = load_weights(location)
    announce_choice(location, find(location)[0])
    info = meta["text_encoder"]
    try:
        encoder = load_text_encoder(info["id"], device=torch_device)
    except TextEncoderNotAvailable as err:
        raise TextEncoderNotAvailable(
            f"{str(location)!r} was trained with text encoder {info['id']!r}, which cannot be loaded here: {err}"
        ) from err
    if encoder.dim != int(info["dim"]) or encoder.dim != G.c_dim:
        raise ModelReferenceError(
            f"text encoder {info['id']!r} gives {encoder.dim}-d embeddings but the model expects "
            f"{G.c_dim}-d; the encoder's weights changed since training"
        )
    from dishgen.caption_bank import CaptionBank, find_caption_bank

    bank_file = find_caption_bank(find(location)[0])
    bank = CaptionBank.load(bank_file) if bank_file is not None else None
    return generator_class(G, encoder, meta, device=torch_device, dtype=torch_dtype, bank=bank)
