"""Reading a schema.org ``Recipe`` out of a page, from JSON-LD or microdata, in one parse.

recipe-scrapers builds the page's soup and reads its schema.org data (through extruct); this
module reads the JSON-LD again from that same soup, tolerantly (:mod:`.jsonld`), so that shapes
recipe-scrapers mishandles (objects for steps, ``@id`` references, nested lists, lists for
scalars, ``NaN``, huge numbers) still give clean text, ranks the photo candidates
(:mod:`.images`), and explains, per page, why a page gave no usable recipe.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urldefrag

from dishgen.data.records import MAX_LINE_CHARS, MAX_LINES, MAX_NAME_CHARS, clean_lines, clean_text
from dishgen.data.scrape import jsonld
from dishgen.data.scrape.images import ImageCandidate, collect_candidates
from dishgen.errors import DishgenError

log = logging.getLogger(__name__)

DEFAULT_PARSE_BUDGET = 10.0  # seconds; a normal page takes 20-200 ms


class ParseError(DishgenError):
    """A page without a usable recipe; the message is the reason recorded for its URL."""


@dataclass
class ParsedRecipe:
    """What a recipe page says about its dish.

    Attributes:
        name: the dish's name.
        ingredients: one line per ingredient.
        preparation: one line per step.
        images: candidate photo URLs, best first (the URLs of ``image_candidates``).
        image_candidates: the same candidates with their declared or URL-encoded sizes.
    """

    name: str
    ingredients: list[str]
    preparation: list[str]
    images: list[str] = field(default_factory=list)
    image_candidates: list[ImageCandidate] = field(default_factory=list)


def parse_recipe(text: str, url: str, *, time_budget: float | None = DEFAULT_PARSE_BUDGET) -> ParsedRecipe:
    """Parse the schema.org Recipe of a page.

    Args:
        text: the page's HTML.
        url: its URL (relative image links are resolved against it).
        time_budget: most seconds the parse may take (a 20 MB page can take 30 s of CPU); None
            for no limit. Enforced with a timer signal, so only in the main thread.

    Returns:
        The recipe. Its first photo candidate is the page's main photo as recipe-scrapers
        reports it; see :func:`dishgen.data.scrape.images.collect_candidates` for the rest.

    Raises:
        ParseError: the page is empty, has malformed JSON-LD and no other recipe data, is not a
            recipe, lacks a name or ingredients, or took longer than ``time_budget``; also any
            other failure while parsing it (hostile markup: JSON nested 200,000 deep, ...), so
            that one page never ends a scrape.
    """
    try:
        with _time_limit(time_budget):
            return _parse_recipe(text, url)
    except _OverBudget:
        raise ParseError(f"page took over {time_budget:g} s to parse ({len(text) / 2**20:.1f} MiB "
                         "of HTML); --parse-budget allows more") from None
    except (ParseError, MemoryError):
        raise
    except RecursionError as err:
        raise ParseError("page data nested too deeply to parse (RecursionError)") from err
    except Exception as err:  # noqa: BLE001 (any parser failure is this page's, recorded as its skip)
        raise ParseError(f"page could not be parsed ({type(err).__name__}: {str(err)[:200]})") from err


def _parse_recipe(text: str, url: str) -> ParsedRecipe:
    if not text.strip():
        raise ParseError("empty page")
    scraper = _scraper(text, url)
    blocks, json_error = jsonld.load_blocks(scraper.soup)  # the soup recipe-scrapers built
    index = jsonld.index_ids(blocks)
    chosen = getattr(scraper.schema, "data", None)
    data = _choose_recipe(chosen if isinstance(chosen, dict) else {}, jsonld.find_recipes(blocks), url)
    if data:
        data = jsonld.resolve(data, index)
        scraper.schema.data = data  # recipe-scrapers' own fields now read the resolved recipe
    elif _is_generic(scraper):  # a site-specific scraper reads its site's HTML without schema.org
        if json_error:
            raise ParseError(f"malformed JSON-LD ({json_error}) and no other recipe data")
        raise ParseError("not a recipe page (no schema.org Recipe in JSON-LD or microdata)")

    title = _field(scraper.title)
    name = clean_text(title if isinstance(title, str) else None, MAX_NAME_CHARS) or \
        clean_text(jsonld.plain_text(data.get("name")), MAX_NAME_CHARS)

    raw = data.get("recipeIngredient") or data.get("ingredients")
    ingredients = clean_lines(_field(scraper.ingredients), MAX_LINE_CHARS, MAX_LINES) \
        if raw is None or jsonld.is_plain(raw) else []
    ingredients = ingredients or clean_lines(jsonld.ingredient_lines(raw), MAX_LINE_CHARS, MAX_LINES)

    raw = data.get("recipeInstructions")
    steps = []
    if raw is None or jsonld.is_plain(raw) or not _is_generic(scraper):
        steps = _drop_section_names(clean_lines(_field(scraper.instructions_list), MAX_LINE_CHARS,
                                                MAX_LINES + 20), raw)
    if not steps or "None" in steps:
        steps = clean_lines(jsonld.instruction_steps(raw), MAX_LINE_CHARS, MAX_LINES)
    preparation = steps[:MAX_LINES]

    missing = [what for what, value in (("name", name), ("ingredients", ingredients)) if not value]
    if missing:
        raise ParseError(f"recipe is missing {' and '.join(missing)}")
    primary = _field(scraper.image)
    candidates = collect_candidates(primary if isinstance(primary, str) else None, data.get("image"),
                                    scraper.soup, url)
    return ParsedRecipe(name=name, ingredients=ingredients, preparation=preparation,
                        images=[c.url for c in candidates], image_candidates=candidates)


def _scraper(text: str, url: str):
    """recipe-scrapers' scraper for ``url``'s host (a site-specific one where it has one), or
    its schema.org scraper; unlike ``scrape_html`` it never raises for a page without a recipe,
    so its soup serves the error path too."""
    from recipe_scrapers import SCRAPERS
    from recipe_scrapers._factory import SchemaScraperFactory
    from recipe_scrapers._utils import get_host_name

    try:
        specific = SCRAPERS.get(get_host_name(url))
    except Exception:  # noqa: BLE001 (an odd URL: the schema.org scraper reads any host)
        specific = None
    if specific is not None:
        return specific(html=text, url=url)
    return SchemaScraperFactory.generate(html=text, url=url)


def _is_generic(scraper) -> bool:
    from recipe_scrapers._factory import SchemaScraperFactory

    return isinstance(scraper, SchemaScraperFactory.SchemaScraper)


def _choose_recipe(chosen: dict, recipes: list[dict], page_url: str) -> dict:
    """Among several complete Recipes (name and ingredients), the one whose ``url``, ``@id`` or
    ``mainEntityOfPage`` is this page; else recipe-scrapers' choice when it is complete; else
    the first complete one."""

    def complete(recipe: dict) -> bool:
        return bool(jsonld.plain_text(recipe.get("name")) and jsonld.ingredient_lines(
            recipe.get("recipeIngredient") or recipe.get("ingredients")))

    whole = [recipe for recipe in recipes if complete(recipe)]
    page = _same_page(page_url)
    if len(whole) > 1:  # a page with related recipes: the one that says it is this page
        for recipe in whole:
            links = [recipe.get(key) for key in ("url", "@id", "mainEntityOfPage")]
            links = [link.get("@id") if isinstance(link, dict) else link for link in links]
            if any(isinstance(link, str) and _same_page(link) == page for link in links):
                return recipe
    if chosen and complete(chosen):
        return chosen
    return whole[0] if whole else chosen or (recipes[0] if recipes else {})


def _same_page(url: str) -> str:
    try:
        return urldefrag(url.strip())[0].rstrip("/")
    except ValueError:
        return url


def _field(getter):
    """A recipe-scrapers field, or None when the page does not have it."""
    try:
        return getter()
    except Exception as err:  # noqa: BLE001 (recipe-scrapers raises several types for a missing field)
        log.debug("field %s unavailable: %s", getattr(getter, "__name__", getter), err)
        return None


def _drop_section_names(steps: list[str], instructions) -> list[str]:
    """recipe-scrapers returns a HowToSection's name as if it were a step: remove those."""
    names = []

    def walk(node, depth=0):
        if depth > jsonld.MAX_DEPTH:
            return
        if isinstance(node, list):
            for child in node:
                walk(child, depth + 1)
        elif isinstance(node, dict):
            if "howtosection" in jsonld.types_of(node) and node.get("name"):
                names.append(clean_text(node["name"], MAX_LINE_CHARS))
            walk(node.get("itemListElement"), depth + 1)

    walk(instructions)
    steps = list(steps)
    for name in names:
        if name in steps:
            steps.remove(name)
    return steps


class _OverBudget(BaseException):
    """Raised by the timer inside a parse; a BaseException, so no library's ``except Exception``
    swallows it."""


@contextmanager
def _time_limit(seconds: float | None):
    """Interrupt the block after ``seconds`` with :class:`_OverBudget` (main thread only, and
    only when no other interval timer is running: that one is left alone)."""
    usable = (seconds is not None and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    if not usable:
        yield
        return

    fired = []

    def on_alarm(signum, frame):
        fired.append(True)
        raise _OverBudget

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if fired:
        # The handler ran but its exception was swallowed: Python runs signal handlers at the next
        # bytecode, which can be inside a garbage-collector callback, where exceptions are only
        # printed ("Exception ignored in ... WeakKeyDictionary"). The parse then ran to its end;
        # it is still over budget.
        raise _OverBudget
