"""``data import``: photo folders and caption tables -> a raw folder (``recipes.jsonl`` + ``images/``).

Two inputs are understood:

- a folder of ``<dish name>/<images>`` (like FFML): one record per image, named after its folder;
- a caption table (CSV/TSV/pipe-separated or JSONL) of image path + caption, several captions per
  image allowed (e.g. Flickr30k's ``results.csv``: ``image_name| comment_number| comment``).

Images are copied under their content hash, so importing the same files twice adds nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from dishgen.data.images import IMAGE_EXTENSIONS
from dishgen.data.records import RECORDS_FILE, RawRecord, read_records
from dishgen.errors import DishgenError
from dishgen.fileio import append_jsonl, atomic_path, repair_jsonl

IMAGE_COLUMNS = ("image", "image_name", "file_name", "filename", "file", "path", "image_path", "img", "photo")
CAPTION_COLUMNS = ("caption", "text", "comment", "description", "sentence", "title")
_SKIP_SUFFIXES = {".txt", ".md", ".json", ".jsonl", ".csv", ".tsv", ".html", ".htm", ".py", ".db", ".ini", ".yaml", ".yml"}


class ImportError_(DishgenError):
    """A photo folder or caption table that cannot be imported."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_license(folder: Path) -> str:
    """'MIT' etc. when a LICENSE file beside or above the photos names a known licence."""
    for base in (folder, folder.parent):
        for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"):
            file = base / name
            if file.is_file():
                head = file.read_text(encoding="utf-8", errors="replace")[:400]
                for known in ("MIT", "Apache", "CC BY-SA", "CC BY", "CC0", "BSD"):
                    if known.lower() in head.lower():
                        return known
                return f"see {file.name}"
    return ""


def _copy_in(src: Path, raw: Path, sha: str) -> str:
    ext = src.suffix.lower() if src.suffix.lower() in IMAGE_EXTENSIONS else (src.suffix.lower() or ".bin")
    rel = f"images/{sha}{ext}"
    target = raw / rel
    if not target.exists():
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
    return rel


def _existing_ids(raw: Path) -> set[str]:
    repair_jsonl(raw / RECORDS_FILE)
    return {r.id for r in read_records(raw)}


def _walk_files(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files under ``root`` (hidden names left out), following symlinked folders once each.

    A folder is known by its device and inode, so a symlink back to a folder above it (a loop) or
    a second link to a folder already walked is skipped, and recorded with the reason.
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    walked: dict[tuple[int, int], Path] = {}
    def unreadable(err: OSError) -> None:
        skipped.append((str(err.filename), f"unreadable folder ({err.strerror})"))

    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=unreadable):
        here = Path(folder)
        info = here.stat()
        walked.setdefault((info.st_dev, info.st_ino), here)
        keep = []
        for sub in sorted(subfolders):
            path = here / sub
            if sub.startswith("."):
                continue
            try:
                sub_info = path.stat()
            except OSError as err:  # a dangling link
                skipped.append((str(path), f"unreadable folder or broken symlink ({err.strerror})"))
                continue
            first = walked.get((sub_info.st_dev, sub_info.st_ino))
            if first is not None:
                loop = first == here or first in here.parents
                skipped.append((str(path), f"symlink loop: it leads back to {first}" if loop
                                else f"the same folder as {first}, already imported"))
                continue
            walked[(sub_info.st_dev, sub_info.st_ino)] = path
            keep.append(sub)
        subfolders[:] = keep  # os.walk descends only into these
        files += [here / n for n in names if not n.startswith(".") and (here / n).is_file()]
    return sorted(files), skipped


