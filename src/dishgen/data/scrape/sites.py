"""The recipe sites dishgen knows: where their recipes are and how to find them."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """How to discover one site's recipe pages.

    Attributes:
        name: the short name used on the command line and in ``source``.
        base_url: the real site; ``--base-url`` swaps it for a mirror or a test server.
        recipe_path: regex that a recipe page's path (and query) matches.
        listing_path: path of a listing page, with ``{offset}`` for pagination (or ``""``).
        listing_items: CSS selector of one recipe item on a listing page.
    """

    name: str
    base_url: str
    recipe_path: str
    listing_path: str = ""
    listing_items: str = ""

    def is_recipe_path(self, path: str) -> bool:
        return re.fullmatch(self.recipe_path, path) is not None


SITES: dict[str, Site] = {
    # recepti.com: microdata recipes at /kuvar/<category>/<id>-<slug>; main dishes are listed
    # 20-odd per page at /kuvar/glavna-jela/<offset> as `ul.re-list > li` (link + thumbnail).
    "recepti": Site(
        name="recepti",
        base_url="https://www.recepti.com",
        recipe_path=r"/kuvar/[a-z0-9-]+/\d+-[^/?#]+/?",
        listing_path="/kuvar/glavna-jela/{offset}",
        listing_items="ul.re-list > li",
    ),
    # coolinarika.com: JSON-LD recipes at /recept/<slug>/, found through its sitemaps.
    "coolinarika": Site(
        name="coolinarika",
        base_url="https://www.coolinarika.com",
        recipe_path=r"/recept/[^/?#]+/?",
    ),
}


def get_site(name: str) -> Site:
    """The site called ``name``.

    Raises:
        KeyError: an unknown site, with the known names in the message.
    """
    if name not in SITES:
        raise KeyError(f"unknown site {name!r}; dishgen scrapes {', '.join(sorted(SITES))}")
    return SITES[name]
