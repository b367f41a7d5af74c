"""What every training script shares: the run directory, its log, plots, grids and checkpoints.

A run directory (ARCHITECTURE.md) holds everything one run produced, and nothing else::

    RUN/config.json              resolved config, with "family"
    RUN/log.jsonl                one row per logged step
    RUN/plots/*.png              loss / LR / grad-norm curves
    RUN/samples/step-<N>.png     sample grids for fixed prompts and noise
    RUN/checkpoint-<N>/          all state to resume exactly (safetensors + JSON, no pickle)
    RUN/model/                   the final export: config.json + model.safetensors + README.md
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from dishgen.fileio import (
    append_jsonl,
    atomic_directory,
    atomic_write_json,
    read_jsonl,
    repair_jsonl,
)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


class RunDirError(ValueError):
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
        latest = self.latest_checkpoint()
        saved = self.path / "config.json"
        if saved.is_file():
            old = json.loads(saved.read_text(encoding="utf-8"))
            if old.get("family") != self.family:
                raise RunDirError(
                    f"{str(self.path)!r} holds a {old.get('family')!r} run, not {self.family!r}; choose another --out"
                )
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


def check_finite(step: int, losses: dict[str, float], run: RunDir) -> None:
    """Stop with a clear message when a loss is NaN or infinite."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        latest = run.latest_checkpoint()
        where = f"the last good checkpoint is {run.checkpoint_path(latest)}" if latest is not None else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"training diverged at step {step}: {', '.join(f'{k}={v}' for k, v in bad.items())}; {where}. "
            "Lower the learning rate or enable gradient clipping, then --resume."
        )


def ema_smooth(values: list[float], alpha: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = alpha * avg + (1 - alpha) * v
        out.append(avg / (1 - alpha**i))
    return out


def rolling_mean(values: list[float], window: int = 100) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_log(rows: list[dict[str, Any]], out_dir: Path, groups: dict[str, list[str]]) -> list[Path]:
    """Plot log columns: one PNG per group, raw values faint, EMA-smoothed bold.

    Args:
        rows: ``log.jsonl`` rows.
        out_dir: where the PNGs go.
        groups: file stem -> column names plotted together.

    Returns:
        The PNGs written (groups with no data are skipped).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dishgen.fileio import atomic_path

    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, keys in groups.items():
        series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for i, (key, points) in enumerate(series.items()):
            steps, values = zip(*points, strict=True)
            color = f"C{i}"
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, ema_smooth(list(values)), color=color, linewidth=1.8, label=f"{key} (EMA)")
        ax.set_xlabel("step")
        ax.set_title(stem.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(path)
    return written


def save_image_grid(images, path: Path, nrow: int = 8, labels: list[str] | None = None) -> Path:
    """Save a (B, 3, H, W) tensor in [-1, 1] as a PNG grid, optional row labels on the left."""
    from dishgen.fileio import atomic_save_image
    from dishgen.image_grid import captioned_grid
    from dishgen.images_tensor import tensor_to_pil

    atomic_save_image(captioned_grid(tensor_to_pil(images), ncol=nrow, labels=labels), path)
    return path
