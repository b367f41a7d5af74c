"""Conversions between PIL images and tensors in [-1, 1] (the GAN/VAE convention)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)


def pil_to_tensor(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float tensor in [-1, 1], resized to ``size`` if given."""
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) or (3, H, W) tensor in [-1, 1] -> list of RGB PIL images."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    array = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, "RGB") for a in array]


def load_images_uint8(paths, size: int, workers: int | None = None) -> torch.Tensor:
    """Decode and resize images to a (N, 3, size, size) uint8 tensor (kept in memory for training).

    An unreadable image raises; :func:`load_images_uint8_skipping` skips it instead."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(lambda path: _decode_uint8(path, size), list(paths)))
    if not arrays:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def decode_each(paths, load, *, workers: int | None = None) -> tuple[list, list[dict]]:
    """Run ``load(path)`` on every path in a thread pool; one image that cannot be read never stops the rest.

    A missing, truncated, corrupt or undecodable file (any ``Exception`` from ``load``: PIL's
    ``UnidentifiedImageError``, ``OSError``, ``DecompressionBombError``, ...) is skipped.

    Returns:
        ``(results, skipped)``: ``results[i]`` is ``load(paths[i])`` or ``None`` for a skipped path;
        ``skipped`` lists ``{"index", "path", "reason"}`` for each skipped path, in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    def attempt(path):
        try:
            return load(path), None
        except Exception as err:  # noqa: BLE001 - every unreadable file is recorded, never fatal
            return None, f"{type(err).__name__}: {err}"

    paths = list(paths)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(attempt, paths))
    skipped = [{"index": i, "path": str(p), "reason": reason}
               for i, (p, (_, reason)) in enumerate(zip(paths, outcomes, strict=True)) if reason is not None]
    return [result for result, _ in outcomes], skipped


def check_readable(kept: list[int], skipped: list[dict], *, what: str = "training images") -> None:
    """Refuse a set of images of which none could be read.

    Raises:
        DatasetError: every image was skipped (nothing to train on), naming the first and why.
    """
    from dishgen.data.dataset import DatasetError

    if skipped and not kept:
        raise DatasetError(f"none of the {len(skipped)} {what} could be read (e.g. {skipped[0]['path']!r}: "
                           f"{skipped[0]['reason']}); check the dataset folder or rebuild it with `dishgen data build`")


def record_skipped(skipped: list[dict], total: int, run_dir, *, what: str = "training images") -> None:
    """Say which images were skipped and why: one warning, and ``RUN/skipped-images.jsonl`` (atomic)."""
    import json
    import logging
    from pathlib import Path

    from dishgen.fileio import atomic_write_text

    if not skipped:
        return
    record = Path(run_dir) / "skipped-images.jsonl"
    atomic_write_text(record, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in skipped))
    first = skipped[0]
    logging.getLogger("dishgen.train").warning(
        "%d of %d %s could not be read and are skipped (e.g. %s: %s); all are listed in %s", len(skipped), total,
        what, first["path"], first["reason"], record)


def load_images_uint8_skipping(paths, size: int, workers: int | None = None) -> tuple[torch.Tensor, list[int], list[dict]]:
    """:func:`load_images_uint8`, skipping unreadable images: ``(images, kept indices, skipped)``.

    Images that are not square are centre-cropped (as ``data build --crop center``), with one
    warning that counts them, rather than squashed."""
    cropped: list = []
    arrays, skipped = decode_each(paths, lambda path: _decode_uint8(path, size, cropped), workers=workers)
    if cropped:
        logger.warning("%d of %d images are not square (e.g. %s): centre-cropped to %d x %d", len(cropped),
                       len(arrays), cropped[0], size, size)
    kept = [i for i, a in enumerate(arrays) if a is not None]
    if not kept:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), kept, skipped
    return torch.from_numpy(np.stack([arrays[i] for i in kept])).permute(0, 3, 1, 2).contiguous(), kept, skipped


def _decode_uint8(path, size: int, cropped: list | None = None) -> np.ndarray:
    """One image as ``(size, size, 3)`` uint8; a non-square one is centre-cropped and, if given,
    its path appended to ``cropped``."""
    from dishgen.data.images import crop_square

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width != im.height:
            if cropped is not None:
                cropped.append(str(path))
            im = crop_square(im, size, "center")
        elif im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8)
