"""Reading a schema.org ``Recipe`` out of a page, from JSON-LD or microdata.

recipe-scrapers does the parsing (``scrape_html(..., supported_only=False)`` reads the schema.org
data of any site, through extruct); this module only normalises what it returns and explains, per
page, why a page gave no usable recipe.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import urljoin

from bs4 import BeautifulSoup

log = logging.getLogger(__name__)


class ParseError(Exception):
    """A page without a usable recipe; the message is the reason recorded for its URL."""


@dataclass
class ParsedRecipe:
    """What a recipe page says about its dish."""

    name: str
    ingredients: list[str]
    preparation: list[str]
    images: list[str] = field(default_factory=list)  # candidate photo URLs, best first


def parse_recipe(text: str, url: str) -> ParsedRecipe:
    """Parse the schema.org Recipe of a page.

    Args:
        text: the page's HTML.
        url: its URL (relative image links are resolved against it).

    Returns:
        The recipe, with candidate photo URLs from the schema's ``image`` (largest declared
        ImageObject first), then ``og:image``.

    Raises:
        ParseError: the page is empty, has malformed JSON-LD and no other recipe data, is not a
            recipe, or lacks a name or ingredients.
    """
    from recipe_scrapers import scrape_html
    from recipe_scrapers._exceptions import RecipeScrapersExceptions

    if not text.strip():
        raise ParseError("empty page")
    try:
        scraper = scrape_html(text, org_url=url, supported_only=False)
    except RecipeScrapersExceptions as err:
        broken = _malformed_json_ld(text)
        if broken:
            raise ParseError(f"malformed JSON-LD ({broken}) and no other recipe data") from err
        raise ParseError("not a recipe page (no schema.org Recipe in JSON-LD or microdata)") from err
    except Exception as err:  # recipe-scrapers/extruct on badly broken markup
        raise ParseError(f"malformed HTML ({type(err).__name__}: {err})") from err

    data = getattr(getattr(scraper, "schema", None), "data", None) or {}
    name = _field(scraper.title) or ""
    name = re.sub(r"\s+", " ", name).strip()
    ingredients = [_clean(line) for line in (_field(scraper.ingredients) or [])]
    ingredients = [line for line in ingredients if line]
    steps = [_clean(line) for line in (_field(scraper.instructions_list) or [])]
    preparation = _drop_section_names([s for s in steps if s], data.get("recipeInstructions"))
    missing = [what for what, value in (("name", name), ("ingredients", ingredients)) if not value]
    if missing:
        raise ParseError(f"recipe is missing {' and '.join(missing)}")
    images = _image_candidates(data.get("image"), url)
    for extra in (_field(scraper.image), _og_image(text, url)):
        if extra and extra not in images:
            images.append(extra)
    return ParsedRecipe(name=name, ingredients=ingredients, preparation=preparation, images=images)


def _field(getter):
    """A recipe-scrapers field, or None when the page does not have it."""
    try:
        return getter()
    except Exception as err:  # recipe-scrapers raises several types for a missing field
        log.debug("field %s unavailable: %s", getattr(getter, "__name__", getter), err)
        return None


def _clean(line) -> str:
    return re.sub(r"\s+", " ", str(line)).strip()


def _drop_section_names(steps: list[str], instructions) -> list[str]:
    """recipe-scrapers returns a HowToSection's name as if it were a step: remove those."""
    names = []

    def walk(node):
        if isinstance(node, list):
            for child in node:
                walk(child)
        elif isinstance(node, dict):
            types = node.get("@type")
            types = types if isinstance(types, list) else [types]
            if "HowToSection" in types and node.get("name"):
                names.append(_clean(node["name"]))
            walk(node.get("itemListElement"))

    walk(instructions)
    steps = list(steps)
    for name in names:
        if name in steps:
            steps.remove(name)
    return steps


def _image_candidates(image, page_url: str) -> list[str]:
    """Photo URLs from a schema ``image`` (string, list, or ImageObject), largest first."""
    found: list[tuple[int, int, str]] = []  # (-area, order, url)

    def add(node):
        if isinstance(node, str) and node.strip():
            found.append((0, len(found), urljoin(page_url, node.strip())))
        elif isinstance(node, list):
            for child in node:
                add(child)
        elif isinstance(node, dict):
            link = node.get("url") or node.get("contentUrl")
            if isinstance(link, list):
                link = link[0] if link else None
            if isinstance(link, str) and link.strip():
                area = _int(node.get("width")) * _int(node.get("height")) or _int(node.get("width"))
                found.append((-area, len(found), urljoin(page_url, link.strip())))

    add(image)
    urls = []
    for _, _, link in sorted(found):
        if link not in urls:
            urls.append(link)
    return urls


def _int(value) -> int:
    if isinstance(value, dict):  # QuantitativeValue
        value = value.get("value")
    match = re.match(r"\s*(\d+)", str(value)) if value is not None else None
    return int(match.group(1)) if match else 0


def _og_image(text: str, url: str) -> str | None:
    soup = BeautifulSoup(text, "html.parser")
    tag = soup.find("meta", attrs={"property": "og:image"})
    content = tag.get("content") if tag else None
    return urljoin(url, content) if content else None


def _malformed_json_ld(text: str) -> str | None:
    """The first JSON error among the page's JSON-LD blocks, or None when all parse."""
    soup = BeautifulSoup(text, "html.parser")
    for script in soup.find_all("script", attrs={"type": "application/ld+json"}):
        try:
            json.loads(script.string or "")
        except json.JSONDecodeError as err:
            return f"{err.msg} at line {err.lineno} column {err.colno}"
    return None
