"""The value shapes real JSON-LD uses, read without surprises.

extruct (inside recipe-scrapers) drops a whole JSON-LD block when one value in it does not parse
(a 4,300-digit number), and recipe-scrapers turns several legal shapes into junk (an instruction
step given as an object, an image given as ``{"@id": ...}``, nested ingredient lists, a title
given as a list). This module reads the page's JSON-LD itself, tolerantly, from the soup that
recipe-scrapers already built, and turns each shape into plain text. Written by hand because no
installed library normalises schema.org values (pyld would expand, not simplify, them).
"""

from __future__ import annotations

import html
import json
import math
import re

MAX_DEPTH = 40  # deeper values are ignored: a recipe is never nested this deep
MAX_INT_DIGITS = 18  # a longer integer literal is no real width or count: read as null
TEXT_KEYS = ("text", "description", "name", "@value", "value")


def load_blocks(soup) -> tuple[list, str | None]:
    """The parsed ``application/ld+json`` blocks of a page, and the first JSON error met.

    ``NaN``/``Infinity`` and integers of more than 18 digits become ``None`` (Python's ``json``
    would return a float NaN, or raise ``ValueError`` past 4,300 digits); HTML comment and
    CDATA wrappers are removed.
    """
    blocks, error = [], None
    for script in soup.find_all("script", attrs={"type": re.compile(r"^\s*application/ld\+json", re.I)}):
        text = (script.string or "").strip()
        text = re.sub(r"^(<!--|//\s*<!\[CDATA\[)|(-->|//\s*\]\]>)$", "", text).strip().rstrip(";")
        if not text:
            continue
        try:
            blocks.append(json.loads(text, strict=False, parse_constant=lambda _: None,
                                     parse_int=_int_or_none))
        except json.JSONDecodeError as err:
            error = error or f"{err.msg} at line {err.lineno} column {err.colno}"
        except RecursionError:
            error = error or "nested too deeply"
    return blocks, error


def _int_or_none(digits: str) -> int | None:
    return int(digits) if len(digits.lstrip("-")) <= MAX_INT_DIGITS else None


def types_of(node) -> set[str]:
    """The ``@type`` names of a node, lower-cased (``"Recipe"``, ``["Recipe", "NewsArticle"]``)."""
    kind = node.get("@type") if isinstance(node, dict) else None
    kinds = kind if isinstance(kind, list) else [kind]
    return {k.rsplit("/", 1)[-1].lower() for k in kinds if isinstance(k, str)}


def index_ids(blocks: list) -> dict[str, dict]:
    """Every node with an ``@id`` and more than that id, by id (the first full one wins)."""
    index: dict[str, dict] = {}

    def walk(value, depth):
        if depth > MAX_DEPTH:
            return
        if isinstance(value, list):
            for item in value:
                walk(item, depth + 1)
        elif isinstance(value, dict):
            node_id = value.get("@id")
            if isinstance(node_id, str) and len(value) > 1:
                index.setdefault(node_id, value)
            for item in value.values():
                walk(item, depth + 1)

    walk(blocks, 0)
    return index


def find_recipes(blocks: list) -> list[dict]:
    """The ``Recipe`` nodes of the page: top level, inside ``@graph``, or a page's ``mainEntity``."""
    found: list[dict] = []

    def visit(node, depth):
        if depth > 4:
            return
        if isinstance(node, list):
            for item in node:
                visit(item, depth + 1)
            return
        if not isinstance(node, dict):
            return
        if "recipe" in types_of(node):
            if not any(node is other for other in found):
                found.append(node)
            return
        for key in ("@graph", "mainEntity", "mainEntityOfPage"):
            visit(node.get(key), depth + 1)

    visit(blocks, 0)
    return found


def resolve(value, index: dict[str, dict], depth: int = 0):
    """``value`` with ``{"@id": ...}`` references replaced by the nodes they name, NaN and
    infinities replaced by ``None``, and nothing deeper than :data:`MAX_DEPTH` kept."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [resolve(item, index, depth + 1) for item in value]
    if isinstance(value, dict):
        ref = value.get("@id")
        if len(value) == 1 and isinstance(ref, str) and ref in index:
            value = index[ref]
            if depth > 2:  # a reference inside a referenced node: kept as the node, not followed
                return {k: v for k, v in value.items() if isinstance(v, (str, int, float))}
        return {key: resolve(item, index, depth + 1) for key, item in value.items()}
    return value


def plain_text(value) -> str | None:
    """One piece of text from a scalar, the first usable item of a list, or an object's
    ``text``/``description``/``name``/``@value``; HTML tags and entities removed."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value) if not isinstance(value, float) or math.isfinite(value) else None
    if isinstance(value, str):
        text = html.unescape(re.sub(r"<[^>]{0,2000}>", " ", value)) if "<" in value or "&" in value \
            else value
        return text if text.strip() else None
    if isinstance(value, list):
        for item in value[:50]:
            if (text := plain_text(item)) is not None:
                return text
        return None
    if isinstance(value, dict):
        for key in TEXT_KEYS:
            if (text := plain_text(value.get(key))) is not None:
                return text
    return None


def ingredient_lines(value, depth: int = 0) -> list[str]:
    """Ingredient lines from a string, a list (nested lists flattened), or objects
    (``PropertyValue``: value, unit and name; others: their text or name)."""
    if depth > 6 or value is None:
        return []
    if isinstance(value, list):
        return [line for item in value for line in ingredient_lines(item, depth + 1)]
    if isinstance(value, dict) and "propertyvalue" in types_of(value):
        parts = [plain_text(value.get(key)) for key in ("value", "unitText", "unitCode", "name")]
        text = " ".join(p for p in parts[:1] + [parts[1] or parts[2]] + parts[3:] if p)
        return [text] if text else []
    text = plain_text(value)
    return [text] if text else []


def instruction_steps(value, depth: int = 0) -> list[str]:
    """Steps from a string (one per line), a list, ``HowToSection`` (its steps, not its name),
    ``HowToStep``/``HowToDirection``/``HowToTip`` (text, else description, else name; a step
    holding an ``itemListElement`` gives those) or an ``ItemList``."""
    if depth > 8 or value is None:
        return []
    if isinstance(value, list):
        return [step for item in value for step in instruction_steps(item, depth + 1)]
    if isinstance(value, str):
        text = plain_text(value) or ""
        return [line for line in text.splitlines() if line.strip()]
    if isinstance(value, dict):
        kinds = types_of(value)
        inner = value.get("itemListElement")
        if "howtosection" in kinds or "itemlist" in kinds:
            return instruction_steps(inner, depth + 1)
        own = plain_text(value.get("text")) or plain_text(value.get("description"))
        if own is None and inner is not None:
            return instruction_steps(inner, depth + 1)
        own = own or plain_text(value.get("name"))
        return [own] if own else []
    text = plain_text(value)
    return [text] if text else []


def is_plain(value) -> bool:
    """A string or a flat list of strings: the shapes recipe-scrapers reads correctly."""
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
