"""Embedding cache per dataset and encoder id, so training never re-encodes the same captions.

The cache is one safetensors file per encoder in ``DATASET/.cache/``, mapping the SHA-1 of each
caption to its vector. New captions are encoded and added; the file is replaced atomically.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dishgen.fileio import atomic_path


def _slug(encoder_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_id).strip("_")[:80] + "-" + hashlib.sha1(encoder_id.encode()).hexdigest()[:8]


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | Path, encoder_id: str) -> Path:
    return Path(cache_dir) / f"text-{_slug(encoder_id)}.safetensors"


def encode_cached(encoder, texts: list[str], cache_dir: str | Path | None) -> torch.Tensor:
    """Encode ``texts`` with ``encoder``, reusing and extending an on-disk cache.

    Args:
        encoder: a :class:`dishgen.text.TextEncoder`.
        texts: captions (duplicates are encoded once).
        cache_dir: folder of the cache, usually ``DATASET/.cache``; ``None`` disables caching.

    Returns:
        (len(texts), encoder.dim) float32 tensor.
    """
    if cache_dir is None:
        return encoder.encode(list(texts))
    path = cache_path(cache_dir, encoder.id)
    cached: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            cached = load_file(str(path))
        except Exception:  # a corrupt cache is only a cache: rebuild it
            cached = {}
    missing = sorted({t for t in texts if text_key(t) not in cached})
    if missing:
        vectors = encoder.encode(missing)
        for text, vector in zip(missing, vectors, strict=True):
            cached[text_key(text)] = vector.float().contiguous().clone()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(cached, str(tmp))
    return torch.stack([cached[text_key(t)] for t in texts]) if texts else torch.zeros(0, encoder.dim)
