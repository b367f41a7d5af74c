"""What the synthetic-data steps share: their error type and how a file joins a dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dishgen.errors import DishgenError


class SynthError(DishgenError):
    """Inputs or settings that make an augmentation or a mix impossible."""


def _place(src: Path, dst: Path) -> None:
    # A hard link makes assembly instant; across file systems (or where links fail) copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
