"""``data build``: raw folders -> validate -> de-duplicate -> crop/resize -> caption -> split.

The output is a Hugging Face imagefolder (ARCHITECTURE.md)::

    DATASET/train/*.png + metadata.jsonl
    DATASET/test/*.png  + metadata.jsonl
    DATASET/dataset.json    how it was built: inputs, settings, counts, what was dropped and why

Work happens in ``DATASET.partial/``; the finished folder is renamed into place, so a dataset
that exists is complete. An interrupted build resumes from ``DATASET.partial/``: images already
processed are not decoded again and captions already written are not asked for again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from dishgen import __version__
from dishgen.data.caption import CaptionInput, get_captioner
from dishgen.data.images import ImageResult, ImageSettings, process_image
from dishgen.data.importer import display_name
from dishgen.data.records import (
    MAX_LINE_CHARS,
    MAX_NAME_CHARS,
    RECORDS_FILE,
    RawRecord,
    clean_lines,
    clean_text,
)
from dishgen.data.split import dish_key, split_indices, split_notes
from dishgen.errors import DishgenError
from dishgen.fileio import (
    LOCK_FILE,
    append_jsonl,
    atomic_write_json,
    link_or_copy,
    publish_directory,
    read_jsonl,
)
from dishgen.generation_io import slugify

log = logging.getLogger(__name__)


class BuildError(DishgenError):
    """Inputs or settings that make a build impossible."""


@dataclass
class BuildOptions:
    """Settings of one build (saved in dataset.json)."""

    size: int = 512
    min_size: int | None = None  # default: size // 2
    crop: str = "center"
    output_format: str = "png"
    test_fraction: float = 0.1
    seed: int = 0
    split_by: str = "dish"
    dedupe_threshold: int = 4  # pHash Hamming distance; -1 disables near-duplicate merging
    captioner: str = "template"
    captioner_options: dict = field(default_factory=dict)
    workers: int | None = None
    overwrite: bool = False
    exclude: list[str] = field(default_factory=list)  # regexes on the dish name (case-insensitive)

    def validate(self) -> None:
        if not isinstance(self.size, int) or self.size <= 0:
            raise BuildError(f"--size must be a positive integer, got {self.size!r}")
        if self.min_size is not None and self.min_size < 1:
            raise BuildError(f"--min-size must be a positive integer, got {self.min_size!r}")
        if not 0 <= self.test_fraction < 1:
            raise BuildError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if self.crop not in ("center", "pad", "keep"):
            raise BuildError(f"--crop must be 'center', 'pad' or 'keep', got {self.crop!r}")
        if self.output_format not in ("png", "jpg"):
            raise BuildError(f"--format must be 'png' or 'jpg', got {self.output_format!r}")
        if self.split_by not in ("dish", "image"):
            raise BuildError(f"--split-by must be 'dish' or 'image', got {self.split_by!r}")
        from dishgen.data.dedupe import check_threshold

        check_threshold(self.dedupe_threshold)  # before any image is decoded


@dataclass
class _Item:
    raw_dir: Path
    record: RawRecord
    result: ImageResult | None = None


def _checked_record(row: object) -> tuple[RawRecord | None, str | None]:
    """A record with its text cleaned (the one normaliser, ``clean_text``), or why it is unusable."""
    if not isinstance(row, dict):
        return None, f"not a JSON object (a {type(row).__name__})"
    record = RawRecord.from_json(row)
    for key in ("name", "image", "source", "url", "license"):
        if not isinstance(getattr(record, key), str):
            return None, f"its {key!r} is a {type(getattr(record, key)).__name__}, not text"
    image = record.image
    if "\0" in image or len(image) > 4096 or any("\ud800" <= c <= "\udfff" for c in image):
        return None, f"its image path {clean_text(image, 80)!r} is not a valid file name"
    record.name = clean_text(record.name, MAX_NAME_CHARS)
    record.source, record.url, record.license = (clean_text(v, MAX_LINE_CHARS) for v in (record.source, record.url, record.license))
    record.captions = clean_lines(record.captions) if record.captions else []
    record.ingredients = clean_lines(record.ingredients) if record.ingredients else []
    record.preparation = clean_lines(record.preparation) if record.preparation else []
    return record, None


def _collect(raw_dirs: list[Path], exclude: list[str] = ()) -> tuple[list[_Item], list[dict]]:
    import re

    try:
        patterns = [re.compile(p, re.IGNORECASE) for p in exclude]
    except re.error as err:
        raise BuildError(f"--exclude pattern {err.pattern!r} is not a valid regular expression: {err}") from err
    items, dropped = [], []
    for raw in raw_dirs:
        if not raw.exists():
            raise BuildError(f"input {str(raw)!r} does not exist")
        if not (raw / RECORDS_FILE).is_file():
            raise BuildError(
                f"input {str(raw)!r} has no {RECORDS_FILE}; create it with `dishgen data import` or `dishgen data scrape`"
            )
        for number, row in enumerate(read_jsonl(raw / RECORDS_FILE), 1):
            record, problem = _checked_record(row)
            if problem:
                dropped.append({"raw": display_name(raw), "name": f"{RECORDS_FILE}:{number}", "reason": problem, "kind": "bad_record"})
                continue
            if not record.image:
                dropped.append({"raw": display_name(raw), "name": record.name, "reason": "record has no image", "kind": "no_image"})
                continue
            hit = next((p.pattern for p in patterns if p.search(record.name or "")), None)
            if hit is not None:
                dropped.append({"raw": display_name(raw), "image": record.image, "name": record.name,
                                "reason": f"dish name matches --exclude {hit!r}", "kind": "excluded"})
                continue
            items.append(_Item(raw, record))
    if not items:
        raise BuildError(f"no images found in {', '.join(map(str, raw_dirs))}: the inputs are empty")
    return items, dropped


def _process_all(items: list[_Item], work: Path, settings: ImageSettings, workers: int | None) -> None:
    """Run process_image over all items in parallel, reusing results of an interrupted build."""
    staging = work / "_staging"
    staging.mkdir(parents=True, exist_ok=True)
    done_file = work / "_processed.jsonl"
    # Keyed by the path as valid UTF-8 text (undecodable bytes as \xNN), so any path can be written.
    done = {row["source"]: ImageResult(**row) for row in read_jsonl(done_file)}
    todo = []
    for item in items:
        path = str((item.raw_dir / item.record.image).resolve())
        previous = done.get(_path_key(path))
        if previous is not None and (previous.error or (staging / previous.staged).is_file()):
            item.result = previous
        else:
            todo.append((item, path))
    if not todo:
        return
    workers = workers or os.cpu_count() or 1
    by_path = {}
    for item, path in todo:
        by_path.setdefault(path, []).append(item)
    batch: list[dict] = []
    with tqdm(total=len(by_path), desc="images", unit="img") as bar:
        try:
            for path, result in _results(list(by_path), str(staging), settings, workers):
                for item in by_path[path]:
                    item.result = result
                batch.append({**result.to_json(), "source": _path_key(path)})
                if len(batch) >= 64:
                    append_jsonl(done_file, batch)
                    batch = []
                bar.update()
        finally:
            if batch:
                append_jsonl(done_file, batch)


def _results(paths: list[str], staging: str, settings: ImageSettings, workers: int) -> Iterator[tuple[str, ImageResult]]:
    """``(path, result)`` for every path, in completion order, from ``workers`` processes.

    A worker process that dies (a decoder that crashes, the out-of-memory killer) breaks the
    whole pool; then the images that were in flight are run again one by one, each in a fresh
    process, so only the image that kills its process is dropped (kind ``crashed``), and the
    rest go on in a new pool.
    """
    if workers == 1:
        for path in paths:
            yield path, process_image(path, staging, settings)
        return
    pending = deque(paths)
    while pending:
        suspects: list[str] = []
        executor = ProcessPoolExecutor(max_workers=workers)
        in_flight: dict[Future, str] = {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < workers * 4:
                    path = pending.popleft()
                    in_flight[executor.submit(process_image, path, staging, settings)] = path
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    path = in_flight.pop(future)
                    if isinstance(future.exception(), BrokenProcessPool):
                        suspects.append(path)
                    else:
                        yield path, future.result()
                if suspects:
                    break
            for future, path in in_flight.items():  # the pool is broken: finished results still count
                if future.done() and future.exception() is None:
                    yield path, future.result()
                else:
                    suspects.append(path)
        finally:
            executor.shutdown(cancel_futures=True)
        for path in suspects:
            yield path, _process_alone(path, staging, settings)


def _process_alone(path: str, staging: str, settings: ImageSettings) -> ImageResult:
    """process_image in a process of its own: a crash there drops this image only."""
    with ProcessPoolExecutor(max_workers=1) as executor:
        try:
            return executor.submit(process_image, path, staging, settings).result()
        except BrokenProcessPool:
            return ImageResult(source=path, error_kind="crashed",
                               error="its decoding crashed the worker process (a damaged file, or not enough memory)")


def _path_key(path: str) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _captioner_id(captioner, options: BuildOptions) -> str:
    """Which captioner wrote a caption: the name plus model and server for an LLM."""
    description = getattr(captioner, "description", None)
    return str(description() if callable(description) else description or options.captioner)


def _caption(items: list[_Item], work: Path, options: BuildOptions, captioner) -> dict[int, str | list[str]]:
    """Caption kept items; results are cached in the work folder so a re-run does not redo them."""
    cache_file = work / "_captions.jsonl"
    captioner_id = _captioner_id(captioner, options)
    cached = {row["key"]: row["text"] for row in read_jsonl(cache_file) if row.get("captioner") == captioner_id}
    captions: dict[int, str | list[str]] = {}
    need: list[tuple[int, str, CaptionInput]] = []
    for index, item in enumerate(items):
        if item.record.captions:
            captions[index] = [c.strip() for c in item.record.captions if c.strip()]
            continue
        key = item.result.sha256 + ":" + item.record.name
        if key in cached:
            captions[index] = cached[key]
            continue
        need.append((index, key, CaptionInput(
            name=item.record.name, ingredients=item.record.ingredients, preparation=item.record.preparation,
            image_path=work / "_staging" / item.result.staged,
        )))
    if need:
        step = 32
        with tqdm(total=len(need), desc=f"captions ({options.captioner})", unit="img") as bar:
            for start in range(0, len(need), step):
                chunk = need[start : start + step]
                results = captioner.caption_many([c for _, _, c in chunk])
                rows = []
                for (index, key, _), res in zip(chunk, results, strict=True):
                    if res.text:
                        captions[index] = res.text
                        rows.append({"key": key, "captioner": captioner_id, "text": res.text})
                    else:
                        captions[index] = None  # recorded as dropped by the caller
                        items[index].result.error_kind = "caption_failed"
                        items[index].result.error = f"captioner {options.captioner!r} failed: {res.error}"
                append_jsonl(cache_file, rows)
                bar.update(len(chunk))
    return captions


def build_dataset(raw_dirs: list[str | Path], out: str | Path, options: BuildOptions | None = None) -> dict:
    """Build an imagefolder dataset from raw folders.

    Args:
        raw_dirs: folders with ``recipes.jsonl`` and ``images/`` (from ``data import``/``scrape``).
        out: the dataset folder to create.
        options: sizes, split, captioner... (see :class:`BuildOptions`).

    Returns:
        The ``dataset.json`` summary.

    Raises:
        BuildError: a missing or empty input, a bad setting, or an existing output without
            ``overwrite``.
    """
    options = options or BuildOptions()
    options.validate()
    out = Path(out)
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()) and not options.overwrite:
        raise BuildError(f"{str(out)!r} already exists; pass --overwrite to rebuild it, or choose another --out")
    raw_paths = [Path(r) for r in raw_dirs]
    started = time.time()
    items, dropped = _collect(raw_paths, options.exclude)
    # Build the captioner first: an LLM captioner checks its server and key here, so a wrong
    # key or an unreachable server is one clear error before any image is decoded.
    captioner = get_captioner(options.captioner, **options.captioner_options)
    work = out.with_name(out.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    settings = ImageSettings(
        size=options.size, min_size=options.min_size or max(1, options.size // 2),
        crop=options.crop, output_format=options.output_format,
    )
    atomic_write_json(work / "_options.json", asdict(options))
    _process_all(items, work, settings, options.workers)
    t_images = time.time() - started

    fixes = Counter()
    valid: list[_Item] = []
    for item in items:
        res = item.result
        for fix in res.fixes:
            fixes[fix.split(" (")[0] if "extension" not in fix else "wrong extension (format detected from bytes)"] += 1
        if res.error:
            dropped.append({"raw": display_name(item.raw_dir), "image": item.record.image, "name": item.record.name,
                            "reason": res.error, "kind": res.error_kind})
        else:
            valid.append(item)

    # De-duplicate; keep the largest original of each cluster.
    from dishgen.data.dedupe import find_duplicates

    groups = find_duplicates(
        [i.result.sha256 for i in valid], [i.result.phash for i in valid],
        options.dedupe_threshold, quality=[i.result.width * i.result.height for i in valid],
    )
    merged_away: set[int] = set()
    merges = []
    for kept, members in groups.items():
        merges.append({
            "kept": valid[kept].record.image, "kept_raw": display_name(valid[kept].raw_dir),
            "merged": [{"image": valid[m].record.image, "raw": display_name(valid[m].raw_dir), "name": valid[m].record.name,
                        "reason": reason} for m, reason in members],
        })
        for m, reason in members:
            merged_away.add(m)
            kind = "exact_duplicate" if reason.startswith("exact") else "near_duplicate"
            dropped.append({"raw": display_name(valid[m].raw_dir), "image": valid[m].record.image, "name": valid[m].record.name,
                            "reason": f"{reason} of {valid[kept].record.image}", "kind": kind})
    kept_items = [item for i, item in enumerate(valid) if i not in merged_away]

    captions = _caption(kept_items, work, options, captioner)
    captioned = []
    for index, item in enumerate(kept_items):
        if captions.get(index):
            captioned.append((item, captions[index]))
        else:
            dropped.append({"raw": display_name(item.raw_dir), "image": item.record.image, "name": item.record.name,
                            "reason": item.result.error or "no caption", "kind": item.result.error_kind or "caption_failed"})
    if not captioned:
        raise BuildError(f"no usable images remain after validation ({len(dropped)} dropped; see the reasons with -v)")

    group_keys = [dish_key(item.record.name) if item.record.name else f"image:{item.result.sha256}" for item, _ in captioned]
    train_idx, test_idx = split_indices(group_keys, options.test_fraction, options.seed, options.split_by)
    notes = split_notes([dish_key(item.record.name) if item.record.name else "" for item, _ in captioned],
                        test_idx, options.test_fraction, options.split_by)
    for warning in notes["warnings"]:
        log.warning("%s", warning)

    # Assemble the final layout inside the work folder, then rename it into place.
    final = work / "_final"
    if final.exists():
        shutil.rmtree(final)
    counts = {}
    for split, indices in (("train", train_idx), ("test", test_idx)):
        split_dir = final / split
        split_dir.mkdir(parents=True)
        rows = []
        for i in indices:
            item, caption = captioned[i]
            texts = caption if isinstance(caption, list) else [caption]
            ext = Path(item.result.staged).suffix
            name = f"{slugify(item.record.name or texts[0], 40)}-{item.result.sha256[:12]}{ext}"
            link_or_copy(work / "_staging" / item.result.staged, split_dir / name)
            rows.append({
                "file_name": name, "text": texts[0], "captions": texts, "dish": item.record.name,
                "source": item.record.source, "url": item.record.url, "license": item.record.license,
                "raw_id": item.record.id, "original_size": [item.result.width, item.result.height],
                "fixes": "; ".join(item.result.fixes),
            })
        append_jsonl(split_dir / "metadata.jsonl", rows)
        counts[split] = {"images": len(rows), "dishes": len({dish_key(r["dish"]) for r in rows if r["dish"]})}

    kinds = Counter(d["kind"] for d in dropped)
    summary = {
        "dishgen_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": [{"path": display_name(p), "records": len(read_jsonl(p / RECORDS_FILE))} for p in raw_paths],
        "options": {k: v for k, v in asdict(options).items() if k not in ("captioner_options", "overwrite", "workers")},
        "captioner": {"name": options.captioner, "id": _captioner_id(captioner, options),
                      **{k: v for k, v in options.captioner_options.items() if "key" not in k.lower()}},
        "counts": {"input_images": len(items) + sum(d["kind"] in ("excluded", "no_image") for d in dropped),
                   **counts, "dropped": len(dropped)},
        "dropped_by_reason": dict(sorted(kinds.items())),
        "converted": dict(sorted(fixes.items())),
        "dropped": dropped,
        "merged": merges,
        "split": {"by": options.split_by, "test_fraction": options.test_fraction, **notes},
        "seconds": {"images": round(t_images, 2), "total": round(time.time() - started, 2)},
    }
    atomic_write_json(final / "dataset.json", summary)
    publish_directory(final, out, work)
    return summary


def summary_text(summary: dict) -> str:
    """A short human-readable report of a build."""
    c = summary["counts"]
    lines = [
        f"{c['input_images']} input images -> {c['train']['images']} train ({c['train']['dishes']} dishes), "
        f"{c['test']['images']} test ({c['test']['dishes']} dishes), {c['dropped']} dropped",
    ]
    if summary["dropped_by_reason"]:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in summary["dropped_by_reason"].items()))
    if summary["converted"]:
        lines.append("converted: " + ", ".join(f"{k} {v}" for k, v in summary["converted"].items()))
    lines.append(f"took {summary['seconds']['total']:.1f} s")
    return "\n".join(lines)


def print_dropped(summary: dict, limit: int = 50) -> str:
    out = []
    for d in summary["dropped"][:limit]:
        out.append(f"  dropped {d.get('image') or d.get('name')}: {d['reason']}")
    if len(summary["dropped"]) > limit:
        out.append(f"  ... and {len(summary['dropped']) - limit} more (see dataset.json)")
    return "\n".join(out)


def load_summary(dataset: str | Path) -> dict:
    return json.loads((Path(dataset) / "dataset.json").read_text(encoding="utf-8"))
