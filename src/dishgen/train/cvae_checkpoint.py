"""The cVAE trainer's checkpoint I/O, beside its loop: a ``checkpoint-<step>/`` folder is a loadable
model folder (:func:`dishgen.exports.save_cvae_model`) plus the optimizer, LR scheduler and RNG
state needed to resume exactly (safetensors + JSON, no pickle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dishgen.fileio import damaged_checkpoint_hint, read_safetensors


def save_checkpoint(folder: Path, model, optimizer, scheduler, *, step: int, epoch: float, text_encoder_id: str,
                    training: dict[str, Any]) -> None:
    """Fill ``folder`` (a temporary folder that the run directory renames) with the resumable state.

    Args:
        folder: the folder to fill.
        model: the unwrapped :class:`dishgen.models.cvae.CVAE`.
        optimizer: its optimizer.
        scheduler: its LR scheduler.
        step: the global step.
        epoch: the (fractional) epoch at ``step``.
        text_encoder_id: the text encoder the model was trained with.
        training: the resolved training config.
    """
    from dishgen.exports import save_cvae_model
    from dishgen.fileio import atomic_write_json
    from dishgen.train.state import rng_state, save_state

    save_cvae_model(folder, model, text_encoder_id=text_encoder_id, training=training)
    save_state(folder / "optimizer", optimizer.state_dict())
    save_state(folder / "scheduler", scheduler.state_dict())
    save_state(folder / "rng", rng_state())
    atomic_write_json(folder / "trainer_state.json", {"step": step, "epoch": epoch})


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> None:
    """Restore what :func:`save_checkpoint` wrote: weights, optimizer, scheduler and RNG state."""
    from dishgen.train.state import load_state, set_rng_state

    with damaged_checkpoint_hint(folder):
        model.load_state_dict(read_safetensors(folder / "model.safetensors"))
        optimizer.load_state_dict(load_state(folder / "optimizer"))
        scheduler.load_state_dict(load_state(folder / "scheduler"))
        set_rng_state(load_state(folder / "rng"))
