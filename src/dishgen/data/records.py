"""Raw records: what `data import` and `data scrape` write and `data build` reads.

A raw folder holds ``recipes.jsonl`` (one JSON object per image/recipe) and ``images/``.
Fields (all but ``image`` and ``name`` optional)::

    id            stable id (content hash of the image, or of the URL for scraped recipes)
    name          dish or recipe name, as found (Serbian, Croatian or English)
    image         image path relative to the raw folder (images/<sha256>.<ext>)
    ingredients   list of ingredient lines
    preparation   list of preparation steps
    captions      list of ready captions (caption tables, e.g. Flickr30k)
    source        where it came from: "recepti", "coolinarika", "ffml", "folder", ...
    url           page URL, for scraped recipes
    license       licence of the photo, when known
    fetched_at    ISO time of the fetch, for scraped recipes
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dishgen.fileio import read_jsonl

RECORDS_FILE = "recipes.jsonl"


@dataclass
class RawRecord:
    """One raw image with what is known about it."""

    name: str
    image: str
    id: str = ""
    ingredients: list[str] = field(default_factory=list)
    preparation: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    source: str = ""
    url: str = ""
    license: str = ""
    fetched_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data.update(extra)
        return {k: v for k, v in data.items() if v not in ("", [], {}, None)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RawRecord:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**{"name": "", "image": "", **values}, extra=extra)


def read_records(raw_dir: str | Path) -> list[RawRecord]:
    """Read ``RAW/recipes.jsonl`` (a torn last line from a killed writer is skipped)."""
    path = Path(raw_dir) / RECORDS_FILE
    return [RawRecord.from_json(row) for row in read_jsonl(path)]
