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
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup

from dishgen.data.records import MAX_LINE_CHARS, MAX_LINES, MAX_NAME_CHARS, clean_lines, clean_text
from dishgen.errors import DishgenError

log = logging.getLogger(__name__)

MAX_IMAGE_CANDIDATES = 20


class ParseError(DishgenError):
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
            recipe, or lacks a name or ingredients; also any other failure while parsing it
            (hostile markup: JSON nested 200,000 deep, ...), so that one page never ends a scrape.
    """
    try:
        return _parse_recipe(text, url)
    except (ParseError, MemoryError):
        raise
    except RecursionError as err:
        raise ParseError("page data nested too deeply to parse (RecursionError)") from err
    except Exception as err:  # noqa: BLE001 (any parser failure is this page's, recorded as its skip)
        raise ParseError(f"page could not be parsed ({type(err).__name__}: {str(err)[:200]})") from err


def _parse_recipe(text: str, url: str) -> ParsedRecipe:
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
    except (MemoryError, RecursionError):
        raise  # MemoryError ends the run; RecursionError gets its own reason in parse_recipe
    except Exception as err:  # recipe-scrapers/extruct on badly broken markup
        raise ParseError(f"malformed HTML ({type(err).__name__}: {err})") from err

    data = getattr(getattr(scraper, "schema", None), "data", None) or {}
    if not isinstance(data, dict):
        data = {}
    name = clean_text(_field(scraper.title), MAX_NAME_CHARS)
    ingredients = clean_lines(_field(scraper.ingredients), MAX_LINE_CHARS, MAX_LINES)
    steps = clean_lines(_field(scraper.instructions_list), MAX_LINE_CHARS, MAX_LINES + 20)
    preparation = _drop_section_names(steps, data.get("recipeInstructions"))[:MAX_LINES]
    missing = [what for what, value in (("name", name), ("ingredients", ingredients)) if not value]
    if missing:
        raise ParseError(f"recipe is missing {' and '.join(missing)}")
    images = _image_candidates(data.get("image"), url)
    for extra in (_field(scraper.image), _og_image(text, url)):
        if isinstance(extra, str) and _fetchable(extra) and extra not in images:
            images.append(extra)
    images = images[:MAX_IMAGE_CANDIDATES]
    return ParsedRecipe(name=name, ingredients=ingredients, preparation=preparation, images=images)


def _field(getter):
    """A recipe-scrapers field, or None when the page does not have it."""
    try:
        return getter()
    except Exception as err:  # recipe-scrapers raises several types for a missing field
        log.debug("field %s unavailable: %s", getattr(getter, "__name__", getter), err)
        return None


def _clean(line) -> str:
    return clean_text(line, MAX_LINE_CHARS)


def _fetchable(url: str) -> bool:
    """Whether ``url`` is an http(s) URL that parses (``http://[::1`` raises in urlsplit)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


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

    def join(link: str) -> str | None:
        try:
            joined = urljoin(page_url, link.strip())
        except ValueError:  # e.g. a malformed IPv6 host
            return None
        return joined if _fetchable(joined) else None

    def add(node):
        if isinstance(node, str) and node.strip():
            if (link := join(node)) is not None:
                found.append((0, len(found), link))
        elif isinstance(node, list):
            for child in node:
                add(child)
        elif isinstance(node, dict):
            link = node.get("url") or node.get("contentUrl")
            if isinstance(link, list):
                link = link[0] if link else None
            if isinstance(link, str) and link.strip() and (joined := join(link)) is not None:
                area = _int(node.get("width")) * _int(node.get("height")) or _int(node.get("width"))
                found.append((-area, len(found), joined))

    add(image)
    urls = []
    for _, _, link in sorted(found):
        if link not in urls:
            urls.append(link)
    return urls


def _int(value) -> int:
    if isinstance(value, dict):  # QuantitativeValue
        value = value.get("value")
    match = re.match(r"\s*(\d{1,9})", str(value)) if value is not None else None
    return int(match.group(1)) if match else 0


def _og_image(text: str, url: str) -> str | None:
    soup = BeautifulSoup(text, "html.parser")
    tag = soup.find("meta", attrs={"property": "og:image"})
    content = tag.get("content") if tag else None
    if not isinstance(content, str) or not content.strip():
        return None
    try:
        return urljoin(url, content.strip())
    except ValueError:
        return None


def _malformed_json_ld(text: str) -> str | None:
    """The first JSON error among the page's JSON-LD blocks, or None when all parse."""
    soup = BeautifulSoup(text, "html.parser")
    for script in soup.find_all("script", attrs={"type": "application/ld+json"}):
        try:
            json.loads(script.string or "")
        except json.JSONDecodeError as err:
            return f"{err.msg} at line {err.lineno} column {err.colno}"
        except RecursionError:
            return "nested too deeply"
    return None
