"""Decode, validate, normalise, hash and crop one image, in a single decode.

``process_image`` is the unit of work of ``data build``: it runs in worker processes, reads the
file once and returns everything the later stages need (content hash, perceptual hash, what was
fixed, why it was dropped), having already written the cropped, resized image to the staging
folder. Nothing here raises for a bad image: the reason is returned and recorded.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

# Pillow's own guard is 89 Mpx (warning) / 179 Mpx (error). A dish photo never needs more than
# 40 Mpx; anything bigger is refused before decoding (a decompression bomb costs GBs of memory).
MAX_PIXELS = 40_000_000
# A file is read whole into memory; an uncompressed 16-bit 40 Mpx TIFF is 240 MB.
MAX_FILE_BYTES = 512 * 1024 * 1024
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}

_FORMAT_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "PNG": {".png"},
    "WEBP": {".webp"},
    "GIF": {".gif"},
    "BMP": {".bmp"},
    "TIFF": {".tif", ".tiff"},
    "MPO": {".jpg", ".jpeg", ".mpo"},
}
IMAGE_EXTENSIONS = set().union(*_FORMAT_EXTENSIONS.values())


@dataclass
class ImageSettings:
    """How images are cropped and resized."""

    size: int = 512
    min_size: int = 256
    # "center", "pad" (letterbox on white, keeps the whole dish) or "keep" (no crop: the aspect ratio is
    # kept, shorter side = size; for LoRA training with aspect-ratio buckets)
    crop: str = "center"
    output_format: str = "png"  # "png" (lossless) or "jpg"
    jpeg_quality: int = 95


@dataclass
class ImageResult:
    """What processing one file found. ``error`` set means the image was dropped."""

    source: str
    sha256: str = ""
    phash: str = ""  # 16 hex digits (64-bit pHash of the whole, uncropped image)
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    fixes: list[str] = field(default_factory=list)  # what was converted, e.g. "CMYK->RGB"
    error: str | None = None
    error_kind: str | None = None  # a short category for the counts in dataset.json
    staged: str = ""  # file name written in the staging folder

    def to_json(self) -> dict:
        return asdict(self)


def _fail(result: ImageResult, kind: str, message: str) -> ImageResult:
    result.error_kind = kind
    result.error = message
    return result


def to_rgb(image: Image.Image, fixes: list[str]) -> Image.Image:
    """Convert any mode to 8-bit RGB; transparency is composited on white (dish photos)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale the real range to 8 bits instead of clipping at 255.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        scaled = (array - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype("uint8"), "L")
        fixes.append(f"{mode}->L (rescaled)")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        fixes.append(f"P->{image.mode}")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
        fixes.append(f"{mode}->RGB (alpha on white)")
        return image
    if mode == "CMYK":
        fixes.append("CMYK->RGB")
        return image.convert("RGB")
    if mode != "RGB":
        fixes.append(f"{mode}->RGB")
        return image.convert("RGB")
    return image


