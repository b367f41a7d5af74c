"""Finding recipe URLs without a browser: sitemaps, listing pages, or a file of URLs."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup
from lxml import etree

from dishgen.data.scrape.http import FetchError, PoliteClient
from dishgen.data.scrape.sites import Site
from dishgen.errors import DishgenError

log = logging.getLogger(__name__)

MAX_SITEMAPS = 500  # a bound on sitemap-index recursion, against loops and giant indexes


def rebase(url: str, site: Site, base_url: str) -> str:
    """``url`` moved onto ``base_url`` when it points at the real site and a mirror is in use.

    A mirror serves the site's own robots.txt, sitemaps and pages, which name the real host.
    """
    real = urlsplit(site.base_url)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 host: left as it is, the fetch then says why
        return url
    if base_url.rstrip("/") == site.base_url or parts.netloc.removeprefix("www.") != \
            real.netloc.removeprefix("www."):
        return url
    return base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def recipe_path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class SitemapError(DishgenError, ValueError):
    """A sitemap that cannot be used (not XML, a gzip that does not unpack, over the size limit)."""


def sitemap_urls(
    client: PoliteClient, site: Site, base_url: str, *, max_age: float | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> Iterator[str]:
    """Recipe URLs from the sitemaps named in robots.txt (``/sitemap.xml`` if none are).

    Sitemap indexes are followed, gzip sitemaps decompressed (streamed, at most
    ``client.max_bytes`` unpacked: a gzip bomb is refused without being unpacked), and only
    URLs on the same site whose path matches ``site.recipe_path`` are yielded, each once.
    Cached sitemaps older than ``max_age`` seconds are fetched again.

    Args:
        client: the polite client.
        site: the site.
        base_url: the site's base URL (or a mirror's).
        max_age: seconds a cached sitemap is reused.
        on_skip: called as ``on_skip(sitemap_url, reason)`` for a sitemap that is fetched but
            unusable (not XML, does not unpack, too large), so that the caller can record it.
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
            kind, locs = parse_sitemap(page.content, client.max_bytes)
        except SitemapError as err:
            log.warning("sitemap %s skipped: %s", sitemap, err)
            if on_skip is not None:
                on_skip(sitemap, f"sitemap skipped: {err}")
            continue
        urls = [rebase(url, site, base_url) for url in (_join(sitemap, loc) for loc in locs) if url]
        if kind == "sitemapindex":
            queue.extend(urls)
            continue
        for url in urls:
            if _host(url) != _host(base_url):  # www.x.rs and x.rs are the same site
                continue
            if site.is_recipe_path(recipe_path_of(url)) and url not in seen:
                seen.add(url)
                yield url


def listing_urls(
    client: PoliteClient, site: Site, base_url: str, *, max_pages: int = 10_000,
    max_age: float | None = None, on_skip: Callable[[str, str], None] | None = None,
) -> Iterator[tuple[str, str | None]]:
    """``(recipe URL, listing thumbnail URL)`` pairs from the site's paginated listing pages.

    The offset of the next page advances by the number of items on the current one; the walk
    stops at an empty page, a page with nothing new, an error, or ``max_pages``. Cached pages
    older than ``max_age`` seconds are fetched again. A listing page that cannot be parsed ends
    the walk and is reported through ``on_skip(url, reason)``.
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
        try:
            items = parse_listing(page.text, page.url, site.listing_items)
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 (hostile markup ends the walk, recorded)
            reason = f"listing page could not be parsed ({type(err).__name__}: {str(err)[:200]})"
            log.warning("listing ends at %s: %s", url, reason)
            if on_skip is not None:
                on_skip(url, reason)
            return
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
        link = _join(page_url, anchor["href"])
        img = item.select_one("img")
        thumb = (img.get("src") or img.get("data-src")) if img is not None else None
        if link:
            items.append((link, _join(page_url, thumb) if thumb else None))
    return items


def _host(url: str) -> str:
    return urlsplit(url).netloc.lower().removeprefix("www.")


def _join(base: str, link) -> str | None:
    """``link`` resolved against ``base``; None when it is not a URL (``http://[x`` raises)."""
    if not isinstance(link, str) or not link.strip():
        return None
    try:
        url = urljoin(base, link.strip())
        urlsplit(url)
    except ValueError:
        return None
    return url


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


def parse_sitemap(data: bytes, max_bytes: int = 40 * 2**20) -> tuple[str, list[str]]:
    """The root element name (``urlset`` or ``sitemapindex``) and the ``<loc>`` texts of a sitemap.

    Args:
        data: the sitemap as served, plain XML or gzip.
        max_bytes: the most bytes a gzip sitemap may unpack to.

    Raises:
        SitemapError: not well-formed XML, a broken gzip, or more than ``max_bytes`` unpacked.
    """
    xml = gunzip_capped(data, max_bytes) if data[:2] == b"\x1f\x8b" else data
    try:
        root = etree.fromstring(xml, parser=etree.XMLParser(
            resolve_entities=False, no_network=True, recover=False, huge_tree=False))
    except etree.XMLSyntaxError as err:
        raise SitemapError(f"not valid XML ({err})") from None
    if root is None:
        raise SitemapError("not valid XML (no root element)")
    kind = etree.QName(root).localname
    locs = [loc.text.strip() for loc in root.iter("{*}loc") if loc.text and loc.text.strip()]
    return kind, locs


def gunzip_capped(data: bytes, max_bytes: int) -> bytes:
    """Unpack gzip ``data`` (all members), refusing it as soon as it passes ``max_bytes``.

    ``gzip.decompress`` has no limit: a 200 KB sitemap can unpack to 2 GB. zlib's ``max_length``
    stops each step at the bytes still allowed, so at most ``max_bytes + 1`` are ever held.

    Raises:
        SitemapError: more than ``max_bytes`` unpacked, or not a complete gzip stream.
    """
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # a gzip header and trailer
        try:
            out += inflater.decompress(rest, max_bytes + 1 - len(out))
            while not inflater.eof and len(out) <= max_bytes:  # output still pending inside zlib
                more = inflater.decompress(inflater.unconsumed_tail, max_bytes + 1 - len(out))
                if not more:
                    break
                out += more
        except zlib.error as err:
            raise SitemapError(f"broken gzip ({err})") from None
        if len(out) > max_bytes:
            raise SitemapError(
                f"unpacks to more than {max_bytes / 2**20:.1f} MiB (a gzip bomb?); the limit is "
                "--max-download-mb")
        if not inflater.eof:
            raise SitemapError("broken gzip (truncated)")
        rest = inflater.unused_data.lstrip(b"\x00")  # the next member; gzip allows zero padding
    return bytes(out)
