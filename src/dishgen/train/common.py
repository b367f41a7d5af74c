"""What every training script shares: its log, plots, grids, progress and stopping.

The run directory's layout lives in :mod:`dishgen.runs` (neutral ground that generation and
evaluation read too); its names are re-exported here for the trainers. This module holds the
mechanics every training loop shares: the progress bar (images/s, ETA) and :class:`StopControl`
(Ctrl-C / SIGTERM, the ``max_minutes`` wall-clock limit and time-based checkpoints, agreed across
processes).
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dishgen.errors import DishgenError
from dishgen.runs import CHECKPOINT_RE, LEFTOVER_RE, RunDir, RunDirError  # noqa: F401  (the trainers' names)


class TrainingDiverged(DishgenError, RuntimeError):
    """A loss became NaN or infinite."""


# -- experiment trackers (accelerate: TensorBoard, Weights & Biases) ---------------------------------

TRACKERS = ("none", "tensorboard", "wandb")  # the choices of every family's ``log_with``
_TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "pip install 'dishgen[tensorboard]'"),
                     "wandb": ("wandb", "pip install wandb, then wandb login (or WANDB_MODE=offline)")}


def tracker_kwargs(log_with: str, out: str | Path) -> dict[str, Any]:
    """The ``Accelerator(...)`` arguments for a config's ``log_with``: none, or the tracker with the
    run directory as its home (TensorBoard writes ``RUN/dishgen-<family>/``).

    Raises:
        ConfigError: the tracker's package is not installed (accelerate would skip it silently).
    """
    import importlib.util

    from dishgen.config import ConfigError

    if log_with == "none":
        return {}
    package, install = _TRACKER_PACKAGES[log_with]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"log_with={log_with} needs the {package} package, which is not installed: "
                          f"{install}; or train with log_with=none")
    return {"log_with": log_with, "project_dir": str(out)}


def start_trackers(accelerator, family: str, config: dict[str, Any]) -> None:
    """Open the run's trackers (main process only; nothing when ``log_with=none``) with the
    resolved config as hyper-parameters (non-scalar values as text, as TensorBoard requires).

    Weights & Biases keeps its files in ``RUN/wandb/`` (accelerate would leave them in
    ``./wandb`` of whatever folder the command ran from)."""
    if not accelerator.log_with:
        return
    flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
    accelerator.init_trackers(f"dishgen-{family}", config=flat,
                              init_kwargs={"wandb": {"dir": str(accelerator.project_dir)}})


def log_to_trackers(accelerator, row: dict[str, Any]) -> None:
    """Send one ``log.jsonl`` row to the trackers: each finite number under its column's name, at
    the row's ``step`` (so TensorBoard and the run's own log and plots name every scalar alike)."""
    if not accelerator.trackers:
        return
    scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))
               and not isinstance(v, bool) and math.isfinite(v)}
    accelerator.log(scalars, step=row["step"])


def launcher_rank() -> int:
    """This process's global rank under torchrun / accelerate launch / MPI (0 when run alone),
    read from the environment, so it is known before the accelerator is made."""
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


@contextlib.contextmanager
def run_lock(out: str | Path) -> Iterator[Path | None]:
    """Hold the run directory's output lock (:func:`dishgen.fileio.output_lock`) for a whole run.

    Under a launcher only rank 0 takes it (the other ranks never write). A second run writing into
    the same folder gets a one-line :class:`~dishgen.fileio.OutputLocked`; the lock of a killed
    run is taken over. A folder that the lock created and that is still empty at the end (a run
    refused before it wrote anything) is removed again.

    Args:
        out: the run directory.

    Yields:
        The lock file's path (``None`` on ranks other than 0).
    """
    from dishgen.fileio import output_lock

    if launcher_rank() != 0:
        yield None
        return
    out = Path(out)
    created = not out.exists()
    try:
        with output_lock(out) as lock:
            yield lock
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


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


# -- progress and stopping ------------------------------------------------------------------------


def progress_bar(desc: str, *, step: int, max_steps: int, images_per_step: int, enabled: bool):
    """A tqdm bar that counts training images, so its rate is images/s and its ETA is real.

    Args:
        desc: the label (the family's name).
        step: the step the run starts at (non-zero after ``--resume``).
        max_steps: the last step.
        images_per_step: images seen per optimizer step over all processes (global batch).
        enabled: show it (the main process only).

    Returns:
        The bar: call ``update(images_per_step)`` once per step and ``set_postfix({"step": ..., "loss": ...})``.
    """
    from tqdm.auto import tqdm

    return tqdm(total=max_steps * images_per_step, initial=step * images_per_step, unit="img",
                desc=desc, disable=not enabled, mininterval=2.0, dynamic_ncols=True)


def resume_command(family: str, data: str | Path, out: str | Path, device: str | None = None) -> str:
    """The command line that continues a run (its saved config already holds every override)."""
    words = ["dishgen", "train", family, "--data", str(data), "--out", str(out), "--resume"]
    if device:
        words += ["--device", device]
    return shlex.join(words)


# The clock of StopControl; tests replace it to reach a time limit without waiting.
now = time.monotonic


@dataclass
class StopDecision:
    """What a training loop does after a step: write a checkpoint now, and/or stop (and why)."""

    checkpoint: bool = False
    reason: str | None = None  # "interrupted" (a signal) or "time limit"


class StopControl:
    """Stops a training loop cleanly on Ctrl-C / SIGTERM or a wall-clock limit, and asks for a
    checkpoint every ``checkpoint_every_minutes`` (so a slow CPU loses minutes, not hours).

    Used around the loop::

        with StopControl(accelerator, max_minutes=..., checkpoint_every_minutes=...,
                         resume_command=...) as control:
            while step < max_steps:
                ...one step...
                stop = control.poll(step)      # the same answer on every process
                if stop.checkpoint:
                    write_checkpoint(step)     # which calls control.saved(step)
                if stop.reason:
                    break
        control.finish(step, checkpoint_folder)  # raises Interrupted after a signal

    A signal only sets a flag: the step in progress finishes, a complete checkpoint is written
    (atomically, like every checkpoint) and :meth:`finish` raises :class:`~dishgen.errors.Interrupted`,
    which the CLI turns into one line with the resume command and exit code 130 (SIGINT) or 143
    (SIGTERM). A second signal in a single process quits at once (``KeyboardInterrupt``); an
    unfinished checkpoint folder is then removed, never left half-written. Under a launcher
    (torchrun, accelerate launch), which forwards the terminal's Ctrl-C a second time, repeated
    signals only keep the flag raised. Each step the processes combine their flags (an all-gather
    of three numbers), so all of them stop at the same step and rank 0 writes. The previous
    signal handlers come back when the block ends.
    """

    def __init__(self, accelerator, *, max_minutes: float = 0.0, checkpoint_every_minutes: float = 0.0,
                 resume_command: str = ""):
        self.accelerator = accelerator
        self.max_seconds = 60.0 * max_minutes
        self.checkpoint_seconds = 60.0 * checkpoint_every_minutes
        self.resume_command = resume_command
        self.signum = 0  # the first signal received (0: none)
        self.reason: str | None = None
        self._previous: dict[int, object] = {}
        # Under a launcher the same Ctrl-C arrives twice (terminal, then the launcher forwarding it).
        self._quit_on_repeat = accelerator.num_processes == 1 and "LOCAL_RANK" not in os.environ
        self._saved_step: int | None = None

    def __enter__(self) -> StopControl:
        self.started = self._last_checkpoint = now()
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum, frame) -> None:
        if self.signum and self._quit_on_repeat:
            raise KeyboardInterrupt
        if not self.signum:
            self.signum = signum
            if self.accelerator.is_main_process:
                again = " (press Ctrl-C again to quit without saving)" if self._quit_on_repeat else ""
                # os.write: print() is not safe inside a signal handler that may interrupt print().
                os.write(sys.stderr.fileno(), f"\n{signal.Signals(signum).name}: finishing this step, then "
                         f"saving a checkpoint{again}\n".encode())

    def poll(self, step: int) -> StopDecision:
        """Decide, after ``step``, whether to checkpoint and whether to stop; all processes agree."""
        t = now()
        flags = [self.signum, int(self.max_seconds > 0 and t - self.started >= self.max_seconds),
                 int(self.checkpoint_seconds > 0 and t - self._last_checkpoint >= self.checkpoint_seconds)]
        if self.accelerator.num_processes > 1:
            import torch

            gathered = self.accelerator.gather(torch.tensor([flags], device=self.accelerator.device))
            flags = gathered.amax(dim=0).tolist()  # (processes, 3) -> the strongest of each flag
        signum, time_up, checkpoint_due = flags
        if signum:
            self.signum, self.reason = int(signum), "interrupted"
        elif time_up:
            self.reason = "time limit"
        wanted = bool(self.reason or checkpoint_due)
        return StopDecision(checkpoint=wanted and self._saved_step != step, reason=self.reason)

    def end_of_step(self, step: int, config, write_checkpoint) -> bool:
        """The end of every training step: the scheduled checkpoint (``checkpoint_every``, and the
        last step), then :meth:`poll` and the checkpoint it asks for. True: stop now."""
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            write_checkpoint(step)
        stop = self.poll(step)  # Ctrl-C / SIGTERM, max_minutes, checkpoint_every_minutes
        if stop.checkpoint:
            write_checkpoint(step)
        return bool(stop.reason)

    def saved(self, step: int) -> None:
        """Note that a checkpoint of ``step`` was written (restarts the time-based interval)."""
        self._saved_step = step
        self._last_checkpoint = now()

    def finish(self, step: int, checkpoint: Path) -> None:
        """After the loop: say why the run stopped (main process) and, after a signal, raise
        :class:`~dishgen.errors.Interrupted` on every process."""
        from dishgen.errors import Interrupted

        if self.reason is None:
            return
        where = f"checkpoint saved: {checkpoint}. Resume with: {self.resume_command}"
        if self.accelerator.num_processes > 1:
            where += " (under the same launcher)"
        if self.reason == "interrupted":
            message = f"interrupted at step {step}; {where}"
            if self.accelerator.is_main_process:  # said here: a launcher kills the others when one exits
                print(message, file=sys.stderr, flush=True)
        else:
            message = f"time limit reached (max_minutes={self.max_seconds / 60:g}) at step {step}; {where}"
            if self.accelerator.is_main_process:
                print(message, flush=True)
        self.accelerator.wait_for_everyone()  # rank 0 has written and said it before any process exits
        if self.reason == "interrupted":
            error = Interrupted(message, self.signum)
            error.reported = True  # the CLI need not print it again
            raise error


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
