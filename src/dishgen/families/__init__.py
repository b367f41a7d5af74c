"""Generator families: one loader per family behind the common generation interface, and the
registry that describes each family once (:mod:`dishgen.families.registry`)."""

from __future__ import annotations

import sys
from pathlib import Path

from dishgen.families.registry import (  # noqa: F401  (the registry's names, importable from here)
    FAMILIES,
    Family,
    families_taking,
    find_family,
    get_family,
    register,
)
from dishgen.runs import recorded_step  # noqa: F401  (moved to dishgen.runs)


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
