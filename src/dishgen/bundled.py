"""Where the models shipped in the package live, and their names.

Neutral ground (standard library only): generation resolves ``--model NAME`` with it and training
resolves ``init_from=NAME`` with it, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"


def bundled_models() -> list[str]:
    """Names of the models shipped in ``dishgen/weights/`` (each usable as ``--model NAME``, and as
    ``init_from=NAME`` to fine-tune a FastGAN)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())
