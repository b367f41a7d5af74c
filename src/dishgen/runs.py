"""The run-directory layout: written by ``train/``, read by generation and evaluation.

A run directory (ARCHITECTURE.md) holds everything one run produced, and nothing else::

    RUN/config.json              resolved config, with "family"
    RUN/log.jsonl                one row per logged step
    RUN/plots/*.png              loss / LR / grad-norm curves
    RUN/samples/step-<N>.png     sample grids for fixed prompts and noise
    RUN/checkpoint-<N>/          all state to resume exactly (safetensors + JSON, no pickle)
    RUN/model/                   the final export: config.json + model.safetensors + README.md

This module is neutral ground: the trainers write through :class:`RunDir`, and the families'
loaders, the evaluation harness and the web page read through it (:meth:`RunDir.checkpoints`,
:func:`recorded_step`, :func:`final_or_latest`, :func:`list_runs`), so neither side imports the other.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from dishgen.errors import DishgenError
from dishgen.fileio import (
    append_jsonl,
    atomic_directory,
    atomic_write_json,
    read_jsonl,
    repair_jsonl,
)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# What fileio.atomic_directory leaves behind when it is killed: ".NAME.tmp-XXXX" (being written)
# or ".NAME.old-PID" (the folder it was replacing, between its two renames).
LEFTOVER_RE = re.compile(r"^\.(?P<name>checkpoint-\d+|model)\.(?P<kind>tmp|old)-.+$")
logger = logging.getLogger(__name__)


class RunDirError(DishgenError, ValueError):
    """A run directory that cannot be used as asked (exists without --resume, wrong family...)."""


class RunDir:
    """A training run's output folder."""

    def __init__(self, path: str | Path, family: str):
        self.path = Path(path)
        self.family = family

    # -- set-up ---------------------------------------------------------------------------------
    def prepare(self, config: dict[str, Any], *, resume: bool) -> int | None:
        """Create the folder (or check it for ``--resume``) and write the resolved config.

        Returns:
            The step of the checkpoint to resume from, or ``None`` for a fresh run.

        Raises:
            RunDirError: the folder holds another run and ``resume`` is false, or it belongs to
                another family.
        """
        saved = self.path / "config.json"
        if saved.is_file():  # another family's run: name the command that resumes it
            from dishgen.config import ConfigError, read_run_config

            try:
                read_run_config(self.path, self.family)
            except ConfigError as err:
                raise RunDirError(str(err)) from None
        self.remove_leftovers()
        latest = self.latest_checkpoint()
        if saved.is_file():
            if not resume and (latest is not None or (self.path / "log.jsonl").exists()):
                raise RunDirError(
                    f"{str(self.path)!r} already holds a run; pass --resume to continue it or choose another --out"
                )
        elif resume and latest is None:
            raise RunDirError(f"--resume: {str(self.path)!r} holds no run to resume")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(saved, {"family": self.family, **config})
        if latest is None:
            # A fresh run (or one killed before its first checkpoint): start the log over.
            (self.path / "log.jsonl").unlink(missing_ok=True)
            return None
        repair_jsonl(self.path / "log.jsonl")
        self.truncate_log(latest)
        return latest

    def remove_leftovers(self) -> list[Path]:
        """Remove the temporary folders of checkpoint (and export) writes that a kill interrupted.

        A complete checkpoint is never touched. A folder that was being replaced when the kill
        came (``.checkpoint-N.old-PID`` with no ``checkpoint-N`` beside it) is put back instead.

        Returns:
            The folders removed.
        """
        removed = []
        if not self.path.is_dir():
            return removed
        for child in sorted(self.path.iterdir()):
            match = LEFTOVER_RE.match(child.name)
            if not match or not child.is_dir() or child.is_symlink():
                continue
            final = self.path / match["name"]
            if match["kind"] == "old" and not final.exists():
                os.replace(child, final)
                logger.warning("restored %s from %s (a write that replaced it was killed)", final, child.name)
                continue
            shutil.rmtree(child)
            removed.append(child)
            logger.warning("removed %s, left by a %s write that did not finish", child,
                           "checkpoint" if match["name"].startswith("checkpoint") else "model export")
        return removed

    # -- log ------------------------------------------------------------------------------------
    def log(self, row: dict[str, Any]) -> None:
        """Append one row (must hold ``step``) to ``log.jsonl``."""
        append_jsonl(self.path / "log.jsonl", [row])

    def read_log(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "log.jsonl")

    def truncate_log(self, step: int) -> None:
        """Drop log rows after ``step`` (written after the checkpoint we resume from)."""
        rows = self.read_log()
        keep = [r for r in rows if r.get("step", 0) <= step]
        if len(keep) != len(rows):
            path = self.path / "log.jsonl"
            path.unlink()
            append_jsonl(path, keep)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        found = []
        if self.path.is_dir():
            for child in self.path.iterdir():
                match = CHECKPOINT_RE.match(child.name)
                if match and child.is_dir() and (child / "COMPLETE").is_file():
                    found.append((int(match.group(1)), child))
        return sorted(found)

    def latest_checkpoint(self) -> int | None:
        found = self.checkpoints()
        return found[-1][0] if found else None

    def checkpoint_path(self, step: int) -> Path:
        return self.path / f"checkpoint-{step}"

    def write_checkpoint(self, step: int, writer, *, keep: int | None = None) -> Path:
        """Write ``checkpoint-<step>/`` atomically.

        Args:
            step: the global step.
            writer: ``writer(folder)`` fills the (temporary) folder.
            keep: keep at most this many checkpoints (oldest removed); ``None`` keeps all.

        A failure while writing (a full disk, a kill) leaves the previous checkpoints intact.
        """
        final = self.checkpoint_path(step)
        with atomic_directory(final) as tmp:
            writer(tmp)
            (tmp / "COMPLETE").write_text(str(step))
        if keep:
            for _, old in self.checkpoints()[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final


def recorded_step(folder: str | Path) -> int | None:
    """The training step a model folder says it holds: ``checkpoint-<N>`` in its name, else the
    ``step`` of its ``config.json``, ``trainer_state.json`` or ``metrics.json``; ``None`` if none says."""
    folder = Path(folder)
    name, _, number = folder.name.partition("-")
    if name == "checkpoint" and number.isdigit():
        return int(number)
    for file_name in ("config.json", "trainer_state.json", "metrics.json"):
        try:
            step = json.loads((folder / file_name).read_text(encoding="utf-8")).get("step")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(step, int) and not isinstance(step, bool):
            return step
    return None


def list_runs(root: str | Path) -> list[Path]:
    """The run directories directly inside ``root`` (folders holding a ``config.json``), in the
    order of their ``config.json`` paths."""
    return [config.parent for config in sorted(Path(root).glob("*/config.json"))]


def final_or_latest(run: str | Path, weights_file: str) -> Path | None:
    """The folder a loader takes from a run directory: its final export ``model/`` when that holds
    ``weights_file``, else its latest complete checkpoint; ``None`` when it has neither yet."""
    run = Path(run)
    if (run / "model" / weights_file).is_file():
        return run / "model"
    checkpoints = RunDir(run, "").checkpoints()
    return checkpoints[-1][1] if checkpoints else None
