"""Image sets for evaluation: the real split, folders of generated images, resumable generation.

Every set is a list of PNG/JPEG paths (with captions where known) that is checked before any
model runs: readable, non-empty, one size for a generated set. Images are decoded in batches by
:func:`load_batch`, the one place where images are cropped and resized, so real and generated
images go through exactly the same code.

A generated set on disk is an imagefolder like the dataset itself::

    OUT/images/<label>/00012-0.png     row 12 of the split, sample 0
    OUT/images/<label>/metadata.jsonl  file_name, text, row, sample (written when complete)
    OUT/images/<label>/generation.json the model and settings; a re-run with the same settings
                                       generates only the images that are missing
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dishgen.errors import DishgenError
from dishgen.fileio import atomic_write_json, atomic_write_text, read_jsonl
from dishgen.generation_io import call_provenance, image_provenance, save_png

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class ImageSetError(DishgenError):
    """An image set that cannot be evaluated: empty, unreadable, mixed sizes, too small."""


@dataclass
class ImageSet:
    """Images to score, with their captions when known.

    Attributes:
        name: a label for messages and the report.
        paths: the image files.
        captions: one caption per image, or ``None`` (then CLIP metrics are skipped).
        sizes: the distinct ``(width, height)`` found.
    """

    name: str
    paths: list[Path]
    captions: list[str] | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def check_images(paths: list[Path], name: str, *, same_size: bool) -> list[tuple[int, int]]:
    """Open every image's header; fail on the first unreadable one or on mixed sizes.

    Returns:
        The distinct sizes, most common first.
    """
    counts: dict[tuple[int, int], list[Path]] = {}
    for path in paths:
        try:
            with Image.open(path) as im:
                counts.setdefault(im.size, []).append(path)
        except (OSError, UnidentifiedImageError) as err:
            raise ImageSetError(f"{name}: cannot read image {str(path)!r} ({err}); remove or replace it") from err
    sizes = sorted(counts, key=lambda s: -len(counts[s]))
    if same_size and len(sizes) > 1:
        examples = ", ".join(f"{w}x{h} ({len(counts[(w, h)])} images, e.g. {counts[(w, h)][0].name})" for w, h in sizes[:3])
        raise ImageSetError(
            f"{name}: images of different sizes in one generated set: {examples}. A set should come from one "
            "model with one setting; put each model's images in its own folder"
        )
    return sizes


def readable_rows(rows, split: str) -> tuple[list[int], list[dict]]:
    """The rows whose image can be decoded: ``(their indices, skipped)``.

    Each image is decoded in full (a truncated file opens but fails to decode), so one bad photo
    is dropped before anything is generated rather than ending the run halfway. ``skipped`` holds
    ``{"split", "path", "reason"}`` for the report. Indices, not rows: generated files are named
    by their row's place in the whole split, so they keep their caption when a photo is mended.
    """
    from dishgen.images_tensor import decode_each

    def decode(path):
        with Image.open(path) as im:
            im.load()
        return True

    results, skipped = decode_each([r.path for r in rows], decode)
    kept = [i for i, ok in enumerate(results) if ok is not None]
    return kept, [{"split": split, "path": s["path"], "reason": s["reason"]} for s in skipped]


def real_set(rows, name: str, num_samples: int | None = None, seed: int = 0) -> tuple[ImageSet, list[int]]:
    """The real images of a split (optionally a seeded random subset of ``num_samples`` rows).

    Args:
        rows: ``DatasetRow`` list from :func:`dishgen.data.dataset.load_split`.
        name: e.g. ``test split``.
        num_samples: keep this many rows; ``None`` keeps all. The same seed gives nested subsets
            (the first N of one seeded permutation), so a larger N extends a smaller one.
        seed: the subset's seed.

    Returns:
        The set and the chosen row indices (sorted).
    """
    indices = list(range(len(rows)))
    if num_samples is not None and num_samples < len(rows):
        random.Random(seed).shuffle(indices)
        indices = sorted(indices[:num_samples])
    if len(indices) < 2:
        raise ImageSetError(f"{name} has {len(indices)} image(s); FID, KID and the intervals need at least 2")
    paths = [rows[i].path for i in indices]
    sizes = check_images(paths, name, same_size=False)
    return ImageSet(name, paths, [rows[i].text for i in indices], sizes), indices


def folder_set(folder: str | Path) -> ImageSet:
    """Images already on disk: an imagefolder (``metadata.jsonl`` with ``file_name``, ``text``)
    or a plain folder of images (then there are no captions and no CLIP metrics).

    Raises:
        ImageSetError: the folder is missing, empty, has fewer than 2 images, an unreadable
            image, a metadata row naming a missing file, or images of mixed sizes.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageSetError(f"--images {str(root)!r} is not a folder")
    meta = root / "metadata.jsonl"
    if meta.is_file():
        try:
            rows = read_jsonl(meta, strict=True)
        except ValueError as err:
            raise ImageSetError(f"{meta}: {err}") from err
        paths, captions = [], []
        for number, row in enumerate(rows, 1):
            if not row.get("file_name") or not (root / row["file_name"]).is_file():
                raise ImageSetError(f"{meta}:{number}: image {row.get('file_name')!r} is missing")
            paths.append(root / row["file_name"])
            captions.append(row.get("text") or "")
        has_captions = all(captions) and bool(captions)
    else:
        paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        captions, has_captions = [], False
    if len(paths) < 2:
        # Sub-folders are never merged: one folder, one set (a report's images/ holds one per model).
        subsets = sorted(d.name for d in root.iterdir() if d.is_dir() and any(
            p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir()))
        hint = f"; its sub-folders {', '.join(subsets[:5])} hold images: pass each with --images" if subsets else ""
        raise ImageSetError(
            f"--images {str(root)!r} holds {len(paths)} image(s) ({', '.join(IMAGE_SUFFIXES)}); at least 2 are needed{hint}"
        )
    sizes = check_images(paths, f"--images {str(root)!r}", same_size=True)
    return ImageSet(root.name, paths, captions if has_captions else None, sizes)


