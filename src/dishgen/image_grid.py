"""Image grids with a caption beside each row: training sample grids and generated-image grids.

Neutral ground (Pillow only), so that training, generation and evaluation share one grid and one
font without importing each other.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

LABEL_WIDTH = 160


def label_font(size: int = 11):
    """DejaVu Sans (shipped with matplotlib; it has č, ć, š, ž, đ), else Pillow's default font."""
    from PIL import ImageFont

    try:
        import matplotlib

        path = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def wrap_label(text: str, width: int = 24, max_lines: int = 6) -> str:
    """Wrap a caption to ``width`` characters a line; cut to ``max_lines`` lines, ending in an ellipsis."""
    lines = textwrap.wrap(text, width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1].rstrip() + "…"
    return "\n".join(lines)


def captioned_grid(images: list, ncol: int, labels: list[str] | None = None, label_width: int = LABEL_WIDTH):
    """Paste PIL images into a grid, ``ncol`` a row, with ``labels[r]`` written left of row ``r``.

    Every cell takes the first image's size. A label gets as many lines as fit its row's height
    (at most 6), so labels of short rows never run into the next row.

    Args:
        images: PIL images, row-major.
        ncol: images per row.
        labels: one caption per row (missing rows stay unlabelled); ``None`` for no label column.
        label_width: width in pixels of the label column.

    Returns:
        The grid as an RGB PIL image.
    """
    from PIL import Image, ImageDraw

    if not images:
        raise ValueError("no images to put in a grid")
    w, h = images[0].size
    ncol = max(1, min(ncol, len(images)))
    nrows = math.ceil(len(images) / ncol)
    left = label_width if labels else 0
    grid = Image.new("RGB", (left + ncol * w, nrows * h), "white")
    for i, image in enumerate(images):
        r, c = divmod(i, ncol)
        pic = image.convert("RGB")
        grid.paste(pic if pic.size == (w, h) else pic.resize((w, h)), (left + c * w, r * h))
    if labels:
        font = label_font()
        draw = ImageDraw.Draw(grid)
        line_height = font.size + 4 if hasattr(font, "size") else 15
        max_lines = max(1, min(6, (h - 4) // line_height))
        for r, text in enumerate(labels[:nrows]):
            draw.multiline_text((4, r * h + 4), wrap_label(text, 24, max_lines), fill="black", font=font, spacing=4)
    return grid
