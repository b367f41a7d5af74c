"""The error of the LLM captioners and of their CLIP token counting."""

from __future__ import annotations

from dishgen.errors import DishgenError


class LLMError(DishgenError):
    """The LLM captioner cannot work with the server or settings it was given."""
