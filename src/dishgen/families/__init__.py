"""Generator families: one loader per family behind the common generation interface."""

from __future__ import annotations

import json
import sys
from pathlib import Path


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


def announce_choice(run: str | Path, chosen: str | Path) -> None:
    """Say on stderr, in one line, which weights of a run directory a loader picked.

    Silent when ``chosen`` is ``run`` itself (the user named the folder to load).
    """
    run, chosen = Path(run), Path(chosen)
    if chosen.resolve() == run.resolve():
        return
    step = recorded_step(chosen)
    at = f"step {step}" if step is not None else "step not recorded"
    if chosen.name == "model":
        line = f"{run}: using its final weights ({chosen.name}/, {at})"
    else:
        line = f"{run}: using {chosen.name} ({at}); the run has no final weights (model/) yet"
    print(line, file=sys.stderr, flush=True)