def crop_square(image: Image.Image, size: int, how: str = "center") -> Image.Image:
    """Centre-crop (or pad on white) to a square and resize with Lanczos."""
    w, h = image.size
    if how == "pad":
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    elif w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        # reducing_gap: Pillow first shrinks by an integer factor (fast), then Lanczos (exact).
        image = image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def resize_keep_aspect(image: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side is ``size`` (Lanczos), keeping the aspect ratio; never enlarge."""
    w, h = image.size
    if min(w, h) <= size:
        return image
    scale = size / min(w, h)
    new = (size, max(size, round(h * scale))) if w <= h else (max(size, round(w * scale)), size)
    return image.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)


def phash_hex(image: Image.Image) -> str:
    """64-bit perceptual hash (imagehash.phash) as 16 hex digits."""
    import imagehash

    return str(imagehash.phash(image))


def process_image(path: str, staging_dir: str, settings: ImageSettings) -> ImageResult:
    """Validate one image file and write its cropped, resized RGB copy into ``staging_dir``.

    Never raises for a bad file: whatever goes wrong with one image (a decoder error of any
    type, a corrupt EXIF block) is returned as the reason, so a build goes on. Only a full or
    read-only disk raises ``OSError``: that is no fault of the image, and every other would fail too.

    Args:
        path: the image file.
        staging_dir: where the processed image goes, named by the content hash.
        settings: size, minimum size, crop mode and output format.

    Returns:
        An :class:`ImageResult`; ``error`` is set (and nothing is written) when the image is
        unusable: missing, not a regular file, empty, larger than :data:`MAX_FILE_BYTES`, not
        an image, truncated, too large, animated, too small, or failing in any other way.
    """
    try:
        return _process_image(path, staging_dir, settings)
    except OSError as err:
        if err.errno in _ENVIRONMENT_ERRNOS:
            raise  # a full or read-only disk is no fault of this image: stop, and say so
        return _fail(ImageResult(source=str(path)), "corrupt", f"cannot process it ({err})")
    except Exception as err:  # Pillow's plugins raise many types on hostile bytes; recorded, not swallowed
        message = " ".join(str(err).split())[:300]
        return _fail(ImageResult(source=str(path)), "corrupt", f"cannot process it ({type(err).__name__}: {message})")


def _process_image(path: str, staging_dir: str, settings: ImageSettings) -> ImageResult:
    result = ImageResult(source=str(path))
    file = Path(path)
    try:
        info = os.stat(file)
        if not stat.S_ISREG(info.st_mode):
            # A FIFO would block the worker forever on open; a folder or device is no image either.
            return _fail(result, "unreadable", "not a regular file (a folder, FIFO, socket or device)")
        if info.st_size > MAX_FILE_BYTES:
            return _fail(result, "too_large", f"{info.st_size:,} bytes is more than {MAX_FILE_BYTES:,} (file size guard)")
        data = file.read_bytes()
    except OSError as err:
        return _fail(result, "unreadable", f"cannot read file: {err.strerror or err}")
    if not data:
        return _fail(result, "empty", "zero-byte file")
    result.sha256 = hashlib.sha256(data).hexdigest()
    suffix = ".jpg" if settings.output_format == "jpg" else ".png"
    staged_name = f"{result.sha256}-{settings.size}-{settings.crop}{suffix}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            result.format, result.mode = image.format or "", image.mode
            result.width, result.height = image.size
            if image.width * image.height > MAX_PIXELS:
                return _fail(result, "too_large", f"{image.width}x{image.height} exceeds {MAX_PIXELS:,} pixels (decompression-bomb guard)")
            if getattr(image, "is_animated", False) and getattr(image, "n_frames", 1) > 1:
                return _fail(result, "animated", f"animated {image.format} with {image.n_frames} frames")
            expected = _FORMAT_EXTENSIONS.get(result.format)
            if expected is not None and file.suffix.lower() not in expected:
                result.fixes.append(f"extension {file.suffix or '(none)'} but {result.format} data")
            if result.format == "JPEG" and min(image.size) >= 2 * settings.size and settings.crop in ("center", "keep"):
                # Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 in the DCT (much cheaper).
                # draft keeps the image at least as large as asked for, so no quality is lost.
                scale = settings.size / min(image.size)
                image.draft("RGB", (int(image.width * scale) + 1, int(image.height * scale) + 1))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return _fail(result, "too_large", f"decompression bomb: {err}")
    except Image.UnidentifiedImageError:
        return _fail(result, "not_an_image", "not a recognised image format")
    except (OSError, SyntaxError, ValueError) as err:
        message = str(err)
        kind = "truncated" if "truncat" in message.lower() or "broken" in message.lower() else "corrupt"
        return _fail(result, kind, f"cannot decode: {message}")

    exif_orientation = image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1
    if exif_orientation not in (0, 1):
        image = ImageOps.exif_transpose(image)
        result.fixes.append(f"EXIF orientation {exif_orientation} applied")
    image = to_rgb(image, result.fixes)
    # Compare the true size (before any JPEG draft) with the minimum.
    true_w, true_h = (result.width, result.height)
    if exif_orientation in (5, 6, 7, 8):
        true_w, true_h = true_h, true_w
    result.width, result.height = true_w, true_h
    if min(true_w, true_h) < settings.min_size:
        return _fail(result, "too_small", f"{true_w}x{true_h} is smaller than --min-size {settings.min_size}")
    result.phash = phash_hex(image)
    out = resize_keep_aspect(image, settings.size) if settings.crop == "keep" else crop_square(image, settings.size, settings.crop)
    target = Path(staging_dir) / staged_name
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        if settings.output_format == "jpg":
            out.save(tmp, format="JPEG", quality=settings.jpeg_quality, subsampling=0)
        else:
            out.save(tmp, format="PNG", compress_level=1)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    result.staged = staged_name
    return result
