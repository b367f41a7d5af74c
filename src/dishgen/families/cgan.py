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
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dishgen.families import announce_choice
from dishgen.generation import ModelReferenceError, check_knobs
from dishgen.models.cgan import CGANConfig, Generator
from dishgen.models.layers import noise_rows

FAMILY = "cgan"
KNOBS = ("truncation", "batch_size")


def state_dict_for_file(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as contiguous CPU tensors (safetensors refuses channels-last views)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def model_metadata(model_config: CGANConfig, text_encoder: dict[str, Any], *, kind: str, step: int,
                   train_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a saved folder."""
    return gan_metadata(FAMILY, model_config, text_encoder, kind=kind, step=step, train_config=train_config)


def gan_metadata(family: str, model_config, text_encoder: dict[str, Any], *, kind: str, step: int,
                 train_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a GAN family's saved folder (cGAN, FastGAN): family, kind, step,
    network shape, text encoder and training config."""
    from dishgen.config import config_to_dict

    return {"family": family, "kind": kind, "step": step, "model": config_to_dict(model_config),
            "text_encoder": {"id": text_encoder["id"], "dim": int(text_encoder["dim"])},
            "train": train_config or {}}


def save_model(folder: str | Path, G_ema: torch.nn.Module, model_config: CGANConfig, text_encoder: dict[str, Any],
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


def write_gan_export(folder: str | Path, G_ema: torch.nn.Module, meta: dict[str, Any], *,
                     run_dir: str | Path | None = None, data: str | Path | None = None) -> Path:
    """Write a GAN family's export atomically: ``model.safetensors``, ``config.json``, ``README.md``
    (the hub-parsed card of :func:`dishgen.publish.model_card`) and ``samples.png`` (the run's newest
    sample grid, which the card shows)."""
    from dishgen.fileio import atomic_directory
    from dishgen.publish import export_card

    card, grid = export_card(meta["family"], meta["train"], run=run_dir, step=meta["step"], data=data,
                             model=meta["model"], text_encoder=meta["text_encoder"])
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        save_file(state_dict_for_file(G_ema), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(str(card), encoding="utf-8")
        if grid is not None:
            shutil.copyfile(grid, tmp / "samples.png")
    return folder


def find_weights(location: str | Path) -> tuple[Path, Path]:
    """Resolve a run dir, checkpoint folder or export to ``(folder, generator weights file)``.

    A run directory gives its export ``model/`` when present, else its latest complete checkpoint.

    Raises:
        ModelReferenceError: the folder is not a cGAN, or holds no weights yet.
    """
    path = Path(location)
    meta = _read_config(path)
    if meta.get("family") != FAMILY:
        raise ModelReferenceError(
            f"{str(path)!r} holds a {meta.get('family')!r} model, not a cgan one; load it with its own family"
        )
    if (path / "model.safetensors").is_file():
        return path, path / "model.safetensors"
    if (path / "G_ema.safetensors").is_file():
        return path, path / "G_ema.safetensors"
    if (path / "model" / "model.safetensors").is_file():
        return find_weights(path / "model")
    from dishgen.train.common import RunDir

    checkpoints = RunDir(path, FAMILY).checkpoints()
    if checkpoints:
        return find_weights(checkpoints[-1][1])
    raise ModelReferenceError(
        f"{str(path)!r} is a cgan run without an export (model/) or a complete checkpoint yet; "
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
    """Load the EMA generator of any saved cGAN folder (CPU, eval mode) and its metadata."""
    folder, weights = find_weights(location)
    meta = _read_config(folder)
    if "model" not in meta or "text_encoder" not in meta:
        raise ModelReferenceError(f"{str(folder / 'config.json')!r} lacks 'model' or 'text_encoder'")
    from dishgen.config import config_from_dict

    model_config = config_from_dict(CGANConfig, meta["model"])
    G = Generator(model_config)
    G.load_state_dict(load_file(str(weights)))
    return G.eval().requires_grad_(False), meta


class CGANGenerator:
    """A trained cGAN generator with its text encoder: the common :class:`Generator` interface.

    Knobs: ``truncation`` (noise scale, 1 = none) and ``batch_size`` (images per forward pass).
    Results depend only on the seed, not on ``batch_size``.
    """

    family = FAMILY
    knobs = KNOBS
    defaults = {"truncation": 1.0}

    def __init__(self, G: Generator, text_encoder, meta: dict[str, Any], device=None, dtype=None):
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
            **knobs: ``truncation`` (float >= 0, default 1) and ``batch_size`` (default 64).
        """
        from dishgen.images_tensor import tensor_to_pil

        knobs = check_knobs(self.family, self.knobs, knobs)  # also serves FastGAN
        truncation = float(knobs.get("truncation", 1.0))
        batch_size = int(knobs.get("batch_size") or 64)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if not prompts or num_images < 1:
            return []
        unique = list(dict.fromkeys(prompts))
        vectors = self.text_encoder.encode(unique)  # (U, c_dim)
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
    return generator_class(G, encoder, meta, device=torch_device, dtype=torch_dtype)
