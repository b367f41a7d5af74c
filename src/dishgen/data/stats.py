"""``data stats``: what is in a dataset, at a glance."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from PIL import Image

from dishgen.data.dataset import DatasetError, list_splits
from dishgen.data.split import dish_key
from dishgen.fileio import read_jsonl


def dataset_stats(dataset: str | Path) -> dict:
    """Counts per split, dishes, caption lengths (words) and image sizes.

    Raises:
        DatasetError: not a dataset folder.
    """
    root = Path(dataset)
    splits = list_splits(root)
    if not splits:
        raise DatasetError(f"{str(root)!r} is not a dishgen dataset (no <split>/metadata.jsonl); build one with `dishgen data build`")
    result: dict = {"path": str(root), "splits": {}}
    dishes_per_split = {}
    for split in splits:
        rows = read_jsonl(root / split / "metadata.jsonl")
        words = [len(str(r.get("text", "")).split()) for r in rows]
        sizes = Counter()
        for r in rows:
            try:
                with Image.open(root / split / r["file_name"]) as im:
                    sizes[f"{im.width}x{im.height}"] += 1
            except (OSError, KeyError):
                sizes["unreadable"] += 1
        dishes = Counter(dish_key(r.get("dish") or "") for r in rows if r.get("dish"))
        dishes_per_split[split] = set(dishes)
        result["splits"][split] = {
            "images": len(rows),
            "dishes": len(dishes),
            "captions_per_image": round(statistics.mean(len(r.get("captions") or [1]) for r in rows), 2) if rows else 0,
            "caption_words": {
                "min": min(words, default=0), "median": statistics.median(words) if words else 0,
                "mean": round(statistics.mean(words), 1) if words else 0, "max": max(words, default=0),
                "histogram": _histogram(words),
            },
            "image_sizes": dict(sizes.most_common()),
            "sources": dict(Counter(r.get("source") or "unknown" for r in rows).most_common()),
        }
    if "train" in dishes_per_split and "test" in dishes_per_split:
        result["dishes_in_both_train_and_test"] = len(dishes_per_split["train"] & dishes_per_split["test"])
    meta = root / "dataset.json"
    if meta.is_file():
        built = json.loads(meta.read_text(encoding="utf-8"))
        result["build"] = {k: built.get(k) for k in ("options", "captioner", "counts", "dropped_by_reason", "converted")}
    return result


def _histogram(words: list[int]) -> dict[str, int]:
    bins = [(0, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, 50), (51, 10**9)]
    out = {}
    for lo, hi in bins:
        n = sum(lo <= w <= hi for w in words)
        if n:
            out[f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"] = n
    return out


def format_stats(stats: dict) -> str:
    """Render :func:`dataset_stats` as a short text report."""
    lines = [f"dataset {stats['path']}"]
    for split, s in stats["splits"].items():
        cw = s["caption_words"]
        lines.append(
            f"  {split:<6} {s['images']:>6} images  {s['dishes']:>5} dishes  "
            f"caption words min/median/mean/max {cw['min']}/{cw['median']}/{cw['mean']}/{cw['max']}"
        )
        hist = "  ".join(f"{k}: {v}" for k, v in cw["histogram"].items())
        lines.append(f"         caption length histogram (words): {hist}")
        sizes = ", ".join(f"{k} ({v})" for k, v in list(s["image_sizes"].items())[:4])
        lines.append(f"         image sizes: {sizes}; sources: {', '.join(f'{k} ({v})' for k, v in s['sources'].items())}")
    if "dishes_in_both_train_and_test" in stats:
        lines.append(f"  dishes in both train and test: {stats['dishes_in_both_train_and_test']}")
    build = stats.get("build")
    if build and build.get("dropped_by_reason"):
        lines.append("  dropped at build: " + ", ".join(f"{k} {v}" for k, v in build["dropped_by_reason"].items()))
    return "\n".join(lines)
