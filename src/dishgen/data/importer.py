"""``data import``: photo folders and caption tables -> a raw folder (``recipes.jsonl`` + ``images/``).

Two inputs are understood:

- a folder of ``<dish name>/<images>`` (like FFML): one record per image, named after its folder;
- a caption table (CSV/TSV/pipe-separated or JSONL) of image path + caption, several captions per
  image allowed (e.g. Flickr30k's ``results.csv``: ``image_name| comment_number| comment``).

Images are copied under their content hash, so importing the same files twice adds nothing.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from dishgen.data.images import IMAGE_EXTENSIONS
from dishgen.data.records import (
    MAX_LINE_CHARS,
    MAX_NAME_CHARS,
    RECORDS_FILE,
    RawRecord,
    clean_text,
)
from dishgen.errors import DishgenError
from dishgen.fileio import append_jsonl, atomic_path, atomic_write_text, read_jsonl, repair_jsonl

IMAGE_COLUMNS = ("image", "image_name", "file_name", "filename", "file", "path", "image_path", "img", "photo")
CAPTION_COLUMNS = ("caption", "text", "comment", "description", "sentence", "title")
_SKIP_SUFFIXES = {".txt", ".md", ".json", ".jsonl", ".csv", ".tsv", ".html", ".htm", ".py", ".db", ".ini", ".yaml", ".yml"}
MAX_TABLE_LINE_CHARS = 1 << 20  # one physical line of a caption table; longer lines are skipped unread
MAX_FIELD_CHARS = 10_000  # a caption or an image path longer than this is not one
_MARK = "\udcff"  # stands for undecodable bytes; decoded UTF-8/UTF-16 text never holds a lone surrogate
codecs.register_error("dishgen.mark", lambda err: (_MARK, err.end))


class ImportError_(DishgenError):
    """A photo folder or caption table that cannot be imported."""


def display_name(name: str | os.PathLike) -> str:
    """A file name as valid UTF-8 text: undecodable bytes (shown by Python as surrogates) become U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


def entry_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be imported as an image file, or ``None`` for a regular file.

    Only ``stat`` is used: a FIFO, socket or device is never opened (opening a FIFO for reading
    blocks until a writer comes).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink loop (the link leads back to itself)"
        if err.errno == errno.ENOENT:
            return "broken symlink (its target does not exist)" if os.path.islink(path) else "file not found"
        return f"cannot read it ({err.strerror or err})"
    except ValueError as err:  # an embedded NUL
        return f"not a valid path ({err})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder, not an image file"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    return "not a regular file"


