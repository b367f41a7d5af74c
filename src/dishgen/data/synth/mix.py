"""Mix: a real dataset and a synthetic one in set proportions, split by dish.

``mix_datasets`` combines a real dataset with one from
:func:`~dishgen.data.synth.augment_dataset` into ``train/``, ``validation/`` and ``test/`` with
set shares of synthetic rows (see :class:`MixOptions`); a dish never straddles two splits, and
synthetic images identical to a real one (or to each other) are removed first.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dishgen import __version__
from dishgen.data.dataset import DatasetRow, list_splits, load_split
from dishgen.data.split import dish_key, split_indices
from dishgen.data.synth.common import SynthError, _place
from dishgen.fileio import LOCK_FILE, append_jsonl, atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class MixOptions:
    """Settings of one mix (saved in ``dataset.json``).

    A split's synthetic fraction is the share of synthetic rows among all rows of that split:
    ``synthetic / (real + synthetic)``. Every real row of a split is kept and the number of
    synthetic rows is chosen to hit the fraction (within one image); a fraction of 1 leaves the
    split's real rows out. ``synthetic_fraction=None`` takes every synthetic row train may have.
    """

    synthetic_fraction: float | None = None  # of train
    val_synthetic: float = 0.5
    test_synthetic: float = 0.0
    val_fraction: float = 0.1  # share of the real train rows moved to validation (by dish)
    seed: int = 0
    overwrite: bool = False

    def validate(self) -> None:
        for name in ("synthetic_fraction", "val_synthetic", "test_synthetic"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise SynthError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        if not 0 <= self.val_fraction < 1:
            raise SynthError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")


SPLITS = ("train", "validation", "test")


def content_hash(path: str | Path) -> str:
    """SHA-256 of an image's decoded RGB pixels and size: equal for equal pictures in any format."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        return hashlib.sha256(f"{im.size}".encode() + im.tobytes()).hexdigest()


def _row_dict(row: DatasetRow) -> dict:
    return {"file_name": row.path.name, "text": row.text, "dish": row.dish, **row.extra}


