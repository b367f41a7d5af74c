"""Downloading a recipe's photo: the real format from the bytes, stored under its content hash."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dishgen.data.scrape.http import FetchError, PoliteClient
from dishgen.data.scrape.images import ImageCandidate
from dishgen.errors import DishgenError
from dishgen.fileio import atomic_write_bytes

# A recipe photo is a few Mpx; 40 Mpx (e.g. 8000x5000) decodes to 120 MB of RGB.
MAX_PIXELS = 40_000_000
MAX_DOWNLOADS = 8  # candidates downloaded per recipe before it is skipped
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


class PhotoError(DishgenError):
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


def check_image(data: bytes, min_side: int, max_pixels: int = MAX_PIXELS) -> tuple[str, int, int]:
    """The format, width and height of image bytes that decode fully and are large enough.

    The header is read first: an image of more than ``max_pixels`` pixels (a decompression bomb:
    a few KB that would decode to GBs) or a thumbnail is refused without decoding it.

    Raises:
        PhotoError: the bytes are not an image Pillow can decode (whatever the decoder raised),
            have more than ``max_pixels`` pixels, or a shorter side below ``min_side`` pixels.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or ""
                width, height = im.size
                if fmt in EXTENSIONS and width * height <= max_pixels and min(width, height) >= min_side:
                    im.load()  # decodes everything: catches truncated files that open() accepts
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise PhotoError(f"image too large to decode safely, a decompression bomb? ({err})") from err
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 (decoders raise many types on hostile bytes)
        head = data[:16]
        raise PhotoError(f"not an image (bytes start {head!r}; {type(err).__name__})") from err
    if fmt not in EXTENSIONS:
        raise PhotoError(f"unsupported image format {fmt or 'unknown'}")
    if width * height > max_pixels:
        raise PhotoError(f"image too large ({width}x{height} = {width * height / 1e6:.0f} Mpx, over "
                         f"the {max_pixels / 1e6:.0f} Mpx limit): a decompression bomb or a poster")
    if min(width, height) < min_side:
        raise PhotoError(f"photo too small ({width}x{height} < {min_side} px): a thumbnail")
    return fmt, width, height


def fetch_photo(
    client: PoliteClient,
    candidates: list[ImageCandidate | str],
    raw_dir: Path,
    *,
    min_side: int = 256,
    exclude: set[str] | None = None,
    max_downloads: int = MAX_DOWNLOADS,
) -> Photo:
    """Download the first usable photo among ``candidates`` into ``raw_dir/images``.

    Candidates whose declared or URL-encoded shorter side is under ``min_side`` are skipped
    without a download (a gallery's thumbnails); the others are downloaded in order, at most
    ``max_downloads`` of them, until one decodes with a shorter side of at least ``min_side``.

    Args:
        client: the polite client.
        candidates: photo candidates (or plain URLs), best first (from :func:`parse_recipe`).
        raw_dir: the raw folder.
        min_side: smallest accepted shorter side in pixels.
        exclude: URLs never to use (the listing thumbnail).
        max_downloads: most candidates downloaded for one recipe.

    Raises:
        PhotoError: no candidate gave a usable photo; the message says why for each candidate
            downloaded and counts those skipped as known thumbnails.
    """
    exclude = exclude or set()
    candidates = [c if isinstance(c, ImageCandidate) else ImageCandidate(c) for c in candidates]
    usable = [c for c in candidates if c.url not in exclude]
    if not usable:
        raise PhotoError("recipe page names no photo" + (
            " (only the listing thumbnail, which is not used)" if candidates else ""))
    problems, retryable, small = [], False, []
    for candidate in usable:
        if candidate.shorter_side is not None and candidate.shorter_side < min_side:
            small.append(candidate)
            continue
        if len(problems) >= max_downloads:
            problems.append(f"{len(usable) - len(small) - max_downloads} more not tried "
                            f"(at most {max_downloads} downloads per recipe)")
            break
        url = candidate.url
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
    if small:
        sizes = ", ".join(f"{c.width or '?'}x{c.height or '?'}" for c in small[:5])
        problems.append(f"{len(small)} thumbnail(s) under {min_side} px by their declared or "
                        f"URL size, not downloaded ({sizes}{', ...' if len(small) > 5 else ''})")
    raise PhotoError("no usable photo: " + "; ".join(problems), retryable=retryable)
