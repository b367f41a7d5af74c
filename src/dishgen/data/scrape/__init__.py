"""Polite, resumable scraping of recipe sites into a raw folder: recepti.com, coolinarika.com, or any
site with schema.org recipes (``site="generic"``, ``base_url=...``).

::

    from dishgen.data.scrape import scrape
    summary = scrape("coolinarika", "raw/", max_recipes=100, delay=2.0)
    print("\\n".join(summary.lines()))

The pieces: :mod:`.http` (the polite client), :mod:`.discover` (sitemaps, listing pages, URL files),
:mod:`.parse` (schema.org Recipe via recipe-scrapers, :mod:`.jsonld` for its odd shapes),
:mod:`.images` (ranking photo candidates), :mod:`.photos` (photo download and checks),
:mod:`.run` (the loop and its resume logic), :mod:`.sites` (what is known about each site).
"""

from dishgen.data.scrape.http import DEFAULT_USER_AGENT, FetchError, PoliteClient
from dishgen.data.scrape.parse import ParsedRecipe, ParseError, parse_recipe
from dishgen.data.scrape.run import SKIPPED_FILE, ScrapeSummary, scrape
from dishgen.data.scrape.sites import SITES, Site

__all__ = [
    "DEFAULT_USER_AGENT", "FetchError", "PoliteClient", "ParsedRecipe", "ParseError",
    "parse_recipe", "SKIPPED_FILE", "ScrapeSummary", "scrape", "SITES", "Site",
]
