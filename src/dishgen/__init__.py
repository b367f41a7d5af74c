"""dishgen: photographs of Serbian dishes from short captions.

The public Python API is small and imports lazily, so ``import dishgen`` stays cheap:

>>> from dishgen import generate
>>> images = generate(["Sarma, cabbage rolls served in a clay pot"], seed=0)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "generate", "load_generator"]


def __getattr__(name: str):
    if name in ("generate", "load_generator"):
        from dishgen import generate as _generate_module

        return getattr(_generate_module, name)
    raise AttributeError(f"module 'dishgen' has no attribute {name!r}")
