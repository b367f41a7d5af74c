"""The scrape loop: discover recipe URLs, fetch and parse each page, store its photo, append one
record per recipe to ``RAW/recipes.jsonl`` and one line per skipped URL to ``RAW/skipped.jsonl``.

Both files are appended one flushed line at a time, so a killed scrape leaves at worst a torn last
line, which the next run repairs before it continues; URLs already recorded are not fetched again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from dishgen.data.records import RECORDS_FILE, RawRecord
from dishgen.data.scrape.discover import file_urls, listing_urls, rebase, sitemap_urls
from dishgen.data.scrape.http import DEFAULT_USER_AGENT, FetchError, PoliteClient
from dishgen.data.scrape.parse import DEFAULT_PARSE_BUDGET, ParseError, parse_recipe
from dishgen.data.scrape.photos import PhotoError, fetch_photo
from dishgen.data.scrape.sites import SITES, Site, resolve_site
from dishgen.errors import DishgenError
from dishgen.fileio import append_jsonl, output_lock, read_jsonl, repair_jsonl

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.jsonl"
CACHE_DIR = ".http-cache"
DISCOVERY_MODES = ("auto", "sitemap", "listing")


@dataclass
class ScrapeSummary:
    """What one scrape run did."""

    site: str
    discovered: int = 0
    already_done: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    total_records: int = 0  # records of this site in RAW after the run
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    reached_max: bool = False

    def lines(self) -> list[str]:
        """A short human-readable summary."""
        out = [
            f"{self.site}: {self.written} new recipes written, {sum(self.skipped.values())} URLs "
            f"skipped, {self.already_done} already done ({self.discovered} URLs seen); "
            f"{self.total_records} records in total",
            f"HTTP: {self.requests} requests, {self.cache_hits} from cache, {self.retries} retries",
        ]
        for reason, count in self.skipped.most_common(10):
            out.append(f"  skipped {count:>4} x {reason}")
        if self.reached_max:
            out.append("stopped at --max-recipes; run again with a larger value to continue")
        return out


def scrape(
    site_name: str,
    out: str | Path,
    *,
    base_url: str | None = None,
    recipe_path: str | None = None,
    urls_file: str | Path | None = None,
    discover: str = "auto",
    max_recipes: int | None = None,
    max_pages: int = 10_000,
    discovery_max_age: float = 24 * 3600,
    delay: float = 1.0,
    timeout: float = 20.0,
    retries: int = 3,
    backoff: float = 2.0,
    cache_dir: str | Path | None = None,
    refresh: bool = False,
    user_agent: str = DEFAULT_USER_AGENT,
    min_image_side: int = 256,
    max_download_mb: float = 40.0,
    request_deadline: float = 120.0,
    parse_budget: float | None = DEFAULT_PARSE_BUDGET,
    on_progress: Callable[[str, str], None] | None = None,
) -> ScrapeSummary:
    """Scrape one recipe site into a raw folder, resuming where an earlier run stopped.

    Args:
        site_name: ``recepti``, ``coolinarika``, ``generic`` (with ``base_url``), or the URL
            of any site with schema.org recipes (its records' ``source`` is its host name).
        out: the raw folder (``recipes.jsonl``, ``skipped.jsonl``, ``images/``).
        base_url: a mirror or test server with the site's paths (default: the real site); for
            ``generic``, the site itself.
        recipe_path: regex a recipe page's path (and query) must match, replacing the site's
            (for a generic site: any page except archives, feeds and files).
        urls_file: scrape the URLs in this file instead of discovering them.
        discover: ``auto`` (sitemaps, then listing pages if the sitemaps give nothing),
            ``sitemap`` or ``listing``.
        max_recipes: stop once RAW holds this many records of the site (a re-run continues).
        max_pages: most listing pages walked.
        discovery_max_age: seconds a cached sitemap or listing page is reused before it is
            fetched again (recipe pages are reused until ``refresh``).
        delay: seconds between requests to a site (robots.txt ``Crawl-delay`` wins if larger).
        timeout: seconds per connect/read.
        retries: extra attempts on timeouts, 429 and 5xx.
        backoff: base seconds of the exponential backoff when no ``Retry-After`` is sent.
        cache_dir: on-disk HTTP cache of pages (default ``RAW/.http-cache``).
        refresh: fetch pages again even when cached.
        user_agent: the User-Agent header.
        min_image_side: smallest accepted shorter side of a photo, in pixels.
        max_download_mb: largest page or photo read (gzip sitemaps: unpacked), in MiB; bigger
            ones are skipped.
        request_deadline: most seconds one request may take in all, body included; a slower
            response (a server that drips bytes) is skipped.
        parse_budget: most seconds spent parsing one page (a larger one is skipped with its
            reason); None for no limit.
        on_progress: called as ``on_progress(event, url)`` with event ``written``, ``skipped``
            or ``done`` (already recorded), e.g. to drive a progress bar.

    Returns:
        The run's summary.

    Raises:
        DishgenError: an unknown site or discovery mode, ``generic`` without ``base_url``, or
            a ``recipe_path`` that is not a regular expression.
        OutputLocked: another dishgen command is writing into ``out`` (see
            :func:`dishgen.fileio.output_lock`).
    """
    site = resolve_site(site_name, base_url, recipe_path)
    if site_name not in SITES:  # a generic site: its base URL is the site itself
        base_url = None
    if discover not in DISCOVERY_MODES:
        raise DishgenError(f"unknown discovery mode {discover!r}; use {', '.join(DISCOVERY_MODES)}")
    base = (base_url or site.base_url).rstrip("/")
    out = Path(out)
    with output_lock(out):
        return _scrape_locked(
            site, base, out, urls_file=urls_file, discover=discover, max_recipes=max_recipes,
            max_pages=max_pages, discovery_max_age=discovery_max_age, min_image_side=min_image_side,
            parse_budget=parse_budget, on_progress=on_progress, client=PoliteClient(
                delay=delay, timeout=timeout, retries=retries, backoff=backoff, refresh=refresh,
                cache_dir=cache_dir if cache_dir is not None else out / CACHE_DIR,
                user_agent=user_agent, max_bytes=int(max_download_mb * 2**20),
                request_deadline=request_deadline,
            ),
        )


def _scrape_locked(
    site: Site, base: str, out: Path, *, urls_file, discover: str, max_recipes: int | None,
    max_pages: int, discovery_max_age: float, min_image_side: int, parse_budget: float | None,
    on_progress: Callable[[str, str], None] | None, client: PoliteClient,
) -> ScrapeSummary:
    records_path, skipped_path = out / RECORDS_FILE, out / SKIPPED_FILE
    for path in (records_path, skipped_path):
        if repair_jsonl(path):
            log.warning("%s: removed a torn last line left by an interrupted run", path)

    done: set[str] = set()
    total = 0
    for row in read_jsonl(records_path):
        done.update(u for u in (row.get("url"), row.get("final_url")) if u)
        total += row.get("source") == site.name
    # The latest line per URL wins; transient failures (timeouts, 429, 5xx) are tried again.
    last_skip = {row["url"]: row for row in read_jsonl(skipped_path) if row.get("url")}
    done.update(url for url, row in last_skip.items() if not row.get("retryable"))

    summary = ScrapeSummary(site=site.name, total_records=total)
    notify = on_progress or (lambda event, url: None)

    def record_skip(url: str, reason: str, retryable: bool = False, **more) -> None:
        append_jsonl(skipped_path, [{
            "url": url, "source": site.name, "reason": reason, "retryable": retryable, **more,
            "at": _now(),
        }])
        last_skip[url] = {"reason": reason, "retryable": retryable}
        summary.skipped[_reason_kind(reason)] += 1

    def record_discovery_skip(url: str, reason: str) -> None:
        # Sitemaps and listing pages are read on every run: record each problem once.
        if last_skip.get(url, {}).get("reason") != reason:
            record_skip(url, reason, kind="discovery")

    with client:
        if max_recipes is not None and total >= max_recipes:
            summary.reached_max = True
            return summary
        found = _discover(client, site, base, discover, urls_file, max_pages, discovery_max_age,
                          record_discovery_skip)
        for url, thumb in found:
            summary.discovered += 1
            if url in done:
                summary.already_done += 1
                notify("done", url)
                continue
            done.add(url)
            try:
                record = _scrape_one(client, site, base, url, thumb, out, min_image_side,
                                     parse_budget)
                final = record.extra.get("final_url")
                if final in done:
                    raise ParseError(f"redirects to {final}, a recipe already recorded")
            except (OSError, MemoryError):
                raise  # this machine's problem (disk full, permissions, memory), not the page's
            except Exception as err:  # noqa: BLE001 (one bad page never ends the scrape)
                if isinstance(err, (FetchError, ParseError, PhotoError)):
                    reason = getattr(err, "reason", None) or str(err)
                    retryable = getattr(err, "retryable", False)
                else:  # a dishgen bug met by this page: recorded, and tried again by a fixed version
                    log.warning("unexpected error on %s", url, exc_info=True)
                    reason = f"unexpected {type(err).__name__}: {str(err)[:200]}"
                    retryable = True
                record_skip(url, reason, retryable)
                log.info("skipped %s: %s", url, reason)
                notify("skipped", url)
                continue
            append_jsonl(records_path, [record.to_json()])
            if record.extra.get("final_url"):
                done.add(record.extra["final_url"])
            summary.written += 1
            summary.total_records += 1
            notify("written", url)
            if max_recipes is not None and summary.total_records >= max_recipes:
                summary.reached_max = True
                break
        summary.requests = client.stats.requests
        summary.cache_hits = client.stats.cache_hits
        summary.retries = client.stats.retries
    return summary


def _discover(
    client: PoliteClient, site, base: str, mode: str, urls_file, max_pages: int, max_age: float,
    on_skip: Callable[[str, str], None],
) -> Iterator[tuple[str, str | None]]:
    if urls_file is not None:
        yield from ((rebase(url, site, base), None) for url in file_urls(urls_file, base))
        return
    found = False
    if mode in ("auto", "sitemap"):
        for url in sitemap_urls(client, site, base, max_age=max_age, on_skip=on_skip):
            found = True
            yield url, None
    if mode == "listing" or (mode == "auto" and not found):
        yield from listing_urls(client, site, base, max_pages=max_pages, max_age=max_age,
                                on_skip=on_skip)


def _scrape_one(
    client: PoliteClient, site: Site, base: str, url: str, thumb: str | None, out: Path,
    min_side: int, parse_budget: float | None,
) -> RawRecord:
    page = client.get(url)
    try:
        recipe = parse_recipe(page.text, page.url, time_budget=parse_budget)
    except ParseError as err:
        if page.redirected_from:
            raise ParseError(f"{err} (redirected to {page.url})") from err
        raise
    images = [replace(c, url=rebase(c.url, site, base)) for c in recipe.image_candidates]
    photo = fetch_photo(client, images, out, min_side=min_side, exclude={thumb} if thumb else None)
    extra = {"image_url": photo.url, "width": photo.width, "height": photo.height}
    if page.url != url:
        extra["final_url"] = page.url
    return RawRecord(
        name=recipe.name,
        image=photo.path,
        id=hashlib.sha256(url.encode("utf-8")).hexdigest()[:16],
        ingredients=recipe.ingredients,
        preparation=recipe.preparation,
        source=site.name,
        url=url,
        fetched_at=datetime.fromtimestamp(page.fetched_at, timezone.utc).isoformat(
            timespec="seconds"),
        extra=extra,
    )


def _reason_kind(reason: str) -> str:
    """A reason without its URLs and details, to group the summary."""
    head = re.sub(r"\s*https?://\S+?(:\s|\s|$)", " ", reason).split(" (", 1)[0]
    return re.sub(r"\s+", " ", head).replace(" :", ":").strip(" :;").removesuffix(" to")[:80]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

