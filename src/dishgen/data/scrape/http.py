"""A polite HTTP client for scraping: robots.txt, one request in flight per site, a delay between
requests, timeouts, retries with backoff that honour ``Retry-After``, and an on-disk cache.

Built on httpx rather than Scrapy: two sites, a sequential loop and a resumable JSONL output do not
need a crawling framework's reactor, and a plain client is easy to test against a loopback server.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from dishgen import __version__
from dishgen.errors import DishgenError
from dishgen.fileio import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = (
    f"dishgen/{__version__} (+https://github.com/dishgen/dishgen; "
    "research dataset of Serbian dish photos; one request at a time)"
)
# The token that robots.txt groups are matched against ("User-agent: dishgen").
ROBOTS_AGENT = "dishgen"
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_ROBOTS_CHARS = 512_000  # RFC 9309: crawlers must parse at least 500 KiB; the rest may go


class Robots:
    """A site's robots.txt rules, matched by Protego (Scrapy's parser, Google's rules).

    The standard library's ``urllib.robotparser`` ignores the ``*`` and ``$`` wildcards that real
    robots.txt files use (``Disallow: /*?print=`` would allow ``/recept/x/?print=1``); Protego
    implements them, ``Allow`` precedence by longest match, ``Crawl-delay`` and ``Sitemap``.

    Args:
        text: the robots.txt content (``None`` with ``allow_all`` or ``disallow_all``).
        allow_all: no robots.txt (404): everything is allowed.
        disallow_all: robots.txt unreachable or forbidden: nothing is allowed.
    """

    def __init__(self, text: str | None = None, *, allow_all: bool = False, disallow_all: bool = False):
        from protego import Protego

        self.allow_all, self.disallow_all = allow_all, disallow_all
        self._rules = None
        if text is not None and not (allow_all or disallow_all):
            try:
                self._rules = Protego.parse(text[:MAX_ROBOTS_CHARS])
            except Exception as err:  # noqa: BLE001 (a hostile file: read cautiously, as forbidden)
                log.warning("robots.txt could not be parsed (%s: %s): not fetching from the site",
                            type(err).__name__, err)
                self.disallow_all = True

    def can_fetch(self, agent: str, url: str) -> bool:
        """Whether ``agent`` may fetch ``url`` (argument order of ``urllib.robotparser``)."""
        if self.disallow_all:
            return False
        if self.allow_all or self._rules is None:
            return True
        try:
            return bool(self._rules.can_fetch(url, agent))
        except Exception:  # noqa: BLE001 (a URL Protego cannot match is not fetched)
            return False

    def crawl_delay(self, agent: str) -> float | None:
        """The ``Crawl-delay`` for ``agent`` in seconds, or None."""
        if self._rules is None:
            return None
        delay = self._rules.crawl_delay(agent)
        return float(delay) if delay is not None else None

    def site_maps(self) -> list[str]:
        """The ``Sitemap:`` URLs."""
        return list(self._rules.sitemaps) if self._rules is not None else []


@dataclass(frozen=True)
class _Reply:
    """What :meth:`PoliteClient._fetch` keeps of a response."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    is_redirect: bool


class FetchError(DishgenError):
    """A URL that could not be fetched; ``reason`` is a short phrase recorded per URL.

    Attributes:
        url: the URL asked for.
        reason: why, e.g. ``"HTTP 404"``, ``"timed out after 3 attempts"``, ``"robots.txt disallows"``.
        retryable: whether a later run may succeed (timeouts, 429, 5xx).
    """

    def __init__(self, url: str, reason: str, *, retryable: bool = False):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.retryable = retryable


@dataclass
class Page:
    """A fetched response body."""

    url: str  # the final URL, after same-site redirects
    status: int
    content: bytes
    content_type: str = ""
    from_cache: bool = False
    redirected_from: list[str] = field(default_factory=list)
    fetched_at: float = field(default_factory=time.time)  # when it came from the server

    @property
    def text(self) -> str:
        """The body decoded with the charset of the Content-Type header or of a ``<meta>`` tag
        (older Balkan sites still serve windows-1250), else UTF-8."""
        found = re.search(r"charset=[\"']?([\w.:-]+)", self.content_type, re.IGNORECASE) or re.search(
            rb"<meta[^>]+charset=[\"']?([\w.:-]+)", self.content[:4096], re.IGNORECASE)
        charset = found.group(1) if found else "utf-8"
        charset = charset.decode("ascii") if isinstance(charset, bytes) else charset
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # an unknown charset name
            return self.content.decode("utf-8", errors="replace")


@dataclass
class ClientStats:
    """Counters for the summary."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0


class PoliteClient:
    """An httpx client that behaves well towards the sites it visits.

    Every request of one host goes through one lock, so at most one request is in flight per site
    (even if the client is shared by threads), and consecutive requests to a host are at least
    ``delay`` seconds apart (or the site's robots.txt ``Crawl-delay``, when larger).

    Args:
        delay: seconds from the end of one response to the next request to the same host.
        timeout: seconds for connecting and for each read.
        retries: extra attempts after a timeout, a connection error, 429 or 5xx.
        backoff: base of the exponential backoff (``backoff * 2**attempt`` seconds) used when the
            server sends no ``Retry-After``.
        max_retry_after: the longest ``Retry-After`` honoured; a longer one gives up on the URL.
        cache_dir: folder for cached 200 responses (``None``: no cache).
        refresh: ignore cached responses (they are still rewritten).
        user_agent: the User-Agent header; put a contact address in it for a large crawl.
        max_redirects: same-site redirects followed per request.
        obey_robots: check robots.txt before each request (keep it on for real sites).
        max_bytes: the largest response body read (decompressed); a bigger one is refused
            without being held in memory. Recipe pages are ~0.3 MB, photos a few MB.
        request_deadline: the most seconds one request may take in all, body included
            (``timeout`` bounds each read, so a server that sends a few bytes every second would
            otherwise hold a request open for ever); over it the URL is given up, not retried.
    """

    def __init__(
        self,
        *,
        delay: float = 1.0,
        timeout: float = 20.0,
        retries: int = 3,
        backoff: float = 2.0,
        max_retry_after: float = 120.0,
        cache_dir: str | Path | None = None,
        refresh: bool = False,
        user_agent: str = DEFAULT_USER_AGENT,
        max_redirects: int = 5,
        obey_robots: bool = True,
        max_bytes: int = 40 * 2**20,
        request_deadline: float = 120.0,
    ):
        self.delay = delay
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.refresh = refresh
        self.user_agent = user_agent
        self.max_redirects = max_redirects
        self.obey_robots = obey_robots
        self.max_bytes = max_bytes
        self.request_deadline = request_deadline
        self.stats = ClientStats()
        self._client = httpx.Client(
            headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"},
            timeout=httpx.Timeout(min(timeout, request_deadline)),
            follow_redirects=False,
        )
        self._locks: dict[str, threading.Lock] = {}
        self._last_request: dict[str, float] = {}
        self._robots: dict[str, Robots] = {}
        self._guard = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PoliteClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- robots.txt -------------------------------------------------------------------------

    def robots(self, url: str) -> Robots:
        """The parsed robots.txt of ``url``'s site (fetched once, never from the cache).

        A missing robots.txt (404 and other 4xx) allows everything; a robots.txt that cannot be
        reached (5xx, timeouts: RFC 9309) or is forbidden (401/403, the cautious reading that
        Python's robotparser takes) disallows everything.
        """
        origin = _origin(url)
        with self._guard:
            parser = self._robots.get(origin)
        if parser is not None:
            return parser
        try:
            page = self._get(origin + "/robots.txt", use_cache=False, check_robots=False)
            parser = Robots(page.text)
        except FetchError as err:
            status = _status_of(err.reason)
            if status in (401, 403) or err.retryable:
                log.warning("robots.txt of %s unavailable (%s): not fetching from it", origin, err.reason)
                parser = Robots(disallow_all=True)
            else:
                parser = Robots(allow_all=True)
        with self._guard:
            self._robots[origin] = parser
        return parser

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets dishgen fetch ``url``."""
        return not self.obey_robots or self.robots(url).can_fetch(ROBOTS_AGENT, url)

    def sitemaps(self, url: str) -> list[str]:
        """The ``Sitemap:`` lines of the site's robots.txt."""
        return self.robots(url).site_maps()

    # -- fetching ---------------------------------------------------------------------------

    def get(
        self, url: str, *, use_cache: bool = True, max_age: float | None = None,
        offsite_redirects: bool = False,
    ) -> Page:
        """Fetch ``url`` politely (robots, delay, retries, redirects, cache).

        Args:
            url: the URL.
            use_cache: read and write the on-disk cache (pages yes, photos no: they are stored
                under their content hash anyway).
            max_age: seconds a cached copy stays usable (``None``: forever). Sitemaps and
                listing pages change, recipe pages hardly do.
            offsite_redirects: follow redirects to another host (e.g. a photo CDN).

        Raises:
            FetchError: robots.txt disallows it, it redirects off-site (unless allowed) or too
                often, the server answered an error status, or every attempt failed.
        """
        return self._get(
            url, use_cache=use_cache, check_robots=True, offsite_redirects=offsite_redirects,
            max_age=max_age,
        )

    def _get(
        self, url: str, *, use_cache: bool, check_robots: bool, offsite_redirects: bool = False,
        max_age: float | None = None,
    ) -> Page:
        if use_cache and not self.refresh:
            cached = self._cache_read(url)
            if cached is not None and max_age is not None and time.time() - cached.fetched_at > max_age:
                cached = None
            if cached is not None:
                self.stats.cache_hits += 1
                return cached
        chain: list[str] = []
        current = url
        while True:
            if check_robots and not self.allowed(current):
                where = "" if current == url else f" (redirect target {current})"
                raise FetchError(url, f"robots.txt disallows{where}")
            response = self._request(current)
            if response.is_redirect:
                target = urljoin(current, response.headers.get("location", ""))
                chain.append(current)
                if _origin(target) != _origin(url) and not offsite_redirects:
                    raise FetchError(url, f"redirected off-site to {target}")
                if len(chain) > self.max_redirects or target in chain:
                    raise FetchError(url, f"too many redirects (last to {target})")
                current = target
                continue
            break
        if response.status_code != 200:
            status = response.status_code
            raise FetchError(url, f"HTTP {status}", retryable=status in RETRY_STATUSES)
        page = Page(
            url=current,
            status=200,
            content=response.content,
            content_type=response.headers.get("content-type", ""),
            redirected_from=chain,
        )
        if use_cache:
            self._cache_write(url, page)
        return page

    def _request(self, url: str) -> _Reply:
        """One GET with retries; the host lock keeps one request in flight per site."""
        host = urlsplit(url).netloc
        with self._guard:
            lock = self._locks.setdefault(host, threading.Lock())
        with lock:
            attempt = 0
            while True:
                self._wait_turn(host, url)
                self.stats.requests += 1
                try:
                    response = self._fetch(url)
                except httpx.TimeoutException:
                    problem, wait = "timed out", None
                except (httpx.UnsupportedProtocol, httpx.InvalidURL) as err:
                    raise FetchError(url, f"not a fetchable URL ({err})") from None
                except httpx.TransportError as err:
                    problem, wait = f"connection failed ({type(err).__name__})", None
                except httpx.RequestError as err:  # e.g. a body that does not decompress
                    raise FetchError(url, f"bad response ({type(err).__name__}: {err})") from None
                else:
                    if response.status_code not in RETRY_STATUSES:
                        return response
                    problem = f"HTTP {response.status_code}"
                    wait = _retry_after(response.headers.get("retry-after"))
                    if wait is not None and wait > self.max_retry_after:
                        raise FetchError(
                            url, f"{problem} with Retry-After {wait:.0f} s (over the "
                            f"{self.max_retry_after:.0f} s limit)", retryable=True,
                        )
                finally:
                    # The delay runs from the end of a response to the start of the next request.
                    self._last_request[host] = time.monotonic()
                if attempt >= self.retries:
                    tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
                    raise FetchError(url, f"{problem} after {tries}", retryable=True)
                wait = self.backoff * 2**attempt if wait is None else wait
                log.info("%s: %s; retrying in %.2f s", url, problem, wait)
                self.stats.retries += 1
                attempt += 1
                # Make the next request of this host wait at least `wait` seconds from now.
                self._last_request[host] = time.monotonic() + wait - self._delay_for(url)

    def _fetch(self, url: str) -> _Reply:
        """One GET; the body is read (up to ``max_bytes``) only for a 200 answer."""
        deadline = time.monotonic() + self.request_deadline
        with self._client.stream("GET", url) as response:
            content = b""
            if time.monotonic() > deadline:  # the headers alone came too slowly
                raise FetchError(url, self._too_slow())
            if response.status_code == 200:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError(url, self._too_large(f"{int(declared) / 2**20:.1f} MiB declared"))
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchError(url, self._too_large("more"))
                    if time.monotonic() > deadline:
                        raise FetchError(url, self._too_slow(f"{size} bytes received"))
                    chunks.append(chunk)
                content = b"".join(chunks)
            return _Reply(response.status_code, response.headers, content, response.is_redirect)

    def _too_slow(self, what: str = "headers only") -> str:
        return (f"response too slow (not complete after the {self.request_deadline:g} s request "
                f"deadline; {what})")

    def _too_large(self, what: str) -> str:
        return f"response too large ({what}; the limit is max_bytes={self.max_bytes / 2**20:.0f} MiB)"

    def _delay_for(self, url: str) -> float:
        crawl_delay = None
        if self.obey_robots and _origin(url) in self._robots:
            crawl_delay = self._robots[_origin(url)].crawl_delay(ROBOTS_AGENT)
        return max(self.delay, float(crawl_delay or 0))

    def _wait_turn(self, host: str, url: str) -> None:
        last = self._last_request.get(host)
        if last is not None:
            pause = last + self._delay_for(url) - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    # -- cache ------------------------------------------------------------------------------

    def _cache_paths(self, url: str) -> tuple[Path, Path]:
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()
        folder = self.cache_dir / key[:2]
        return folder / f"{key}.body", folder / f"{key}.json"

    def _cache_read(self, url: str) -> Page | None:
        if self.cache_dir is None:
            return None
        body, meta = self._cache_paths(url)
        if not (body.is_file() and meta.is_file()):
            return None
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return Page(
            url=info["url"], status=200, content=body.read_bytes(),
            content_type=info.get("content_type", ""), from_cache=True,
            redirected_from=info.get("redirected_from", []),
            fetched_at=info.get("fetched_at", 0.0),
        )

    def _cache_write(self, url: str, page: Page) -> None:
        if self.cache_dir is None:
            return
        body, meta = self._cache_paths(url)
        # Body first, metadata last: an entry counts only once its metadata exists.
        atomic_write_bytes(body, page.content)
        atomic_write_json(meta, {
            "url": page.url, "requested": url, "content_type": page.content_type,
            "redirected_from": page.redirected_from, "fetched_at": page.fetched_at,
        })


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _status_of(reason: str) -> int | None:
    if reason.startswith("HTTP "):
        return int(reason.split()[1])
    return None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