def mix_datasets(real: str | Path, synthetic: str | Path, out: str | Path,
                 options: MixOptions | None = None) -> dict:
    """Mix a real dataset and a synthetic one into train, validation and test splits.

    The real test split stays the test split (so models trained on different mixes are scored
    on the same photos); validation is carved out of the real train split by dish. Each
    synthetic row goes only to the split that holds its dish's real photos (train when the dish
    has none), so no dish straddles two splits. Synthetic images identical to a real image or to
    an earlier synthetic one are removed before counting.

    Args:
        real: the real dataset (``train/``, optionally ``validation/`` and ``test/``).
        synthetic: a dataset from :func:`augment_dataset`.
        out: the dataset to create.
        options: see :class:`MixOptions`.

    Returns:
        The ``dataset.json`` summary.

    Raises:
        SynthError: a bad setting, an existing output, or too few synthetic images for a fraction.
    """
    from dishgen.fileio import atomic_directory

    options = options or MixOptions()
    options.validate()
    real, synthetic, out = Path(real), Path(synthetic), Path(out)
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()) and not options.overwrite:
        raise SynthError(f"{str(out)!r} already exists; pass --overwrite to replace it, "
                         "or choose another --out")
    real_splits = list_splits(real)
    unknown = sorted(set(real_splits) - set(SPLITS))
    if unknown:
        raise SynthError(f"{str(real)!r} has splits {', '.join(unknown)}; "
                         f"mix knows {', '.join(SPLITS)}")
    parts = {split: [_row_dict(r) | {"_path": r.path} for r in load_split(real, split)]
             if split in real_splits else [] for split in SPLITS}
    if not parts["train"]:
        raise SynthError(f"{str(real)!r} has no train split to mix into")
    if not parts["validation"] and options.val_fraction > 0:
        keys = [dish_key(r["dish"]) if r["dish"] else "" for r in parts["train"]]
        train_idx, val_idx = split_indices(keys, options.val_fraction, options.seed, "dish")
        parts["validation"] = [parts["train"][i] for i in val_idx]
        parts["train"] = [parts["train"][i] for i in train_idx]
    synth_rows = [_row_dict(r) | {"_path": r.path} for split in list_splits(synthetic)
                  for r in load_split(synthetic, split)]
    if not synth_rows:
        raise SynthError(f"{str(synthetic)!r} holds no synthetic rows; "
                         "make them with `dishgen data augment`")

    unique_synth, duplicates, real_duplicates = _drop_duplicates(parts, synth_rows)
    eligible, ineligible, straddling = _assign_by_dish(parts, unique_synth)

    wanted = {"train": options.synthetic_fraction, "validation": options.val_synthetic,
              "test": options.test_synthetic}
    rng = random.Random(options.seed)
    chosen, left_out_real, counts = {}, {}, {}
    for split in SPLITS:
        real_rows, pool, fraction = parts[split], eligible[split], wanted[split]
        if fraction == 1:
            left_out_real[split], real_rows = len(real_rows), []
        # synthetic / (real + synthetic) = f  <=>  synthetic = f * real / (1 - f)
        if fraction in (None, 1):
            n = len(pool)
        else:
            n = round(fraction * len(real_rows) / (1 - fraction))
        if n > len(pool):
            best = len(pool) / (len(pool) + len(real_rows))
            hint = ("augment the test split too (`dishgen data augment REAL --split test`)"
                    if split == "test" else
                    "make more with `dishgen data augment --variations/--images-per-caption`")
            raise SynthError(
                f"a synthetic fraction of {fraction} in {split} needs {n} synthetic images of its "
                f"dishes, but only {len(pool)} are there (after removing duplicates): at most "
                f"{best:.3f} is possible; ask for less, or {hint}"
            )
        chosen[split] = real_rows + _spread(pool, n, rng)
        total = len(real_rows) + n
        counts[split] = {"real": len(real_rows), "synthetic": n, "total": total,
                         "dishes": len({dish_key(r["dish"]) for r in chosen[split] if r["dish"]}),
                         "synthetic_fraction": round(n / max(1, total), 6)}
    if not chosen["train"]:
        raise SynthError("the train split would be empty; "
                         "lower --synthetic-fraction or --val-fraction")

    for rows in chosen.values():
        for r in rows:
            r["synthetic"] = bool(r.get("synthetic"))
    _align_columns(list(chosen.values()))
    with atomic_directory(out) as tmp:
        for split in SPLITS:
            if not chosen[split]:
                continue
            (tmp / split).mkdir()
            for r in chosen[split]:
                if (tmp / split / r["file_name"]).exists():
                    raise SynthError(f"two images named {r['file_name']!r} in {split}: "
                                     "rename one of them")
                _place(r["_path"], tmp / split / r["file_name"])
            metadata = [{k: v for k, v in r.items() if k != "_path"} for r in chosen[split]]
            append_jsonl(tmp / split / "metadata.jsonl", metadata)
        used = sum(c["synthetic"] for c in counts.values())
        summary = {
            "dishgen_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kind": "mix",
            "inputs": {"real": str(real), "synthetic": str(synthetic)},
            "options": {k: v for k, v in asdict(options).items() if k != "overwrite"},
            "fraction_definition": "synthetic rows / all rows of the split",
            "counts": counts,
            "synthetic_available": len(synth_rows),
            "removed_duplicates": {"synthetic": len(duplicates),
                                   "real_among_real": real_duplicates},
            "duplicates": duplicates,
            "left_out": {"synthetic_unused": sum(len(p) for p in eligible.values()) - used,
                         "synthetic_fitting_no_split": len(ineligible),
                         "real_rows_by_split": left_out_real},
            "dishes_in_several_real_splits": straddling,
        }
        atomic_write_json(tmp / "dataset.json", summary)
    if straddling:
        log.warning("%d dishes have real photos in more than one split of %s (%s...): the real "
                    "dataset was not split by dish", len(straddling), real,
                    ", ".join(straddling[:3]))
    return summary


