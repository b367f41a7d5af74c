"""What the synthetic-data steps share: their error type and how a file joins a dataset."""

from __future__ import annotations

from pathlib import Path

from dishgen.errors import DishgenError
from dishgen.fileio import link_or_copy


class SynthError(DishgenError):
    """Inputs or settings that make an augmentation or a mix impossible."""


def _place(src: Path, dst: Path) -> None:
    link_or_copy(src, dst)
