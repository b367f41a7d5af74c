"""Which photo of a recipe page is the recipe's photo: candidates, their sizes, and their order.

The first candidate is the page's main photo as recipe-scrapers reports it (its best-image choice
over the schema.org ``image``, ``og:image`` and ``twitter:image``), unless its size says it is a
thumbnail. The others follow, ranked by declared or URL-encoded size: schema.org images,
``og:image``/``twitter:image``/``image_src``, then the ``<img>`` tags of the page (``srcset``, and
the ``data-src``/``data-lazy-src`` of lazy loaders). Thumbnails, known by name or size, come last,
and :func:`dishgen.data.scrape.photos.fetch_photo` skips those known to be too small without
downloading them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

MAX_CANDIDATES = 20
MAX_PAGE_IMAGES = 80  # <img> tags read per page
THUMBNAIL_SIDE = 256  # a known shorter side under this ranks a candidate with the thumbnails

# Never a dish photo.
_NOT_PHOTO = re.compile(
    r"(^|[/._-])(logo|favicon|apple-touch-icon|icons?|avatars?|gravatar|emoji|sprites?|spacer|"
    r"placeholder|blank|pixel|loader|loading|badge|banner|ads?)([/._-]|$)|\.svg$", re.I)
# A small copy of a photo.
_THUMB_NAME = re.compile(r"(^|[/._-])(thumbs?|thumbnails?|small|mini|tiny)"
                         r"([/._-]|$)", re.I)
_WXH = re.compile(r"(?:^|[-_/@.=])(\d{2,5})[xX×](\d{2,5})(?=[-_/.@?&]|$)")
_CLOUDINARY = re.compile(r"(?:^|[/,])([wh])_(\d{2,5})(?=[,/])")
_GOOGLE = re.compile(r"[/=]([sw])(\d{2,5})(?:-h(\d{2,5}))?(?:-[a-z0-9-]+)?(?:/|$)")
_IMAGE_FILE = re.compile(r"\.(jpe?g|png|webp|gif|avif|bmp|tiff?)$", re.I)
_DENSITY = re.compile(r"^\s*(\S+)\s+(\d{1,5})w\s*$")


@dataclass
class ImageCandidate:
    """A photo URL a recipe page names, with what is known of its size before any download.

    Attributes:
        url: the absolute http(s) URL.
        width: declared (schema.org, ``og:image:width``, ``width=``, ``srcset``) or URL-encoded
            width in pixels, or None.
        height: the same for the height.
        source: where it was found: ``recipe-scrapers``, ``schema``, ``og:image``,
            ``twitter:image``, ``image_src`` or ``page``.
        thumbnail: the name says it is a small copy (``-thumb``, ``/small/``...).
    """

    url: str
    width: int | None = None
    height: int | None = None
    source: str = ""
    thumbnail: bool = False

    @property
    def shorter_side(self) -> int | None:
        """The shorter known side: both when both are known, else the one that is."""
        sides = [s for s in (self.width, self.height) if s]
        return min(sides) if sides else None


def size_from_url(url: str) -> tuple[int | None, int | None]:
    """The width and height a URL encodes: WordPress ``-300x200.jpg``, ``?w=300&h=200``,
    ``?resize=300,200``, Cloudinary ``w_300,h_200``, Google ``=s300``/``/w300-h200/``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None, None
    name = parts.path.rsplit("/", 1)[-1]
    found = _WXH.findall(name) or _WXH.findall(parts.path)
    if found:
        width, height = found[-1]
        return int(width), int(height)
    query = {k.lower(): v[0] for k, v in parse_qs(parts.query).items() if v}
    for key in ("resize", "fit"):
        if re.fullmatch(r"\d{2,5},\d{2,5}", query.get(key, "")):
            width, height = query[key].split(",")
            return int(width), int(height)
    width = next((int(query[k]) for k in ("w", "width", "imwidth") if query.get(k, "").isdigit()), None)
    height = next((int(query[k]) for k in ("h", "height") if query.get(k, "").isdigit()), None)
    if width or height:
        return width, height
    sides = dict((key, int(value)) for key, value in _CLOUDINARY.findall(parts.path))
    if sides:
        return sides.get("w"), sides.get("h")
    google = _GOOGLE.search(parts.path)
    if google and parts.netloc.endswith(("googleusercontent.com", "blogger.com", "bp.blogspot.com")):
        side = int(google.group(2))
        return (side, int(google.group(3))) if google.group(3) else (side, side if google.group(1) == "s" else None)
    return None, None


