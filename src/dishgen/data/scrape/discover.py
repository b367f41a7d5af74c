"""Finding recipe URLs without a browser: sitemaps, listing pages, or a file of URLs."""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup
from lxml import etree

from dishgen.data.scrape.http import FetchError, PoliteClient
from dishgen.data.scrape.sites import Site

log = logging.getLogger(__name__)

MAX_SITEMAPS = 500  # a bound on sitemap-index recursion, against loops and giant indexes


def rebase(url: str, site: Site, base_url: str) -> str:
    """``url`` moved onto ``base_url`` when it points at the real site and a mirror is in use.

    A mirror serves the site's own robots.txt, sitemaps and pages, which name the real host.
    """
    real = urlsplit(site.base_url)
    parts = urlsplit(url)
    if base_url.rstrip("/") == site.base_url or parts.netloc.removeprefix("www.") != \
            real.netloc.removeprefix("www."):
        return url
    return base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def recipe_path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def sitemap_urls(
    client: PoliteClient, site: Site, base_url: str, *, max_age: float | None = None
) -> Iterator[str]:
    """Recipe URLs from the sitemaps named in robots.txt (``/sitemap.xml`` if none are).

    Sitemap indexes are followed, gzip sitemaps decompressed, and only URLs on the same site
    whose path matches ``site.recipe_path`` are yielded, each once. Cached sitemaps older than
    ``max_age`` seconds are fetched again.
    """
    named = [rebase(url, site, base_url) for url in client.sitemaps(base_url + "/")]
    queue = named or [base_url + "/sitemap.xml"]  # the conventional place, when robots names none
    seen_maps: set[str] = set()
    seen: set[str] = set()
    while queue and len(seen_maps) < MAX_SITEMAPS:
        sitemap = queue.pop(0)
        if sitemap in seen_maps:
            continue
        seen_maps.add(sitemap)
        try:
            page = client.get(sitemap, max_age=max_age)
        except FetchError as err:
            (log.warning if named else log.info)("sitemap %s skipped: %s", sitemap, err.reason)
            continue
        try:
            root = etree.fromstring(_maybe_gunzip(page.content), parser=etree.XMLParser(
                resolve_entities=False, no_network=True, recover=False))
        except (etree.XMLSyntaxError, OSError, zlib.error) as err:
            log.warning("sitemap %s skipped: not valid XML (%s)", sitemap, err)
            continue
        kind = etree.QName(root).localname
        locs = [loc.text.strip() for loc in root.iter("{*}loc") if loc.text and loc.text.strip()]
        if kind == "sitemapindex":
            queue.extend(rebase(urljoin(sitemap, loc), site, base_url) for loc in locs)
            continue
        for loc in locs:
            url = rebase(urljoin(sitemap, loc), site, base_url)
            if urlsplit(url).netloc != urlsplit(base_url).netloc:
                continue
            if site.is_recipe_path(recipe_path_of(url)) and url not in seen:
                seen.add(url)
                yield url


def listing_urls(
    client: PoliteClient, site: Site, base_url: str, *, max_pages: int = 10_000,
    max_age: float | None = None,
) -> Iterator[tuple[str, str | None]]:
    """``(recipe URL, listing thumbnail URL)`` pairs from the site's paginated listing pages.

    The offset of the next page advances by the number of items on the current one; the walk
    stops at an empty page, a page with nothing new, an error, or ``max_pages``. Cached pages
    older than ``max_age`` seconds are fetched again.
    """
    if not site.listing_path:
        return
    offset, seen = 0, set()
    for _ in range(max_pages):
        url = base_url + site.listing_path.format(offset=offset)
        try:
            page = client.get(url, max_age=max_age)
        except FetchError as err:
            if offset == 0:
                log.warning("listing page %s: %s", url, err.reason)
            else:
                log.info("listing ends at %s: %s", url, err.reason)
            return
        items = parse_listing(page.text, page.url, site.listing_items)
        new = [(link, thumb) for link, thumb in items if link not in seen]
        if not new:
            return
        for link, thumb in new:
            seen.add(link)
            link = rebase(link, site, base_url)
            thumb = rebase(thumb, site, base_url) if thumb else None
            if site.is_recipe_path(recipe_path_of(link)):
                yield link, thumb
        offset += len(items)


def parse_listing(text: str, page_url: str, selector: str) -> list[tuple[str, str | None]]:
    """The (link, thumbnail) of each item matching ``selector`` on a listing page."""
    if not text.strip():
        return []
    doc = BeautifulSoup(text, "html.parser")
    items = []
    for item in doc.select(selector):
        anchor = item.select_one("a[href]")
        if anchor is None:
            continue
        link = anchor["href"]
        img = item.select_one("img")
        thumb = (img.get("src") or img.get("data-src")) if img is not None else None
        items.append((urljoin(page_url, link), urljoin(page_url, thumb) if thumb else None))
    return items


def file_urls(path: str | Path, base_url: str | None = None) -> list[str]:
    """URLs from a text file, one per line (``#`` comments and blank lines ignored).

    A path-only line (``/recept/sarma/``) is taken relative to ``base_url``.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"URL file {str(path)!r} does not exist")
    urls, seen = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        url = urljoin(base_url + "/", line) if base_url and line.startswith("/") else line
        if url not in seen:
            seen.add(url)
            urls.append(url)
    return urls


def _maybe_gunzip(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
