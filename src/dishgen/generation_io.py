"""Writing generated images: one PNG per image with a readable name, and an optional grid."""

from __future__ import annotations

import re
import time
from pathlib import Path

from dishgen.fileio import atomic_save_image


def slugify(text: str, max_len: int = 48) -> str:
    """A file-name-safe, readable slug of a caption (ASCII, lower case)."""
    import unicodedata

    ascii_text = unicodedata.normalize("NFKD", text.replace("đ", "dj").replace("Đ", "Dj"))
    ascii_text = ascii_text.encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", ascii_text).strip("-").lower()
    return (slug[:max_len].rstrip("-")) or "image"


def write_images(images, prompts: list[str], num_images: int, out_dir: str | Path, *, grid: bool | None = None) -> list[Path]:
    """Save ``images`` (prompt-major, ``num_images`` per prompt) as PNG files in ``out_dir``.

    Names never overwrite earlier results: ``<slug>-<timestamp>-<i>.png``.

    Returns:
        The written paths (the grid, if written, last).
    """
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = []
    for index, image in enumerate(images):
        prompt = prompts[min(index // max(num_images, 1), len(prompts) - 1)]
        base = f"{slugify(prompt)}-{stamp}-{index:03d}"
        path = out / f"{base}.png"
        suffix = 1
        while path.exists():
            path = out / f"{base}-{suffix}.png"
            suffix += 1
        atomic_save_image(image, path)
        paths.append(path)
    if (grid is None and len(images) > 1) or (grid and images):
        w, h = images[0].size
        ncol = num_images if len(prompts) > 1 else min(len(images), 8)
        nrow = -(-len(images) // ncol)
        sheet = Image.new("RGB", (ncol * w, nrow * h), "white")
        for index, image in enumerate(images):
            r, c = divmod(index, ncol)
            sheet.paste(image.convert("RGB").resize((w, h)), (c * w, r * h))
        path = out / f"grid-{stamp}.png"
        suffix = 1
        while path.exists():
            path = out / f"grid-{stamp}-{suffix}.png"
            suffix += 1
        atomic_save_image(sheet, path)
        paths.append(path)
    return paths
