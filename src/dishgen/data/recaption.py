"""Re-captioning a dataset that is already built: ``dishgen data caption DATASET``.

Each split's ``metadata.jsonl`` is rewritten atomically after every batch, and rows that the same
captioner (and model) has already captioned are skipped, so an interrupted run continues where it
stopped and never leaves a half-written file.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dishgen.data.caption import Captioner, CaptionInput
from dishgen.data.dataset import DatasetError, list_splits
from dishgen.data.records import read_records
from dishgen.fileio import atomic_write_json, atomic_write_text, read_jsonl

log = logging.getLogger(__name__)


@dataclass
class RecaptionReport:
    """What :func:`recaption` did, per split."""

    captioner: str
    captioned: Counter = field(default_factory=Counter)  # split -> rows captioned now
    already: Counter = field(default_factory=Counter)  # split -> rows done by an earlier run
    errors: Counter = field(default_factory=Counter)  # reason -> rows

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def lines(self) -> list[str]:
        """A short human-readable summary."""
        out = [f"captioner {self.captioner}"]
        for split in sorted(set(self.captioned) | set(self.already)):
            out.append(f"  {split}: {self.captioned[split]} captioned, "
                       f"{self.already[split]} already done")
        for reason, count in self.errors.most_common(5):
            out.append(f"  failed {count:>4} x {reason}")
        return out


def captioner_id(captioner: Captioner) -> str:
    """The id recorded in each row's ``captioner`` column (e.g. ``llm:gpt-4o-mini@<server>``)."""
    return getattr(captioner, "description", captioner.name)


def recaption(
    dataset: str | Path,
    captioner: Captioner,
    *,
    splits: list[str] | None = None,
    raw_dir: str | Path | None = None,
    force: bool = False,
    batch_size: int = 64,
) -> RecaptionReport:
    """Replace the ``text`` of a dataset's rows with new captions.

    Args:
        dataset: the dataset folder (``<split>/metadata.jsonl`` + images).
        captioner: any captioner (:func:`dishgen.data.caption.get_captioner`).
        splits: the splits to caption (default: all).
        raw_dir: the raw folder the dataset came from, to give the captioner each recipe's
            ingredients and preparation (rows matched by ``url``, then ``id``).
        force: caption rows again even when this captioner already did.
        batch_size: rows captioned between two saves.

    Returns:
        The report; rows that failed keep their caption and get a ``caption_error`` column.

    Raises:
        DatasetError: no such split, or a malformed metadata file.
    """
    root = Path(dataset)
    found = list_splits(root)
    splits = splits or found
    for split in splits:
        if split not in found:
            raise DatasetError(f"{str(root)!r} has no split {split!r} (splits present: "
                               f"{', '.join(found) or 'none'}); is it a dishgen dataset?")
    recipes = {}
    if raw_dir is not None:
        for record in read_records(raw_dir):
            for key in (record.url, record.id):
                if key:
                    recipes[key] = record
    label = captioner_id(captioner)
    report = RecaptionReport(captioner=label)
    for split in splits:
        meta = root / split / "metadata.jsonl"
        try:
            rows = read_jsonl(meta, strict=True)
        except ValueError as err:
            raise DatasetError(str(err)) from None
        todo = [i for i, row in enumerate(rows) if force or row.get("captioner") != label]
        report.already[split] = len(rows) - len(todo)
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            items = [_input_for(rows[i], root / split, recipes) for i in batch]
            for index, result in zip(batch, captioner.caption_many(items), strict=True):
                row = rows[index]
                if result.text is None:
                    row["caption_error"] = result.error or "no caption"
                    report.errors[(result.error or "no caption")[:100]] += 1
                    continue
                row["text"] = result.text
                row["captioner"] = label
                row.pop("caption_error", None)
                report.captioned[split] += 1
            _save(meta, rows)
    _note_in_dataset_json(root, label, report)
    return report


def _input_for(row: dict, split_dir: Path, recipes: dict) -> CaptionInput:
    record = recipes.get(row.get("url")) or recipes.get(row.get("id"))
    name = row.get("dish") or row.get("name") or (record.name if record else "")
    return CaptionInput(
        name=name,
        ingredients=list(row.get("ingredients") or (record.ingredients if record else [])),
        preparation=list(row.get("preparation") or (record.preparation if record else [])),
        image_path=split_dir / row["file_name"] if row.get("file_name") else None,
    )


def _save(meta: Path, rows: list[dict]) -> None:
    atomic_write_text(meta, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _note_in_dataset_json(root: Path, label: str, report: RecaptionReport) -> None:
    """Record the re-captioning in ``dataset.json`` (when it exists and is a JSON object)."""
    path = root / "dataset.json"
    if not path.is_file():
        return
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; not recording the re-captioning in it", path)
        return
    if not isinstance(info, dict):
        return
    info.setdefault("recaptioned", []).append({
        "captioner": label, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "captioned": dict(report.captioned), "failed": report.failed,
    })
    atomic_write_json(path, info)
