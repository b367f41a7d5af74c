"""dishgen: photographs of Serbian dishes from short captions.

The public Python API is small and imports lazily, so ``import dishgen`` stays cheap:

>>> from dishgen import generate, load_generator
>>> images = generate("Sarma, cabbage rolls served in a clay pot", num_images=2, seed=0)
>>> vae = load_generator("default")
>>> images = vae.generate(["Baklava with walnuts"], num_images=1, seed=1)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "generate", "load_generator"]


def __getattr__(name: str):
    # The functions live in ``dishgen.generation`` (not ``dishgen.generate``: a submodule of that
    # name would become the package attribute ``generate`` and shadow the function).
    if name in ("generate", "load_generator"):
        return getattr(importlib.import_module("dishgen.generation"), name)
    raise AttributeError(f"module 'dishgen' has no attribute {name!r}")