def is_photo_url(url: str) -> bool:
    """False for what is never a dish photo: logos, icons, avatars, SVGs, spacers, ``data:``."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return False
    return url.startswith(("http://", "https://")) and not _NOT_PHOTO.search(path)


def _dimension(value) -> int | None:
    """A declared width or height: ``1200``, ``"1200"``, ``"1200px"``, ``{"value": 1200}``."""
    if isinstance(value, dict):
        value = value.get("value") or value.get("maxValue")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return int(value) if 0 < value < 100_000 else None
    match = re.match(r"\s*(\d{1,5})(?!\d)", str(value)[:20])
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


class _Collector:
    def __init__(self, page_url: str):
        self.page_url = page_url
        self.found: dict[str, ImageCandidate] = {}

    def add(self, link, source: str, width=None, height=None) -> None:
        if not isinstance(link, str) or not link.strip() or link.strip().startswith("data:"):
            return
        try:
            url = urljoin(self.page_url, link.strip())
            parts = urlsplit(url)
        except ValueError:  # e.g. a malformed IPv6 host
            return
        if parts.scheme not in ("http", "https") or not parts.netloc or not is_photo_url(url):
            return
        if parts.fragment and not _IMAGE_FILE.search(parts.path):
            return  # an unresolved "@id" such as https://site/recipe/#primaryimage
        width, height = _dimension(width), _dimension(height)
        if not (width or height):
            width, height = size_from_url(url)
        known = self.found.get(url)
        if known is None:
            self.found[url] = ImageCandidate(url, width, height, source,
                                             bool(_THUMB_NAME.search(parts.path)))
        else:  # the same URL from several places: keep the largest declared size
            known.width = max(known.width or 0, width or 0) or None
            known.height = max(known.height or 0, height or 0) or None

    def add_schema(self, image, depth: int = 0) -> None:
        if depth > 4:
            return
        if isinstance(image, list):
            for item in image[:MAX_CANDIDATES]:
                self.add_schema(item, depth + 1)
        elif isinstance(image, dict):
            link = image.get("url") or image.get("contentUrl")
            link = link[0] if isinstance(link, list) and link else link
            if link is None and isinstance(image.get("@id"), str) and "#" not in image["@id"]:
                link = image["@id"]  # an ImageObject whose id is its URL
            self.add(link, "schema", image.get("width"), image.get("height"))
        else:
            self.add(image, "schema")

    def add_meta(self, soup) -> None:
        current = None
        for meta in soup.find_all("meta", limit=400):
            prop = (meta.get("property") or meta.get("name") or "").lower()
            content = meta.get("content")
            if prop in ("og:image", "og:image:url", "og:image:secure_url", "twitter:image",
                        "twitter:image:src"):
                self.add(content, prop.split(":image")[0] + ":image")
                current = content.strip() if isinstance(content, str) else None
            elif prop in ("og:image:width", "og:image:height") and current:
                try:
                    url = urljoin(self.page_url, current)
                except ValueError:
                    continue
                if url in self.found:
                    side = _dimension(content)
                    if prop.endswith("width"):
                        self.found[url].width = side or self.found[url].width
                    else:
                        self.found[url].height = side or self.found[url].height
        for link in soup.find_all("link", attrs={"rel": "image_src"}, limit=5):
            self.add(link.get("href"), "image_src")

    def add_page_images(self, soup) -> None:
        body = soup.body or soup
        for tag in body.find_all(["img", "source"], limit=MAX_PAGE_IMAGES):
            width, height = tag.get("width"), tag.get("height")
            for attr in ("data-lazy-srcset", "data-srcset", "srcset"):
                for item in str(tag.get(attr) or "").split(",")[:20]:
                    match = _DENSITY.match(item)
                    if match:  # "x-1024x683.jpg 1024w": the width is declared, the height scales
                        self.add(match.group(1), "page", int(match.group(2)), None)
            for attr in ("data-lazy-src", "data-src", "data-original", "data-orig-file", "src"):
                self.add(tag.get(attr), "page", width, height)


def collect_candidates(primary: str | None, schema_image, soup, page_url: str) -> list[ImageCandidate]:
    """The photo candidates of a page, best first.

    Args:
        primary: recipe-scrapers' ``image()`` (the page's main photo as it reports it), or None.
        schema_image: the Recipe's ``image`` value, ``@id`` references already resolved.
        soup: the page's BeautifulSoup (for ``<meta>``, ``<link>`` and ``<img>``).
        page_url: the page's URL, to resolve relative links.

    Returns:
        At most :data:`MAX_CANDIDATES` candidates: the primary first unless its size or name
        says it is a thumbnail; then schema.org and meta images, then page images, each group
        largest first (unknown sizes after known large ones); thumbnails last, largest first.
    """
    collector = _Collector(page_url)
    collector.add(primary, "recipe-scrapers")
    collector.add_schema(schema_image)
    if soup is not None:
        collector.add_meta(soup)
        collector.add_page_images(soup)

    def rank(item: tuple[int, ImageCandidate]):
        order, candidate = item
        side = candidate.shorter_side
        # A known size wins over the name ("thumb-1200x800.jpg" is no thumbnail).
        small = side < THUMBNAIL_SIDE if side is not None else candidate.thumbnail
        if small:  # thumbnails by name only (they may be large enough) before known small ones
            return (3, side is not None, -(side or 0), order)
        if candidate.source == "recipe-scrapers":
            return (0, False, 0, order)
        area = (candidate.width or side or 0) * (candidate.height or side or 0)
        return (1 if candidate.source != "page" else 2, False, -area, order)

    ranked = [c for _, c in sorted(enumerate(collector.found.values()), key=rank)]
    return ranked[:MAX_CANDIDATES]
