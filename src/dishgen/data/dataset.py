"""Reading the dataset on disk: a Hugging Face imagefolder.

``DATASET/<split>/metadata.jsonl`` holds one row per image with ``file_name``, ``text`` and
provenance columns; ``DATASET/dataset.json`` records how the dataset was built. The trainers, the
evaluator and the web app read it through these helpers; ``datasets.load_dataset("imagefolder",
data_dir=DATASET)`` reads the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dishgen.errors import DishgenError
from dishgen.fileio import read_jsonl


class DatasetError(DishgenError, ValueError):
    """A dataset folder that is missing, empty or malformed."""


@dataclass
class DatasetRow:
    """One image of a split."""

    path: Path
    text: str
    dish: str = ""
    extra: dict = field(default_factory=dict)


def list_splits(dataset: str | Path) -> list[str]:
    """Names of the splits present (folders with a metadata.jsonl)."""
    root = Path(dataset)
    return sorted(p.parent.name for p in root.glob("*/metadata.jsonl"))


def load_split(dataset: str | Path, split: str = "train", *, require_text: bool = True,
               require_files: bool = True) -> list[DatasetRow]:
    """Read one split of a dataset.

    Args:
        dataset: the dataset folder.
        split: ``train``, ``test`` or another split folder.
        require_text: fail when a row has no ``text`` caption.
        require_files: fail when a row's image file is absent; the trainers pass ``False`` and skip
            it with the other unreadable images (``RUN/skipped-images.jsonl``).

    Returns:
        The rows, in metadata order.

    Raises:
        DatasetError: the folder, split or metadata is missing, a row lacks ``file_name`` or
            ``text``, or (with ``require_files``) an image file is absent.
    """
    root = Path(dataset)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {str(root)!r} does not exist; build one with `dishgen data build`")
    meta = root / split / "metadata.jsonl"
    if not meta.is_file():
        found = list_splits(root)
        raise DatasetError(
            f"{str(meta)!r} not found: {str(root)!r} has no split {split!r}"
            + (f" (splits present: {', '.join(found)})" if found else "; is it a dishgen dataset?")
        )
    rows = []
    for number, item in enumerate(read_jsonl(meta, strict=True), 1):
        name = item.get("file_name")
        if not name:
            raise DatasetError(f"{meta}:{number}: row has no 'file_name'")
        text = item.get("text")
        if require_text and (not isinstance(text, str) or not text.strip()):
            raise DatasetError(
                f"{meta}:{number}: row for {name!r} has no 'text' caption; "
                "caption the dataset with `dishgen data build` or `dishgen data caption`"
            )
        path = root / split / name
        if require_files and not path.is_file():
            raise DatasetError(f"{meta}:{number}: image {str(path)!r} is missing")
        extra = {k: v for k, v in item.items() if k not in ("file_name", "text", "dish")}
        rows.append(DatasetRow(path=path, text=text or "", dish=item.get("dish", ""), extra=extra))
    if not rows:
        raise DatasetError(f"split {split!r} of {str(root)!r} is empty")
    return rows


def check_dish_pattern(pattern: str, what: str = "exclude") -> None:
    """Raise ``ConfigError`` when ``pattern`` is not a valid regular expression (empty is allowed)."""
    import re

    from dishgen.config import ConfigError

    try:
        re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"{what}={pattern!r} is not a valid regular expression: {err}") from None


def exclude_dishes(rows: list[DatasetRow], pattern: str) -> tuple[list[DatasetRow], list[DatasetRow]]:
    """Split rows into those kept and those whose dish name matches ``pattern``.

    The same rule as ``dishgen data build --exclude`` (a regular expression searched in the dish
    name, case-insensitive), applied to a built dataset so that its train/test split stays as it is.

    Args:
        rows: rows of one split.
        pattern: a regular expression; ``""`` keeps every row.

    Returns:
        ``(kept, excluded)``, each in the rows' order.
    """
    import re

    if not pattern:
        return list(rows), []
    regex = re.compile(pattern, re.IGNORECASE)
    kept = [r for r in rows if not regex.search(r.dish)]
    excluded = [r for r in rows if regex.search(r.dish)]
    return kept, excluded
