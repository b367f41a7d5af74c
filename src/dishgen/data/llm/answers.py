"""Reading JSON out of an LLM's answer, which may wrap it in a code fence or in prose."""

from __future__ import annotations

import json
import re
from typing import Any


def parse_json_answer(content: str | None, *, allow_list: bool = False) -> tuple[Any, str]:
    """The JSON value in an answer: the whole text, else its outermost ``{...}`` (or ``[...]``).

    Args:
        content: the message text (``None`` counts as empty).
        allow_list: also look for a bare ``[...]`` list in prose.

    Returns:
        ``(value, "")``, or ``(None, reason)`` for an empty or non-JSON answer.
    """
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", (content or "").strip())  # a fenced code block
    if not text:
        return None, "empty answer"
    try:
        return json.loads(text), ""
    except json.JSONDecodeError:
        pass
    openers, closers = ("{[", "}]") if allow_list else ("{", "}")
    start = min((i for i in (text.find(c) for c in openers) if i >= 0), default=-1)
    end = max(text.rfind(c) for c in closers)
    if 0 <= start < end:
        try:
            return json.loads(text[start:end + 1]), ""
        except json.JSONDecodeError:
            pass
    return None, f"not JSON ({text[:60]!r})"