@contextlib.contextmanager
def _open_regular(path: Path) -> Iterator[BinaryIO]:
    """Open a regular file for reading; anything else raises OSError (and a FIFO never blocks)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        yield f


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with _open_regular(path) as f:
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
    """Copy ``src`` to ``RAW/images/<sha256><ext>`` (a generated, always valid file name)."""
    ext = src.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        ext = ext if re.fullmatch(r"\.[a-z0-9]{1,10}", ext) else ".bin"
    rel = f"images/{sha}{ext}"
    target = raw / rel
    if not target.exists():
        with atomic_path(target) as tmp, _open_regular(src) as f, open(tmp, "wb") as out:
            shutil.copyfileobj(f, out)
    return rel


def _existing_ids(raw: Path) -> set[str]:
    repair_jsonl(raw / RECORDS_FILE)
    return {row.get("id") for row in read_jsonl(raw / RECORDS_FILE) if isinstance(row, dict)}  # a bad line is build's to report


def _walk_files(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Regular files under ``root``, following symlinked folders once each, and what was skipped.

    A folder is known by its device and inode, so a symlink back to a folder above it (a loop) or
    a second link to a folder already walked is skipped, and recorded with the reason. Hidden
    entries, FIFOs, sockets, devices, broken links and link loops are recorded and skipped too;
    nothing is opened here.
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    walked: dict[tuple[int, int], Path] = {}
    image_named_folders: list[Path] = []

    def unreadable(err: OSError) -> None:
        skipped.append((display_name(err.filename), f"unreadable folder ({err.strerror})"))

    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=unreadable):
        here = Path(folder)
        info = here.stat()
        walked.setdefault((info.st_dev, info.st_ino), here)
        keep = []
        for sub in sorted(subfolders):
            path = here / sub
            if sub.startswith("."):
                skipped.append((display_name(path), "hidden folder (its name starts with '.'), not searched"))
                continue
            try:
                sub_info = path.stat()
            except OSError as err:  # a dangling link
                skipped.append((display_name(path), f"unreadable folder or broken symlink ({err.strerror})"))
                continue
            first = walked.get((sub_info.st_dev, sub_info.st_ino))
            if first is not None:
                loop = first == here or first in here.parents
                skipped.append((display_name(path), f"symlink loop: it leads back to {display_name(first)}" if loop
                                else f"the same folder as {display_name(first)}, already imported"))
                continue
            walked[(sub_info.st_dev, sub_info.st_ino)] = path
            keep.append(sub)
            if Path(sub).suffix.lower() in IMAGE_EXTENSIONS:
                image_named_folders.append(path)
        subfolders[:] = keep  # os.walk descends only into these
        for name in sorted(names):
            path = here / name
            problem = "hidden file (its name starts with '.')" if name.startswith(".") else entry_problem(path)
            if problem is None:
                files.append(path)
            else:
                skipped.append((display_name(path), problem))
    # A folder named like an image (photo.jpg/) is searched like any other; when it holds no
    # file at all, say so, instead of letting the "image" vanish without a word.
    holding = {parent for file in files for parent in file.parents}
    skipped += [(display_name(f), "a folder named like an image file, holding no files") for f in image_named_folders
                if f not in holding]
    return sorted(files), skipped


SKIPPED_FILE = "import-skipped.jsonl"


def write_skipped(raw: Path, skipped: list[tuple[str, str]]) -> None:
    """Record what the last import into ``raw`` skipped, one ``{"path", "reason"}`` row each, in
    ``raw/import-skipped.jsonl`` (written whole, atomically; a clean import leaves it empty)."""
    rows = [json.dumps({"path": path, "reason": reason}, ensure_ascii=False) for path, reason in skipped]
    atomic_write_text(raw / SKIPPED_FILE, "".join(row + "\n" for row in rows))


def import_photo_folder(photo_dir: str | Path, out: str | Path, *, source: str | None = None,
                        license: str | None = None) -> dict:
    """Import ``<dish name>/<images>`` folders (images directly in ``photo_dir`` get its name).

    One bad entry never stops the import: hidden files, FIFOs, sockets, broken links, symlink
    loops, unreadable files and non-image files are skipped and listed with the reason. A name
    that is not valid UTF-8 is imported; its dish name shows the bad bytes as U+FFFD.

    Args:
        photo_dir: the folder of dish folders.
        out: the raw folder to create or extend.
        source: the ``source`` field (default: the photo folder's name, or its parent's for
            a folder called ``images``).
        license: the ``license`` field (default: detected from a LICENSE file beside the photos).

    Returns:
        Counts: ``{"added": n, "already_present": n, "skipped": [(path, reason), ...]}``, paths
        as valid UTF-8 text.

    Raises:
        ImportError_: the folder does not exist, is a file, or holds no file to import.
    """
    root = Path(photo_dir)
    if not root.exists():
        raise ImportError_(f"photo folder {display_name(root)!r} does not exist")
    if not root.is_dir():
        raise ImportError_(f"{display_name(root)!r} is a file; give a folder of <dish>/<images>, or a .csv/.jsonl caption table")
    raw = Path(out)
    raw.mkdir(parents=True, exist_ok=True)
    source = source or (root.parent.name if root.name.lower() in ("images", "photos") else root.name)
    source = clean_text(display_name(source), MAX_NAME_CHARS)
    license = license if license is not None else detect_license(root)
    files, skipped = _walk_files(root)
    skipped += [(display_name(p), "not an image file (by extension)") for p in files if p.suffix.lower() in _SKIP_SUFFIXES]
    files = [p for p in files if p.suffix.lower() not in _SKIP_SUFFIXES]
    if not files:
        raise ImportError_(f"no image files found under {display_name(root)!r} ({len(skipped)} entries skipped)")
    seen = _existing_ids(raw)
    added = already = 0
    batch = []
    for path in tqdm(files, desc="import", unit="img"):
        where = path.relative_to(root)
        name = clean_text(display_name(where.parts[0] if len(where.parts) > 1 else root.name), MAX_NAME_CHARS)
        try:
            sha = _sha256(path)
        except OSError as err:  # unreadable, or replaced by a non-file since the walk
            skipped.append((display_name(path), f"cannot read it ({err.strerror or err})"))
            continue
        # Same bytes at the same place -> same record (re-import adds nothing); the same bytes
        # under another name stay a separate record, for `data build` to merge and report.
        # The name's bytes are hashed, so a name that is not valid UTF-8 gets a stable id too.
        record_id = f"{sha[:16]}-{hashlib.sha1(os.fsencode(where)).hexdigest()[:8]}"
        if record_id in seen:
            already += 1
            continue
        try:
            rel = _copy_in(path, raw, sha)
        except OSError as err:
            skipped.append((display_name(path), f"cannot copy it ({err.strerror or err})"))
            continue
        seen.add(record_id)
        batch.append(RawRecord(name=name, image=rel, id=record_id, source=source, license=license,
                               extra={"original_path": display_name(where)}).to_json())
        added += 1
        if len(batch) >= 100:
            append_jsonl(raw / RECORDS_FILE, batch)
            batch = []
    append_jsonl(raw / RECORDS_FILE, batch)
    write_skipped(raw, skipped)
    return {"added": added, "already_present": already, "skipped": skipped}


def _match(columns: Iterable[str], wanted: tuple[str, ...]) -> str | None:
    lowered = {str(c).strip().lower(): c for c in columns}
    return next((lowered[name] for name in wanted if name in lowered), None)


def _pick(columns: list[str], wanted: tuple[str, ...], what: str, table: Path) -> str:
    found = _match(columns, wanted)
    if found is None:
        raise ImportError_(
            f"caption table {display_name(table)!r} has no {what} column (looked for {', '.join(wanted)}; "
            f"found {clean_text(', '.join(map(str, columns)), 200)!r}); rename the column in its header"
        )
    return found


def _open_table(table: Path) -> Iterator[str]:
    """The table's text lines, decoded from UTF-8 (or UTF-16 with a BOM) with bad bytes marked.

    A line longer than :data:`MAX_TABLE_LINE_CHARS` is yielded as ``None`` after being read past,
    so memory stays bounded whatever the file holds.
    """
    with _open_regular(table) as raw:
        head = raw.read(4)
        raw.seek(0)
        encoding = "utf-16" if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
        with io.TextIOWrapper(raw, encoding=encoding, errors="dishgen.mark", newline="") as f:
            while True:
                line = f.readline(MAX_TABLE_LINE_CHARS)
                if not line:
                    return
                if len(line) >= MAX_TABLE_LINE_CHARS and not line.endswith(("\n", "\r")):
                    while (rest := f.readline(MAX_TABLE_LINE_CHARS)) and not rest.endswith(("\n", "\r")):
                        pass
                    yield None
                else:
                    yield line


def _bad_field(value: str, what: str) -> str | None:
    if _MARK in value or any("\ud800" <= c <= "\udfff" for c in value):
        return f"its {what} is not valid text (undecodable bytes); save the table as UTF-8"
    if "\0" in value:
        return f"its {what} holds a NUL byte"
    if len(value) > MAX_FIELD_CHARS:
        return f"its {what} is {len(value):,} characters long (at most {MAX_FIELD_CHARS:,})"
    return None


def _row_pair(image: object, caption: object) -> tuple[tuple[str, str] | None, str | None]:
    """A checked ``(image, cleaned caption)`` pair, or the reason the row is skipped."""
    if not isinstance(image, str) or not isinstance(caption, str):
        return None, f"image and caption must be text, got {type(image).__name__} and {type(caption).__name__}"
    image = image.strip()
    problem = _bad_field(image, "image path") or _bad_field(caption, "caption")
    if problem:
        return None, problem
    caption = clean_text(caption, MAX_LINE_CHARS)
    if not image:
        return None, "empty image path"
    if not caption:
        return None, "empty caption"
    return (image, caption), None


def _read_jsonl_table(table: Path, lines: Iterator[str | None], skipped: list) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(lines, 1):
        where = f"{display_name(table)}:{number}"
        if line is None:
            skipped.append((where, f"line longer than {MAX_TABLE_LINE_CHARS:,} characters"))
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            skipped.append((where, f"not valid JSON ({getattr(err, 'msg', err)})"))
            continue
        if not isinstance(row, dict):
            skipped.append((where, f"not a JSON object (a {type(row).__name__})"))
            continue
        image_col, caption_col = _match(row, IMAGE_COLUMNS), _match(row, CAPTION_COLUMNS)
        if image_col is None or caption_col is None:
            what, wanted = ("image", IMAGE_COLUMNS) if image_col is None else ("caption", CAPTION_COLUMNS)
            skipped.append((where, f"no {what} key (looked for {', '.join(wanted)})"))
            continue
        captions = row[caption_col] if isinstance(row[caption_col], list) else [row[caption_col]]
        for caption in captions:
            pair, problem = _row_pair(row[image_col], caption)
            if pair:
                pairs.append(pair)
            else:
                skipped.append((where, problem))
    return pairs


def read_caption_table(table: str | Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Read ``(image, caption)`` pairs from a CSV/TSV/pipe table (delimiter detected) or JSONL.

    A bad row never stops the reading: malformed rows, rows with too few columns, text that is
    not UTF-8, NUL bytes and huge fields are skipped with the reason. Captions are normalised
    with :func:`dishgen.data.records.clean_text`. UTF-8 (with or without BOM) and UTF-16 with a
    BOM are read.

    Args:
        table: the table file.

    Returns:
        ``(pairs, skipped)``: the kept ``(image path, caption)`` pairs, and ``(table:line, reason)``
        for each skipped row.

    Raises:
        ImportError_: the table cannot be read at all: no header, no image or caption column,
            no delimiter in the header, or an unreadable file.
    """
    table = Path(table)
    skipped: list[tuple[str, str]] = []
    try:
        lines = _open_table(table)
        if table.suffix.lower() in (".jsonl", ".ndjson"):
            return _read_jsonl_table(table, lines, skipped), skipped
        header_line = next(lines, "")
        if not (header_line or "").strip():
            raise ImportError_(f"caption table {display_name(table)!r} is empty (or its first line is blank); "
                               "its first line must name the columns, e.g. image,caption")
        if header_line is None:
            raise ImportError_(f"caption table {display_name(table)!r}: its first line is longer than "
                               f"{MAX_TABLE_LINE_CHARS:,} characters; is it a caption table?")
        # The header names the columns and holds no free text, so its most frequent candidate
        # delimiter is the table's (csv.Sniffer is easily fooled by commas inside captions).
        counts = {d: header_line.count(d) for d in "|\t,;"}
        delimiter = max(counts, key=counts.get)
        if counts[delimiter] == 0:
            raise ImportError_(f"cannot tell the delimiter of {display_name(table)!r}: its header "
                               f"{clean_text(header_line, 80)!r} has no | , tab or ;")
        dialect_kwargs = {"delimiter": delimiter, "skipinitialspace": True, "strict": True}
        if delimiter in "|\t":
            # Pipe/tab tables (Flickr30k) do not quote fields; a caption may start with a quote.
            dialect_kwargs["quoting"] = csv.QUOTE_NONE
        header = [h.strip() for h in next(csv.reader([header_line], csv.excel, **dialect_kwargs), [])]
        image_i = header.index(_pick(header, IMAGE_COLUMNS, "image", table))
        caption_i = header.index(_pick(header, CAPTION_COLUMNS, "caption", table))
        too_long: list[int] = []

        def physical_lines() -> Iterator[str]:
            for number, line in enumerate(lines, 2):
                if line is None:
                    too_long.append(number)
                    skipped.append((f"{display_name(table)}:{number}", f"line longer than {MAX_TABLE_LINE_CHARS:,} characters"))
                    yield "\n"
                else:
                    yield line

        reader = csv.reader(physical_lines(), csv.excel, **dialect_kwargs)
        pairs = []
        while True:
            first_line = reader.line_num + 2
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                skipped.append((f"{display_name(table)}:{first_line}", f"malformed row ({err})"))
                continue
            where = f"{display_name(table)}:{first_line}"
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) <= max(image_i, caption_i):
                skipped.append((where, f"{len(row)} column(s), the header has {len(header)}"))
                continue
            pair, problem = _row_pair(row[image_i], row[caption_i])
            if pair:
                pairs.append(pair)
            else:
                skipped.append((where, problem))
        return pairs, skipped
    except OSError as err:
        raise ImportError_(f"cannot read caption table {display_name(table)!r}: {err.strerror or err}") from err


