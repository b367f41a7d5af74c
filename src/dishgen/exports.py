"""The families' saved folders, as the trainers write them: final exports and checkpoint metadata.

Neutral ground between ``train/`` (which writes these folders) and ``families/`` (whose loaders
read them and document their layout), so that neither imports the other. The families re-export
these names (``dishgen.families.cgan.save_model`` is :func:`save_cgan_model`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from dishgen.fileio import atomic_path, atomic_write_json

if TYPE_CHECKING:
    from dishgen.models.cgan import CGANConfig
    from dishgen.models.fastgan import FastGANConfig

CVAE_WEIGHTS_FILE = "model.safetensors"


# -- GAN families (cGAN, FastGAN) -----------------------------------------------------------------


def state_dict_for_file(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as contiguous CPU tensors (safetensors refuses channels-last views)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def cgan_metadata(model_config: CGANConfig, text_encoder: dict[str, Any], *, kind: str, step: int,
                   train_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a saved folder."""
    return gan_metadata("cgan", model_config, text_encoder, kind=kind, step=step, train_config=train_config)


def gan_metadata(family: str, model_config, text_encoder: dict[str, Any], *, kind: str, step: int,
                 train_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a GAN family's saved folder (cGAN, FastGAN): family, kind, step,
    network shape, text encoder and training config."""
    from dishgen.config import config_to_dict

    return {"family": family, "kind": kind, "step": step, "model": config_to_dict(model_config),
            "text_encoder": {"id": text_encoder["id"], "dim": int(text_encoder["dim"])},
            "train": train_config or {}}


def save_cgan_model(folder: str | Path, G_ema: torch.nn.Module, model_config: CGANConfig, text_encoder: dict[str, Any],
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
    meta = cgan_metadata(model_config, text_encoder, kind="model", step=step, train_config=train_config)
    return write_gan_export(folder, G_ema, meta, run_dir=run_dir, data=data)


def write_gan_export(folder: str | Path, G_ema: torch.nn.Module, meta: dict[str, Any], *,
                     run_dir: str | Path | None = None, data: str | Path | None = None) -> Path:
    """Write a GAN family's export atomically: ``model.safetensors``, ``config.json``, ``README.md``
    (the hub-parsed card of :func:`dishgen.cards.model_card`), ``samples.png`` (the run's newest
    sample grid, which the card shows) and the run's training captions, ``captions.safetensors``
    (:mod:`dishgen.caption_bank`), when it has them."""
    from dishgen.caption_bank import CAPTION_BANK_FILE
    from dishgen.cards import export_card
    from dishgen.fileio import atomic_directory

    card, grid = export_card(meta["family"], meta["train"], run=run_dir, step=meta["step"], data=data,
                             model=meta["model"], text_encoder=meta["text_encoder"])
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        save_file(state_dict_for_file(G_ema), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(str(card), encoding="utf-8")
        if grid is not None:
            shutil.copyfile(grid, tmp / "samples.png")
        if run_dir is not None and (Path(run_dir) / CAPTION_BANK_FILE).is_file():
            shutil.copyfile(Path(run_dir) / CAPTION_BANK_FILE, tmp / CAPTION_BANK_FILE)
    return folder


def fastgan_metadata(model_config: FastGANConfig, text_encoder: dict[str, Any], *, kind: str, step: int,
                   train_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a saved folder."""
    return gan_metadata("fastgan", model_config, text_encoder, kind=kind, step=step, train_config=train_config)


def save_fastgan_model(folder: str | Path, G_ema: torch.nn.Module, model_config: FastGANConfig,
                       text_encoder: dict[str, Any], *, step: int, train_config: dict[str, Any] | None = None,
                       run_dir: str | Path | None = None, data: str | Path | None = None) -> Path:
    """:func:`save_cgan_model` for a FastGAN: the same files and arguments, ``family`` set to ``fastgan``."""
    meta = fastgan_metadata(model_config, text_encoder, kind="model", step=step, train_config=train_config)
    return write_gan_export(folder, G_ema, meta, run_dir=run_dir, data=data)


# -- conditional VAE ----------------------------------------------------------------------------


def save_cvae_model(folder: str | Path, model, *, text_encoder_id: str, training: dict[str, Any] | None = None,
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
            (:func:`dishgen.cards.model_card`); ``None`` (a checkpoint) writes no card.
        data: the training dataset (its hub id, when it has one, goes in the card's ``datasets``).
        evaluation: measured figures for the card (the export's ``metrics.json``).
        step: the training step of these weights, for the card.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "family": "cvae",
        "model": asdict(model.config),
        "text_encoder": {"id": text_encoder_id, "dim": model.config.c_dim},
    }
    if model.text_model is not None:
        config["lstm"] = asdict(model.text_model.config)
        model.text_model.tokenizer.save(folder / "vocab.json")
    if training is not None:
        config["training"] = training
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / CVAE_WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"family": "cvae"})
    atomic_write_json(folder / "config.json", config)
    if run_dir is not None:
        from dishgen.cards import export_card
        from dishgen.fileio import atomic_write_text

        card, grid = export_card("cvae", training or {}, run=run_dir, step=step, data=data, model=config["model"],
                                 text_encoder=config["text_encoder"], evaluation=evaluation)
        atomic_write_text(folder / "README.md", str(card))
        if grid is not None:
            with atomic_path(folder / "samples.png") as tmp:
                shutil.copyfile(grid, tmp)
    return folder
