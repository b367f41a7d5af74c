"""The LoRA trainer's checkpoint I/O: everything needed to resume exactly, as safetensors + JSON.

A ``checkpoint-<step>/`` holds ``pytorch_lora_weights.safetensors`` (diffusers' LoRA format, so the
checkpoint is itself a model reference) and the optimizer, LR-schedule, gradient-scaler (fp16) and
per-rank random states (:mod:`dishgen.train.state`), rather than accelerate's ``save_state``
files (``optimizer.bin``, ``random_states_0.pkl``), which are pickles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dishgen.errors import DishgenError


def save_checkpoint(folder: Path, *, save_lora_to, optimizer, lr_scheduler, scaler, rng_states: list[dict],
                    config: dict[str, Any], step: int, processes: int, prediction_type: str) -> None:
    """Fill ``folder`` (a temporary folder that the run directory renames when complete).

    Args:
        folder: where to write.
        save_lora_to: ``folder -> None``, writes the LoRA file.
        optimizer: the optimizer.
        lr_scheduler: the LR schedule.
        scaler: accelerate's gradient scaler (fp16), or ``None``.
        rng_states: every rank's random state, rank order.
        config: the run's config (written as ``config.json`` with ``"family": "lora"``).
        step: the step reached.
        processes: how many processes trained.
        prediction_type: what the UNet learns to predict.
    """
    from dishgen.fileio import atomic_write_json
    from dishgen.train.state import save_state

    save_lora_to(folder)
    save_state(folder / "optimizer", optimizer.state_dict())
    save_state(folder / "scheduler", lr_scheduler.state_dict())
    if scaler is not None:  # fp16
        save_state(folder / "scaler", scaler.state_dict())
    for rank, state in enumerate(rng_states):
        save_state(folder / f"rng_state_{rank}", state)
    atomic_write_json(folder / "config.json", {"family": "lora", **config})
    atomic_write_json(folder / "training_state.json", {"step": step, "processes": processes,
                                                       "prediction_type": prediction_type})


def load_checkpoint(folder: Path, *, unet, text_encoder, text_encoder_2, optimizer, lr_scheduler, scaler,
                    rank: int, reseed) -> None:
    """Restore what :func:`save_checkpoint` wrote into the (bare, peft-wrapped) models and the optimizer.

    Not accelerate's ``load_state``: its ``optimizer.bin`` / ``random_states_0.pkl`` are pickles.
    A rank the checkpoint has no random state for (resumed with more processes) calls ``reseed()``.

    Raises:
        DishgenError: an old pickle checkpoint, or files that do not fit the config.
    """
    from dishgen.train.lora_io import load_lora_into
    from dishgen.train.state import load_state, set_rng_state

    if (folder / "optimizer.bin").is_file() and not (folder / "optimizer.json").is_file():
        raise DishgenError(f"{folder} was written by an older dishgen in accelerate's pickle format, "
                           "which this version does not load; resume it with the dishgen that wrote it, "
                           "or start a new run")
    try:
        load_lora_into(folder, unet, text_encoder, text_encoder_2)
        optimizer.load_state_dict(load_state(folder / "optimizer"))
        lr_scheduler.load_state_dict(load_state(folder / "scheduler"))
        if scaler is not None and (folder / "scaler.json").is_file():
            scaler.load_state_dict(load_state(folder / "scaler"))
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise DishgenError(f"cannot resume from {folder}: {err}. Resume with the config it was trained "
                           "with, or remove that checkpoint folder to resume from the one before it") from err
    rng_file = folder / f"rng_state_{rank}"
    if Path(str(rng_file) + ".json").is_file():
        set_rng_state(load_state(rng_file))
    else:  # resumed with more processes than the checkpoint had: new ranks draw fresh noise
        reseed()
