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

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dishgen.fileio import read_jsonl

RECORDS_FILE = "recipes.jsonl"
MAX_NAME_CHARS = 200  # a dish name
MAX_LINE_CHARS = 2000  # an ingredient line, a preparation step, a caption
MAX_LINES = 200  # ingredient lines or preparation steps kept per recipe

# ANSI/VT escape sequences, removed whole: CSI (ESC [ ... final, or the one-byte C1 CSI), OSC
# (ESC ] ... BEL or ESC \), and the other two-character escapes (ESC followed by one byte).
_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
)
_LINE_BREAKS = str.maketrans({c: " " for c in "\t\n\r\x0b\x0c\x85\u2028\u2029"})
_KEEP_FORMAT = {"\u200c", "\u200d"}  # zero-width (non-)joiners shape some scripts and emoji


def clean_text(text: object, max_len: int = MAX_LINE_CHARS) -> str:
    """Untrusted text (a scraped field, an LLM answer) made safe and tidy for a record.

    ANSI escape sequences are removed whole; other control characters (NUL, DEL, C1...), lone
    surrogates and invisible format characters (bidi overrides, BOM, soft hyphen...) are
    removed, except that tabs and line breaks become spaces. The text is then Unicode NFC,
    whitespace runs become one space, ends are stripped, and at most ``max_len`` characters are
    kept (cut at the last space when one is near the end).

    Args:
        text: the text (``None`` gives ``""``; other values are converted with ``str``).
        max_len: the most characters returned.

    Returns:
        The cleaned text, possibly empty.
    """
    if text is None:
        return ""
    text = _ANSI.sub("", str(text)).translate(_LINE_BREAKS)
    text = "".join(
        c for c in text
        if c == " " or unicodedata.category(c) not in ("Cc", "Cs", "Cf") or c in _KEEP_FORMAT
    )
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()
    if len(text) > max_len:
        cut = text[:max_len]
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_len * 0.8 else cut).rstrip()
    return text


def clean_lines(lines: object, max_len: int = MAX_LINE_CHARS, max_lines: int = MAX_LINES) -> list[str]:
    """:func:`clean_text` on each line of a list; empty lines dropped, at most ``max_lines`` kept."""
    if isinstance(lines, str) or not isinstance(lines, (list, tuple)):
        lines = [lines]
    out: list[str] = []
    for line in lines:
        line = clean_text(line, max_len)
        if line:
            out.append(line)
            if len(out) >= max_lines:
                break
    return out


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