def _outside(path: Path, base: Path) -> bool:
    """Whether ``path`` (``base / image``, ``image`` as the table names it) leaves ``base``: an
    absolute path elsewhere, or ``..`` climbing out of it. Judged on the names alone, so a symlink
    that the folder's owner put inside it is still followed."""
    root = os.path.abspath(base)
    return os.path.commonpath([root, os.path.abspath(path)]) != root


def import_caption_table(table: str | Path, out: str | Path, *, images_dir: str | Path | None = None,
                         source: str | None = None, license: str | None = None) -> dict:
    """Import a captioned photo collection: one record per image with all its captions.

    Args:
        table: ``.csv``/``.tsv``/``.txt`` (delimiter detected) or ``.jsonl`` with image and caption columns.
        out: the raw folder to create or extend.
        images_dir: where the image paths are relative to (default: the table's folder, or a
            sibling ``images/`` or ``*_images/`` folder when that is where the files are). A row
            whose path leaves this folder (an absolute path elsewhere, or ``..`` climbing out)
            is skipped with its reason: a table from elsewhere cannot pull in, say, a key from
            your home folder.
        source: the ``source`` field (default: the table's file stem).
        license: the ``license`` field.

    Returns:
        Counts: ``{"added": n, "already_present": n, "skipped": [(where, reason), ...]}``, where
        a skipped row is ``table:line`` and a skipped image its path.

    Raises:
        ImportError_: a missing table, one that cannot be read at all, or one without any good row.
    """
    table = Path(table)
    if entry_problem(table) is not None:
        raise ImportError_(f"caption table {display_name(table)!r} does not exist or is not a regular file")
    pairs, skipped = read_caption_table(table)
    if not pairs:
        first = f"; the first skipped row: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise ImportError_(f"caption table {display_name(table)!r} holds no image/caption rows{first}")
    captions: dict[str, list[str]] = {}
    for image, caption in pairs:
        captions.setdefault(image, []).append(caption)
    base = Path(images_dir) if images_dir else None
    if base is None:
        first = next(iter(captions))
        candidates = [table.parent] + sorted(p for p in table.parent.iterdir() if p.is_dir())
        base = next((c for c in candidates if entry_problem(c / first) is None), table.parent)
    raw = Path(out)
    raw.mkdir(parents=True, exist_ok=True)
    seen = _existing_ids(raw)
    added = already = 0
    batch = []
    for image, texts in tqdm(captions.items(), desc="import", unit="img"):
        path = base / image
        if _outside(path, base):
            skipped.append((display_name(image), f"outside the images folder {display_name(base)!r}: a table may "
                                                 "only name files under it (pass --images-dir to a folder that holds them)"))
            continue
        problem = entry_problem(path)
        if problem is not None:
            skipped.append((display_name(path), "image file not found" if problem == "file not found" else problem))
            continue
        try:
            sha = _sha256(path)
            record_id = f"{sha[:16]}-caption"
            if record_id in seen:
                already += 1
                continue
            rel = _copy_in(path, raw, sha)
        except OSError as err:
            skipped.append((display_name(path), f"cannot read it ({err.strerror or err})"))
            continue
        seen.add(record_id)
        batch.append(RawRecord(name="", image=rel, id=record_id, captions=texts,
                               source=clean_text(display_name(source or table.stem), MAX_NAME_CHARS),
                               license=license or "", extra={"original_path": display_name(image)}).to_json())
        added += 1
        if len(batch) >= 100:
            append_jsonl(raw / RECORDS_FILE, batch)
            batch = []
    append_jsonl(raw / RECORDS_FILE, batch)
    write_skipped(raw, skipped)
    return {"added": added, "already_present": already, "skipped": skipped}
