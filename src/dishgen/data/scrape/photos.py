"""Downloading a recipe's photo: the real format from the bytes, stored under its content hash."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from dishgen.data.scrape.http import FetchError, PoliteClient
from dishgen.fileio import atomic_write_bytes

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


class PhotoError(Exception):
    """No usable photo; the message is the reason recorded for the recipe's URL.

    Attributes:
        retryable: a later run may succeed (a candidate failed with a timeout, 429 or 5xx).
    """

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Photo:
    """A stored photo."""

    path: str  # relative to the raw folder: images/<sha256>.<ext>
    url: str
    width: int
    height: int
    format: str


def check_image(data: bytes, min_side: int) -> tuple[str, int, int]:
    """The format, width and height of image bytes that decode fully and are large enough.

    Raises:
        PhotoError: the bytes are not an image Pillow can decode, or its shorter side is below
            ``min_side`` pixels (a thumbnail, not the recipe's photo).
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            im.load()  # decodes everything: catches truncated files that open() accepts
            width, height = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        head = data[:16]
        raise PhotoError(f"not an image (bytes start {head!r}; {type(err).__name__})") from err
    if fmt not in EXTENSIONS:
        raise PhotoError(f"unsupported image format {fmt or 'unknown'}")
    if min(width, height) < min_side:
        raise PhotoError(f"photo too small ({width}x{height} < {min_side} px): a thumbnail")
    return fmt, width, height


def fetch_photo(
    client: PoliteClient,
    candidates: list[str],
    raw_dir: Path,
    *,
    min_side: int = 256,
    exclude: set[str] | None = None,
) -> Photo:
    """Download the first usable photo among ``candidates`` into ``raw_dir/images``.

    Args:
        client: the polite client.
        candidates: photo URLs, best first (from :func:`parse_recipe`).
        raw_dir: the raw folder.
        min_side: smallest accepted shorter side in pixels.
        exclude: URLs never to use (the listing thumbnail).

    Raises:
        PhotoError: no candidate gave a usable photo; the message lists why for each.
    """
    exclude = exclude or set()
    problems, retryable = [], False
    usable = [url for url in candidates if url not in exclude]
    if not usable:
        raise PhotoError("recipe page names no photo" + (
            " (only the listing thumbnail, which is not used)" if candidates else ""))
    for url in usable[:4]:
        try:
            page = client.get(url, use_cache=False, offsite_redirects=True)
            fmt, width, height = check_image(page.content, min_side)
        except (FetchError, PhotoError) as err:
            problems.append(f"{url}: {getattr(err, 'reason', err)}")
            retryable = retryable or getattr(err, "retryable", False)
            continue
        digest = hashlib.sha256(page.content).hexdigest()
        relative = f"images/{digest}.{EXTENSIONS[fmt]}"
        target = raw_dir / relative
        if not target.exists():
            atomic_write_bytes(target, page.content)
        return Photo(path=relative, url=url, width=width, height=height, format=fmt)
    raise PhotoError("no usable photo: " + "; ".join(problems), retryable=retryable)