def load_batch(paths: list[Path], size: int) -> torch.Tensor:
    """Decode images to uint8 ``(B, 3, size, size)``: RGB, centre square crop, bicubic resize.

    The one resize path for real and generated images alike.
    """
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                side = min(w, h)
                if w != h:
                    left, top = (w - side) // 2, (h - side) // 2
                    im = im.crop((left, top, left + side, top + side))
                if side != size:
                    im = im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
                arrays.append(np.asarray(im, dtype=np.uint8))
        except (OSError, UnidentifiedImageError) as err:
            raise ImageSetError(f"cannot decode image {str(path)!r} ({err})") from err
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


# -- generation ---------------------------------------------------------------------------------
def generated_file(row: int, sample: int) -> str:
    """File name of sample ``sample`` for row ``row`` of the split."""
    return f"{row:05d}-{sample}.png"


def check_generation_settings(folder: Path, settings: dict) -> None:
    """Refuse to mix images made with other settings into ``folder``."""
    saved_path = folder / "generation.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    keys = ("model", "family", "seed", "images_per_caption", "knobs")
    diff = [k for k in keys if saved.get(k) != settings.get(k)]
    if diff:
        changes = "; ".join(f"{k}: {saved.get(k)!r} on disk, {settings.get(k)!r} now" for k in diff)
        raise ImageSetError(
            f"{str(folder)!r} holds images generated with other settings ({changes}); use another --out "
            "or delete that folder to generate them again"
        )


def generate_set(
    generator,
    captions: list[str],
    rows: list[int],
    folder: Path,
    *,
    settings: dict,
    images_per_caption: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    knobs: dict | None = None,
    progress: bool = True,
    loader_options: dict | None = None,
    device=None,
    dtype=None,
) -> ImageSet:
    """Generate ``images_per_caption`` images per caption into ``folder``, skipping those on disk.

    Captions are sent in fixed batches of about ``batch_size`` images; each batch is seeded with
    ``seed + its first row``. After an interruption, only the batches with a missing image run
    again, in full and with their own seed, and only the missing files are written: with the same
    batch size an interrupted and resumed run leaves exactly the images of an uninterrupted one.

    Every PNG carries its provenance (see :mod:`dishgen.generation_io`): its caption, the batch's
    seed and the image's index in the batch (which make it again alone), model, family, knobs,
    and its split ``row`` and ``sample``.

    Args:
        generator: a :class:`dishgen.generation.Generator`.
        captions: one caption per row.
        rows: the split's row index of each caption (names the files).
        folder: the output folder.
        settings: what made these images (model, family, seed, images_per_caption, knobs);
            saved as ``generation.json`` and checked on a re-run.
        images_per_caption: K images per caption.
        seed: base seed.
        batch_size: images per ``generate`` call.
        knobs: family knobs for ``generate``.
        progress: show a tqdm bar.
        loader_options: what the generator was loaded with (LoRA files, scheduler), for provenance.
        device: the device asked for, for provenance.
        dtype: the dtype asked for, for provenance.

    Returns:
        The complete set, ``len(captions) * images_per_caption`` images, caption-major.
    """
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    check_generation_settings(folder, settings)
    atomic_write_json(folder / "generation.json", settings)
    k = images_per_caption
    per_call = max(1, batch_size // k)
    batches = [range(start, min(start + per_call, len(rows))) for start in range(0, len(rows), per_call)]
    todo = [chunk for chunk in batches
            if any(not (folder / generated_file(rows[i], s)).is_file() for i in chunk for s in range(k))]
    total = sum(len(chunk) for chunk in todo) * k
    with tqdm(total=total, desc=f"generating {folder.name}", unit="img", disable=not progress) as bar:
        for chunk in todo:
            batch_seed = seed + rows[chunk[0]]
            images = generator.generate([captions[i] for i in chunk], num_images=k, seed=batch_seed, **(knobs or {}))
            if len(images) != len(chunk) * k:
                raise ImageSetError(f"the generator returned {len(images)} images for {len(chunk)} captions x {k}")
            call = call_provenance(generator, model=settings.get("model", ""), seed=batch_seed, knobs=knobs,
                                   loader_options=loader_options, device=device, dtype=dtype)
            for j, image in enumerate(images):  # prompt-major: K images per caption
                row, sample = rows[chunk[j // k]], j % k
                path = folder / generated_file(row, sample)
                if not path.is_file():
                    image = image.convert("RGB")
                    record = image_provenance(call, captions[chunk[j // k]], j, image.size)
                    save_png(image, path, {**record, "row": row, "sample": sample})
            bar.update(len(images))
    names = [generated_file(row, s) for row in rows for s in range(k)]
    meta = [{"file_name": n, "text": captions[i // k], "row": rows[i // k], "sample": i % k} for i, n in enumerate(names)]
    atomic_write_text(folder / "metadata.jsonl", "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in meta))
    paths = [folder / n for n in names]
    sizes = check_images(paths, f"generated images in {str(folder)!r}", same_size=True)
    return ImageSet(folder.name, paths, [captions[i // k] for i in range(len(names))], sizes)
