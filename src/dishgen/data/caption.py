"""Captioners: turn what is known about a dish into an English sentence about how it looks.

Every captioner has the same call, so ``data build --captioner NAME`` can use any of them::

    captioner = get_captioner("template")
    results = captioner.caption_many([CaptionInput(name="Sarma", ingredients=[...])])
    results[0].text    # "Sarma, cabbage rolls ..."  (or None, with results[0].error saying why)

``template`` is offline and deterministic; ``llm`` (any OpenAI-compatible server) lives in
:mod:`dishgen.data.llm` and is imported only when asked for.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dishgen.data.records import MAX_NAME_CHARS, clean_text


@dataclass
class CaptionInput:
    """What a captioner may use: the dish name, recipe text, and the (cleaned) photo."""

    name: str
    ingredients: list[str] = field(default_factory=list)
    preparation: list[str] = field(default_factory=list)
    image_path: Path | None = None


@dataclass
class CaptionResult:
    """A caption, or ``None`` with the reason it could not be written."""

    text: str | None
    error: str | None = None


class Captioner(Protocol):
    name: str

    def caption_many(self, items: list[CaptionInput]) -> list[CaptionResult]: ...


# Serbian / Croatian / Romanian dish names (lower case, diacritics kept) -> how they read in English.
GLOSSARY: dict[str, str] = {
    "ćevapi": "ćevapi, small grilled minced-meat sausages",
    "ćevapčići": "ćevapčići, small grilled minced-meat sausages",
    "cevapi": "ćevapi, small grilled minced-meat sausages",
    "mici": "ćevapi-style grilled minced-meat rolls",
    "sarma": "sarma, cabbage rolls stuffed with minced meat and rice",
    "sarmale": "sarma, cabbage rolls stuffed with minced meat and rice",
    "gibanica": "gibanica, a layered filo pastry pie with cheese and eggs",
    "burek": "burek, a flaky filo pastry pie",
    "suberek": "burek-style flaky pastry pie",
    "pljeskavica": "pljeskavica, a large grilled minced-meat patty",
    "ajvar": "ajvar, a smoky roasted red pepper relish",
    "zacusca": "ajvar-like roasted vegetable spread",
    "kajmak": "kajmak, a thick clotted cream",
    "prebranac": "prebranac, baked white beans with onion and paprika",
    "pasulj": "pasulj, a thick bean stew",
    "gulaš": "goulash, a paprika meat stew",
    "gulas": "goulash, a paprika meat stew",
    "goulash": "goulash, a paprika meat stew",
    "sataraš": "sataraš, stewed peppers, tomatoes and onions",
    "musaka": "musaka, a layered potato and minced-meat bake",
    "moussaka": "moussaka, a layered bake with a golden top",
    "punjene paprike": "stuffed peppers in tomato sauce",
    "podvarak": "podvarak, braised sauerkraut with roast meat",
    "ražnjići": "ražnjići, grilled meat skewers",
    "raznjici": "ražnjići, grilled meat skewers",
    "kačamak": "kačamak, a soft cornmeal porridge",
    "kacamak": "kačamak, a soft cornmeal porridge",
    "mamaliga": "polenta, a golden cornmeal mash",
    "baklava": "baklava, layered filo pastry with nuts soaked in syrup",
    "baclava": "baklava, layered filo pastry with nuts soaked in syrup",
    "palačinke": "palačinke, thin rolled crêpes",
    "palacinke": "palačinke, thin rolled crêpes",
    "ćufte": "ćufte, round meatballs in sauce",
    "krofne": "krofne, sugar-dusted doughnuts",
    "proja": "proja, a golden cornbread",
    "pita": "pita, a round filo pastry pie",
    "čorba": "čorba, a thick soup",
    "corba": "čorba, a thick soup",
    "sir": "white brined cheese",
    "tufahije": "tufahije, poached apples stuffed with walnuts and topped with cream",
    "karađorđeva šnicla": "Karađorđeva šnicla, a rolled breaded steak filled with kajmak",
}

_SETTINGS = [
    "served on a white plate",
    "on a white background",
    "photographed from above",
    "in a close-up food photograph",
    "plated as a home-cooked meal",
    "with soft natural light",
]


def describe_dish(name: str) -> str:
    """The dish name as a natural English phrase, using the glossary where a word matches."""
    clean = re.sub(r"\s+", " ", name).strip()
    lower = clean.lower()
    for key in sorted(GLOSSARY, key=len, reverse=True):
        if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", lower):
            rest = re.sub(rf"(?<!\w){re.escape(key)}(?!\w)", "", lower).strip(" ,-()")
            rest = re.sub(r"\s+", " ", rest)
            phrase = GLOSSARY[key]
            return f"{phrase} ({rest})" if rest and len(rest) < 40 else phrase
    # FFML names are upper case: make them read as a sentence fragment.
    return lower if clean.isupper() else clean


class TemplateCaptioner:
    """Offline captions from the dish name: "<dish as English phrase>, <setting>".

    The setting is chosen by a hash of the image path (or name), so captions are deterministic
    and vary across photos of the same dish.
    """

    name = "template"

    def caption_one(self, item: CaptionInput) -> CaptionResult:
        name = clean_text(item.name, MAX_NAME_CHARS)
        if not name:
            return CaptionResult(None, "no dish name to caption from")
        phrase = describe_dish(name)
        key = str(item.image_path or name).encode("utf-8", "surrogatepass")
        setting = _SETTINGS[int(hashlib.sha1(key).hexdigest(), 16) % len(_SETTINGS)]
        text = f"A photo of {phrase}, {setting}."
        return CaptionResult(text[0].upper() + text[1:])

    def caption_many(self, items: list[CaptionInput]) -> list[CaptionResult]:
        return [self.caption_one(item) for item in items]


CAPTIONERS = {
    "template": "dishgen.data.caption:TemplateCaptioner",
    "llm": "dishgen.data.llm:LLMCaptioner",
    "llm-vision": "dishgen.data.llm:VisionCaptioner",
}


def get_captioner(name: str, **options) -> Captioner:
    """Build a captioner by name (``template``, ``llm``, ``llm-vision``).

    Raises:
        ValueError: unknown name.
    """
    import importlib

    if name not in CAPTIONERS:
        raise ValueError(f"unknown captioner {name!r}; choose one of {', '.join(CAPTIONERS)}")
    module_name, attr = CAPTIONERS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)(**options)
