"""Writing generated images: one PNG per image with a readable name, an optional captioned grid,
and the provenance of every image inside its PNG.

Every PNG dishgen writes carries two text chunks (iTXt, so ć, š, ž survive):

- ``parameters``: a human-readable summary in the style other generators use (AUTOMATIC1111)::

      Sarma, cabbage rolls in a clay pot
      Negative prompt: blurry
      Steps: 25, Sampler: dpm++, CFG scale: 7.0, Seed: 1, Size: 512x512, Model: runs/lora, ...

- ``dishgen``: the same facts as JSON, the source of truth that ``dishgen generate --from-png``
  reads: caption, negative caption, seed and index, model reference, family, knobs, LoRA files
  and scales, scheduler, device, dtype, image size and the dishgen version.

Seeds: image ``k`` of a call seeded ``S`` is made again alone by
``generator.generate([caption], seed=S, first_index=k)`` in every family (diffusion: its own
generator seeded ``S + k``; cGAN/cVAE: row ``k`` of the seed's noise stream). The chunk records
``seed`` = S and ``index`` = k.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from dishgen.errors import DishgenError
from dishgen.fileio import atomic_save_image

CHUNK_KEY = "dishgen"
PARAMETERS_KEY = "parameters"
SCHEMA = 1


class ProvenanceError(DishgenError):
    """A file that carries no readable dishgen provenance (not a PNG, no chunk, corrupt chunk)."""


def slugify(text: str, max_len: int = 48) -> str:
    """A file-name-safe, readable slug of a caption (ASCII, lower case)."""
    import unicodedata

    ascii_text = unicodedata.normalize("NFKD", text.replace("đ", "dj").replace("Đ", "Dj"))
    ascii_text = ascii_text.encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", ascii_text).strip("-").lower()
    return (slug[:max_len].rstrip("-")) or "image"


# -- provenance ---------------------------------------------------------------------------------


def call_provenance(generator, *, model: str | Path, seed: int, knobs: dict[str, Any] | None = None,
                    loader_options: dict[str, Any] | None = None, device=None, dtype=None,
                    first_index: int = 0) -> dict[str, Any]:
    """What one ``generator.generate`` call used: the part of the provenance its images share.

    Args:
        generator: the loaded :class:`dishgen.generation.Generator` (gives ``family`` and, where
            it has them, the ``defaults`` of its knobs, which are recorded as used).
        model: the model reference as given (``default``, a folder, a hub id).
        seed: the call's seed (never ``None``: draw one before the call, so it can be recorded).
        knobs: the knobs passed to ``generate`` (``negative_prompt`` is recorded as the
            negative caption).
        loader_options: ``lora``, ``lora_scale``, ``scheduler`` given to ``load_generator``
            (a ``token`` is never recorded).
        device: the device asked for (``None`` = default).
        dtype: the dtype asked for (``None`` = default).
        first_index: the call's ``first_index`` (its image ``i`` has index ``first_index + i``).

    Returns:
        A JSON-ready dict.
    """
    from dishgen import __version__
    from dishgen.generation import normalize_knobs

    knobs = normalize_knobs(dict(knobs or {}))
    negative = knobs.pop("negative_prompt", None)
    used = {**dict(getattr(generator, "defaults", None) or {}), **{k: v for k, v in knobs.items() if v is not None}}
    record: dict[str, Any] = {
        "schema": SCHEMA, "dishgen_version": __version__, "model": str(model),
        "family": generator.family, "seed": int(seed), "first_index": int(first_index), "knobs": used,
    }
    if negative:
        record["negative_caption"] = negative
    options = loader_options or {}
    if options.get("lora"):
        loras = [str(p) for p in options["lora"]]
        scales = list(options.get("lora_scale") or [1.0] * len(loras))
        record["lora"] = [{"path": p, "scale": float(s)} for p, s in zip(loras, scales, strict=True)]
    if options.get("scheduler"):
        record["scheduler"] = options["scheduler"]
    record["device"], record["dtype"] = device, dtype
    return record


def image_provenance(call: dict[str, Any], caption: str, index: int, size: tuple[int, int]) -> dict[str, Any]:
    """One image's record: the call's record plus its caption, index in the call and size.

    ``index`` counts from the call's ``first_index``, so ``(seed, index)`` names the image.
    """
    record = {"caption": caption, **{k: v for k, v in call.items() if k != "first_index"}}
    record["index"] = int(call.get("first_index", 0)) + int(index)
    record["size"] = [int(size[0]), int(size[1])]
    return record


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(ch in text for ch in ",:\n") else text


def parameters_text(record: dict[str, Any]) -> str:
    """The human-readable ``parameters`` text (AUTOMATIC1111 style) of an image or grid record."""
    knobs = dict(record.get("knobs") or {})
    if "grid" in record:
        captions = list(dict.fromkeys(cell["caption"] for cell in record["grid"]["cells"]))
        first = "\n".join(captions)
    else:
        first = record.get("caption", "")
    lines = [first]
    if record.get("negative_caption"):
        lines.append(f"Negative prompt: {record['negative_caption']}")
    fields: list[tuple[str, Any]] = []
    if "num_inference_steps" in knobs:
        fields.append(("Steps", knobs.pop("num_inference_steps")))
    if record.get("scheduler"):
        fields.append(("Sampler", record["scheduler"]))
    if "guidance_scale" in knobs:
        fields.append(("CFG scale", knobs.pop("guidance_scale")))
    fields.append(("Seed", record.get("seed")))
    if record.get("index"):
        fields.append(("Image index", record["index"]))
    if "size" in record:
        fields.append(("Size", "x".join(str(v) for v in record["size"])))
    fields += [("Model", record.get("model")), ("Family", record.get("family"))]
    knobs.pop("batch_size", None)  # does not change the pixels
    fields += [(name.replace("_", " ").capitalize(), value) for name, value in sorted(knobs.items())]
    if record.get("lora"):
        fields.append(("Lora", ", ".join(f"{item['path']}:{item['scale']:g}" for item in record["lora"])))
    if "grid" in record:
        fields.append(("Grid", f"{len(record['grid']['cells'])} images, {record['grid']['columns']} a row"))
    fields.append(("Version", f"dishgen {record.get('dishgen_version')}"))
    lines.append(", ".join(f"{name}: {_quote(value)}" for name, value in fields))
    return "\n".join(lines)


def png_info(record: dict[str, Any]):
    """A Pillow ``PngInfo`` with both chunks (``parameters`` and ``dishgen``) as UTF-8 iTXt."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(PARAMETERS_KEY, parameters_text(record))
    info.add_itxt(CHUNK_KEY, json.dumps(record, ensure_ascii=False, sort_keys=False))
    return info