def import_photo_folder(photo_dir: str | Path, out: str | Path, *, source: str | None = None,
                        license: str | None = None) -> dict:
    """Import ``<dish name>/<images>`` folders (images directly in ``photo_dir`` get its name).

    Args:
        photo_dir: the folder of dish folders.
        out: the raw folder to create or extend.
        source: the ``source`` field (default: the photo folder's name, or its parent's for
            a folder called ``images``).
        license: the ``license`` field (default: detected from a LICENSE file beside the photos).

    Returns:
        Counts: ``{"added": n, "already_present": n, "skipped": [(path, reason), ...]}``;
        symlinked folders are followed, and a symlink loop is skipped with its reason.
    """
    root = Path(photo_dir)
    if not root.exists():
        raise ImportError_(f"photo folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise ImportError_(f"{str(root)!r} is a file; give a folder of <dish>/<images>, or a .csv/.jsonl caption table")
    raw = Path(out)
    raw.mkdir(parents=True, exist_ok=True)
    source = source or (root.parent.name if root.name.lower() in ("images", "photos") else root.name)
    license = license if license is not None else detect_license(root)
    files, skipped = _walk_files(root)
    skipped += [(str(p), "not an image file (by extension)") for p in files if p.suffix.lower() in _SKIP_SUFFIXES]
    files = [p for p in files if p.suffix.lower() not in _SKIP_SUFFIXES]
    if not files:
        raise ImportError_(f"no image files found under {str(root)!r}")
    seen = _existing_ids(raw)
    added = already = 0
    batch = []
    for path in tqdm(files, desc="import", unit="img"):
        rel_parent = path.parent.relative_to(root)
        name = rel_parent.parts[0] if rel_parent.parts else root.name
        sha = _sha256(path)
        # Same bytes at the same place -> same record (re-import adds nothing); the same bytes
        # under another name stay a separate record, for `data build` to merge and report.
        where = str(path.relative_to(root))
        record_id = f"{sha[:16]}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"
        if record_id in seen:
            already += 1
            continue
        seen.add(record_id)
        rel = _copy_in(path, raw, sha)
        batch.append(RawRecord(name=name, image=rel, id=record_id, source=source, license=license,
                               extra={"original_path": str(path.relative_to(root))}).to_json())
        added += 1
        if len(batch) >= 100:
            append_jsonl(raw / RECORDS_FILE, batch)
            batch = []
    append_jsonl(raw / RECORDS_FILE, batch)
    return {"added": added, "already_present": already, "skipped": skipped}


def _pick(columns: list[str], wanted: tuple[str, ...], what: str, table: Path) -> str:
    lowered = {c.strip().lower(): c for c in columns}
    for name in wanted:
        if name in lowered:
            return lowered[name]
    raise ImportError_(
        f"caption table {str(table)!r} has no {what} column (looked for {', '.join(wanted)}; found {', '.join(columns)})"
    )


def read_caption_table(table: str | Path) -> list[tuple[str, str]]:
    """Read ``(image, caption)`` pairs from a CSV/TSV/pipe table (delimiter detected) or JSONL."""
    table = Path(table)
    text = table.read_text(encoding="utf-8-sig", errors="strict")
    pairs = []
    if table.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ImportError_(f"{table}:{number}: not valid JSON ({err.msg})") from err
            image_col = _pick(list(row), IMAGE_COLUMNS, "image", table)
            caption_col = _pick(list(row), CAPTION_COLUMNS, "caption", table)
            captions = row[caption_col] if isinstance(row[caption_col], list) else [row[caption_col]]
            pairs += [(str(row[image_col]), str(c)) for c in captions]
        return pairs
    # The header names the columns and holds no free text, so its most frequent candidate
    # delimiter is the table's (csv.Sniffer is easily fooled by commas inside captions).
    header_line = text.split("\n", 1)[0]
    counts = {d: header_line.count(d) for d in "|\t,;"}
    delimiter = max(counts, key=counts.get)
    if counts[delimiter] == 0:
        raise ImportError_(f"cannot tell the delimiter of {str(table)!r}: its header {header_line[:80]!r} has no | , tab or ;")
    dialect = csv.excel
    dialect_kwargs = {"delimiter": delimiter, "skipinitialspace": True}
    if delimiter in "|\t":
        # Pipe/tab tables (Flickr30k) do not quote fields; a caption may start with a quote.
        dialect_kwargs["quoting"] = csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text), dialect, **dialect_kwargs)
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise ImportError_(f"caption table {str(table)!r} is empty")
    image_i = header.index(_pick(header, IMAGE_COLUMNS, "image", table))
    caption_i = header.index(_pick(header, CAPTION_COLUMNS, "caption", table))
    for row in reader:
        if len(row) <= max(image_i, caption_i):
            continue  # Flickr30k has a few malformed rows; a row without a caption is no pair
        image, caption = row[image_i].strip(), row[caption_i].strip()
        if image and caption:
            pairs.append((image, caption))
    return pairs


def import_caption_table(table: str | Path, out: str | Path, *, images_dir: str | Path | None = None,
                         source: str | None = None, license: str | None = None) -> dict:
    """Import a captioned photo collection: one record per image with all its captions.

    Args:
        table: ``.csv``/``.tsv``/``.txt`` (delimiter detected) or ``.jsonl`` with image and caption columns.
        out: the raw folder to create or extend.
        images_dir: where the image paths are relative to (default: the table's folder, or a
            sibling ``images/`` or ``*_images/`` folder when that is where the files are).
        source: the ``source`` field (default: the table's file stem).
        license: the ``license`` field.
    """
    table = Path(table)
    if not table.is_file():
        raise ImportError_(f"caption table {str(table)!r} does not exist")
    pairs = read_caption_table(table)
    if not pairs:
        raise ImportError_(f"caption table {str(table)!r} holds no image/caption rows")
    captions: dict[str, list[str]] = {}
    for image, caption in pairs:
        captions.setdefault(image, []).append(caption)
    base = Path(images_dir) if images_dir else None
    if base is None:
        first = next(iter(captions))
        candidates = [table.parent] + sorted(p for p in table.parent.iterdir() if p.is_dir())
        base = next((c for c in candidates if (c / first).is_file()), table.parent)
    raw = Path(out)
    raw.mkdir(parents=True, exist_ok=True)
    seen = _existing_ids(raw)
    added = already = 0
    skipped = []
    batch = []
    for image, texts in tqdm(captions.items(), desc="import", unit="img"):
        path = base / image
        if not path.is_file():
            skipped.append((str(path), "image file not found"))
            continue
        sha = _sha256(path)
        record_id = f"{sha[:16]}-caption"
        if record_id in seen:
            already += 1
            continue
        seen.add(record_id)
        rel = _copy_in(path, raw, sha)
        batch.append(RawRecord(name="", image=rel, id=record_id, captions=texts, source=source or table.stem,
                               license=license or "", extra={"original_path": image}).to_json())
        added += 1
    append_jsonl(raw / RECORDS_FILE, batch)
    return {"added": added, "already_present": already, "skipped": skipped}
