"""The recipe sites dishgen knows, and the generic site: any host with schema.org recipes."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from dishgen.errors import DishgenError

GENERIC = "generic"
# What a generic site's sitemaps list that is no recipe: archives, feeds, pagination, files.
GENERIC_RECIPE_PATH = (
    r"(?!/(?:tags?|category|categories|author|authors|page|feed|search|wp-json|wp-admin|"
    r"wp-content|kategorij[ae]|oznak[ae]|tagovi|autor|autori)(?:/|$))"
    r"(?!.*/(?:feed|page/\d+|amp)/?(?:\?.*)?$)"
    r"(?!.*\.(?:xml|gz|jpe?g|png|webp|gif|svg|pdf|css|js|zip)(?:\?.*)?$)"
    r"/[^?#]+(?:\?.*)?"
)


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
        raise KeyError(f"unknown site {name!r}; dishgen knows {', '.join(sorted(SITES))}, and "
                       "scrapes any other site with --site URL")
    return SITES[name]


def generic_site(base_url: str, recipe_path: str | None = None) -> Site:
    """A site dishgen has no entry for: recipes are found through its sitemaps (or a URL
    file) and read from their schema.org data, like those of the named sites.

    Args:
        base_url: the site's root, e.g. ``https://www.kuhinjica.rs``.
        recipe_path: regex a recipe page's path (and query) must match (default
            :data:`GENERIC_RECIPE_PATH`: any page except archives, feeds and files).

    Raises:
        DishgenError: ``base_url`` is not an http(s) URL with a host.
    """
    try:
        parts = urlsplit(base_url.strip())
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise DishgenError(f"--site {base_url!r} is not a site's URL; give one such as "
                           "https://www.kuhinjica.rs")
    root = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    return Site(name=parts.netloc.lower().removeprefix("www."), base_url=root,
                recipe_path=_checked_regex(recipe_path) if recipe_path else GENERIC_RECIPE_PATH)


def resolve_site(name: str, base_url: str | None = None, recipe_path: str | None = None) -> Site:
    """The :class:`Site` that ``dishgen data scrape`` names: ``recepti``, ``coolinarika``,
    ``generic`` (with ``base_url``) or a site's URL.

    Raises:
        DishgenError: an unknown name, ``generic`` without ``base_url``, or a ``recipe_path``
            that is not a regular expression.
    """
    if "://" in name:
        return generic_site(name, recipe_path)
    if name == GENERIC:
        if not base_url:
            raise DishgenError("the generic site needs --base-url URL (or use --site URL)")
        return generic_site(base_url, recipe_path)
    try:
        site = get_site(name)
    except KeyError as err:
        raise DishgenError(err.args[0]) from None
    return replace(site, recipe_path=_checked_regex(recipe_path)) if recipe_path else site


def _checked_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as err:
        raise DishgenError(f"--recipe-path {pattern!r} is not a regular expression ({err})") from None
    return pattern