def attach_provenance(image, record: dict[str, Any]):
    """Put both chunks in ``image.info`` (for libraries such as gradio that save ``info`` text)."""
    image.info[PARAMETERS_KEY] = parameters_text(record)
    image.info[CHUNK_KEY] = json.dumps(record, ensure_ascii=False)
    return image


def save_png(image, path: str | Path, record: dict[str, Any]) -> Path:
    """Save ``image`` atomically as a PNG carrying ``record``."""
    atomic_save_image(image, path, format="PNG", pnginfo=png_info(record))
    return Path(path)


def read_provenance(path: str | Path) -> dict[str, Any]:
    """Read the ``dishgen`` chunk of a PNG written by dishgen.

    Raises:
        ProvenanceError: the file is missing, not a PNG, has no ``dishgen`` chunk, or its chunk is
            not a JSON object with at least ``caption``/``grid``, ``seed`` and ``model``.
    """
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.is_file():
        raise ProvenanceError(f"{str(file)!r} does not exist")
    try:
        with Image.open(file) as im:
            fmt = im.format
            text = dict(getattr(im, "text", {}) or {}) if fmt == "PNG" else {}
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ProvenanceError(f"{str(file)!r} is not a readable image ({type(err).__name__}: {err})") from None
    if fmt != "PNG":
        raise ProvenanceError(f"{str(file)!r} is a {fmt} file, not a PNG; dishgen writes its provenance into PNGs")
    if CHUNK_KEY not in text:
        also = " (it has a 'parameters' chunk from another program)" if PARAMETERS_KEY in text else ""
        raise ProvenanceError(
            f"{str(file)!r} has no '{CHUNK_KEY}' provenance chunk{also}; pass a PNG written by dishgen "
            "generate, evaluate or serve, as saved (some editors and upload sites strip PNG text chunks)"
        )
    try:
        record = json.loads(str(text[CHUNK_KEY]))
    except json.JSONDecodeError as err:
        raise ProvenanceError(f"{str(file)!r}: its '{CHUNK_KEY}' chunk is not valid JSON ({err})") from None
    if not isinstance(record, dict) or "seed" not in record or "model" not in record or not (
            "caption" in record or "grid" in record):
        raise ProvenanceError(
            f"{str(file)!r}: its '{CHUNK_KEY}' chunk lacks caption, seed or model; it is damaged or from another program"
        )
    return record


# -- writing ------------------------------------------------------------------------------------


def _free_path(out: Path, base: str) -> Path:
    path, suffix = out / f"{base}.png", 1
    while path.exists():
        path = out / f"{base}-{suffix}.png"
        suffix += 1
    return path


def write_images(images, prompts: list[str], num_images: int, out_dir: str | Path, *, grid: bool | None = None,
                 provenance: dict[str, Any] | None = None) -> list[Path]:
    """Save ``images`` (prompt-major, ``num_images`` per prompt) as PNG files in ``out_dir``.

    Names never overwrite earlier results: ``<slug>-<timestamp>-<i>.png``. The grid (written by
    default when there is more than one image) has one row per prompt (or rows of up to 8 for
    one prompt) with the caption left of each row.

    Args:
        images: PIL images, prompt-major.
        prompts: the call's prompts.
        num_images: images per prompt.
        out_dir: the folder (created).
        grid: ``True``/``False`` to force or skip the grid; ``None``: when more than one image.
        provenance: the call's record (:func:`call_provenance`); each PNG then carries its own
            record (caption, index, size) and the grid the list of its cells.

    Returns:
        The written paths (the grid, if written, last).
    """
    from dishgen.image_grid import captioned_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    per_prompt = max(num_images, 1)
    captions = [prompts[min(index // per_prompt, len(prompts) - 1)] for index in range(len(images))]
    paths = []
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        path = _free_path(out, f"{slugify(caption)}-{stamp}-{index:03d}")
        if provenance is None:
            atomic_save_image(image, path)
        else:
            save_png(image, path, image_provenance(provenance, caption, index, image.size))
        paths.append(path)
    if (grid is None and len(images) > 1) or (grid and images):
        ncol = num_images if len(prompts) > 1 else min(len(images), 8)
        labels = [captions[row * ncol] for row in range(-(-len(images) // ncol))]
        sheet = captioned_grid(images, ncol=ncol, labels=labels)
        path = _free_path(out, f"grid-{stamp}")
        if provenance is None:
            atomic_save_image(sheet, path)
        else:
            first = int(provenance.get("first_index", 0))
            record = {k: v for k, v in provenance.items() if k != "first_index"}
            record["grid"] = {"columns": ncol, "cells": [{"caption": c, "index": first + i} for i, c in enumerate(captions)]}
            record["size"] = list(sheet.size)
            record["cell_size"] = list(images[0].size)
            save_png(sheet, path, record)
        paths.append(path)
    return paths