def _drop_duplicates(parts: dict[str, list[dict]], synth_rows: list[dict]
                     ) -> tuple[list[dict], list[dict], int]:
    """Synthetic rows whose picture equals no real one and no earlier synthetic one.

    Returns:
        ``(kept, removed, real_duplicates)``: ``removed`` names what each one duplicated;
        ``real_duplicates`` counts equal pictures among the real rows (kept: not ours to fix).
    """
    real_rows = [r for split in SPLITS for r in parts[split]]
    seen = {content_hash(r["_path"]): r for r in real_rows}
    kept, removed = [], []
    for r in synth_rows:
        digest = content_hash(r["_path"])
        first = seen.setdefault(digest, r)
        if first is r:
            kept.append(r)
        else:
            removed.append({"file_name": r["file_name"], "duplicate_of": first["file_name"],
                            "of": "synthetic" if first.get("synthetic") else "real"})
    return kept, removed, len(real_rows) - (len(seen) - len(kept))


def _assign_by_dish(parts: dict[str, list[dict]], synth_rows: list[dict]
                    ) -> tuple[dict[str, list[dict]], list[dict], list[str]]:
    """The split each synthetic row may join: that of its dish's real photos (train if none).

    Returns:
        ``(eligible by split, rows that fit no split, dishes whose real photos straddle splits)``.
        A synthetic row made from a test photo may only go to test; one without a dish only to
        train, and only if made from a train photo.
    """
    home: dict[str, set[str]] = {}
    for split in SPLITS:
        for r in parts[split]:
            if r["dish"]:
                home.setdefault(dish_key(r["dish"]), set()).add(split)
    eligible: dict[str, list[dict]] = {split: [] for split in SPLITS}
    ineligible = []
    for r in synth_rows:
        if r["dish"]:
            splits = home.get(dish_key(r["dish"]), {"train"})
        else:
            splits = {"train"} if r.get("source_split", "train") == "train" else set()
        if r.get("source_split") == "test":  # made from a test photo: never trained on
            splits = splits & {"test"}
        if len(splits) == 1:
            eligible[next(iter(splits))].append(r)
        else:
            ineligible.append(r)
    return eligible, ineligible, sorted(d for d, s in home.items() if len(s) > 1)


_EMPTY = {str: "", bool: False, int: -1, float: float("nan"), list: [], dict: {}}


def _align_columns(splits: list[list[dict]]) -> None:
    """Give every row the same columns, in the same order, with the same types (in place).

    ``datasets.load_dataset("imagefolder")`` refuses splits whose metadata differ in columns or
    types, and reads a column that is empty in one split as type null. So a real row gets the
    synthetic columns (``""``, ``False``) and a synthetic row the real ones, typed like the others.
    """
    kinds: dict[str, type | None] = {}
    rows = [r for split in splits for r in split]
    for r in rows:
        for key, value in r.items():
            if key != "_path" and (kinds.get(key) is None):
                kinds[key] = None if value is None else type(value)
    for split in splits:
        for index, r in enumerate(split):
            for key, kind in kinds.items():
                if r.get(key) is not None:
                    continue
                if key == "captions":
                    r[key] = [r["text"]]
                elif key == "original_size":
                    from PIL import Image

                    with Image.open(r["_path"]) as im:
                        r[key] = list(im.size)
                else:
                    empty = _EMPTY.get(kind)
                    r[key] = empty.copy() if isinstance(empty, (list, dict)) else empty
            split[index] = {key: r.get(key) for key in kinds} | {"_path": r["_path"]}


def _spread(pool: list[dict], n: int, rng: random.Random) -> list[dict]:
    """``n`` rows of ``pool`` spread over source images: one of each source before a second."""
    by_source: dict[str, list[dict]] = {}
    for r in pool:
        by_source.setdefault(str(r.get("source_image") or r["file_name"]), []).append(r)
    sources = sorted(by_source)
    rng.shuffle(sources)
    for key in sources:
        rng.shuffle(by_source[key])
    picked: list[dict] = []
    depth = 0
    while len(picked) < n:
        for key in sources:
            if depth < len(by_source[key]) and len(picked) < n:
                picked.append(by_source[key][depth])
        depth += 1
    return picked


def mix_summary_text(summary: dict) -> str:
    """A short human-readable report of a mix."""
    lines = [f"{split}: {c['total']} images ({c['real']} real, {c['synthetic']} synthetic = "
             f"{c['synthetic_fraction']:.3f}), {c['dishes']} dishes"
             for split, c in summary["counts"].items()]
    lines.append(f"removed {summary['removed_duplicates']['synthetic']} synthetic duplicates; "
                 f"{summary['left_out']['synthetic_unused']} synthetic images unused")
    return "\n".join(lines)
