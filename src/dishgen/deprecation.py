"""Old spellings of flags and config keys: accepted for one release, with one line that says so.

The vocabulary every command shares (ARCHITECTURE.md): ``mixed_precision=no|bf16|fp16`` for
training precision (accelerate's name), ``--llm-base-url``/``--llm-model``/``--llm-concurrency``
for the LLM server, ``--knob KEY=VALUE`` for generation knobs. A renamed spelling keeps working
until :data:`REMOVED_IN` and prints, once per process, what to write instead.
"""

from __future__ import annotations

import sys

REMOVED_IN = "0.2.0"  # the release that stops accepting the old spellings

_said: set[str] = set()


def deprecated(old: str, new: str) -> None:
    """Say once per process, on stderr, that ``old`` is deprecated and ``new`` replaces it."""
    if old in _said:
        return
    _said.add(old)
    print(f"dishgen: {old} is deprecated; use {new} (the old spelling is accepted until dishgen {REMOVED_IN})",
          file=sys.stderr, flush=True)
