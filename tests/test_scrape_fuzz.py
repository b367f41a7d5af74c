"""Property-based tests: every parser of untrusted scraped input fails only with its own error."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dishgen.data.scrape.discover import SitemapError, gunzip_capped, parse_listing, parse_sitemap
from dishgen.data.scrape.http import Page, Robots
from dishgen.data.scrape.parse import ParsedRecipe, ParseError, parse_recipe
from dishgen.data.scrape.photos import PhotoError, check_image

FIXTURES = Path(__file__).parent / "fixtures" / "site"
IMAGES = sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".jpg", ".png", ".webp"))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Random JSON-LD built from schema.org's Recipe vocabulary, so the parser meets plausible shapes.
KEYS = ["@type", "@graph", "@context", "name", "image", "url", "contentUrl", "width", "height",
        "recipeIngredient", "ingredients", "recipeInstructions", "itemListElement", "text", "value"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=True),
                    st.sampled_from(["Recipe", "HowToSection", "HowToStep", "ImageObject", "",
                                     "http://[::1/x.jpg", "/img.jpg", "javascript:alert(1)"]),
                    st.text(max_size=30))
JSON_LD = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4)
                       | st.dictionaries(st.sampled_from(KEYS), kids, max_size=6), max_leaves=25)


def html_with(json_ld: str, extra: str = "") -> str:
    return (f'<html><head><script type="application/ld+json">{json_ld}</script>{extra}</head>'
            "<body><h1>x</h1></body></html>")


def assert_clean(recipe: ParsedRecipe) -> None:
    for text in [recipe.name, *recipe.ingredients, *recipe.preparation]:
        assert text and text == text.strip() and "\x00" not in text and "\x1b" not in text
    assert recipe.name and recipe.ingredients
    assert all(url.startswith(("http://", "https://")) for url in recipe.images)


def parse_or_parse_error(text: str) -> None:
    try:
        recipe = parse_recipe(text, "https://www.coolinarika.com/recept/x/")
    except ParseError as err:
        assert str(err)
    else:
        assert_clean(recipe)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), JSON_LD, max_size=8), st.booleans())
@example({"name": "Sarma\x00\x1b[31m", "recipeIngredient": ["a"], "image": "http://[::1/x.jpg"}, True)
def test_random_json_ld_recipes_parse_or_raise_parse_error(data, as_recipe):
    if as_recipe:
        data = {**data, "@context": "https://schema.org", "@type": "Recipe"}
    parse_or_parse_error(html_with(json.dumps(data)))


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_page_text_parses_or_raises_parse_error(text):
    parse_or_parse_error(text)
    parse_or_parse_error(html_with(text))


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["", "text/html; charset=utf-8",
                                                  "text/html; charset=windows-1250", "text/html; charset=bogus"]))
def test_arbitrary_page_bytes_parse_or_raise_parse_error(body, content_type):
    parse_or_parse_error(Page("u", 200, body, content_type).text)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.lists(st.text(max_size=20), max_size=5).map(
                     lambda locs: ('<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                                   + "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
                                   + "</urlset>").encode())),
       st.booleans())
def test_sitemaps_parse_or_raise_sitemap_error(body, gzipped):
    data = gzip.compress(body) if gzipped else body
    try:
        kind, locs = parse_sitemap(data, max_bytes=10_000)
    except SitemapError as err:
        assert str(err)
    else:
        assert isinstance(kind, str) and all(isinstance(loc, str) and loc for loc in locs)
    try:
        assert gunzip_capped(data, 10_000) == body or not gzipped
    except SitemapError:
        assert not gzipped or len(body) > 10_000


@FUZZ
@given(st.text(max_size=300))
def test_listing_pages_give_a_list_of_links(text):
    for link, thumb in parse_listing(text, "https://www.recepti.com/kuvar/glavna-jela/0", "li"):
        assert isinstance(link, str) and (thumb is None or isinstance(thumb, str))


ROBOTS_LINES = st.lists(st.one_of(
    st.sampled_from(["User-agent: *", "User-agent: dishgen", "Disallow: /", "Allow: /recept/",
                     "Disallow: /*?print=", "Disallow: /*.pdf$", "Crawl-delay: 2", "Crawl-delay: x",
                     "Sitemap: /s.xml", "Sitemap: http://[::1", "Disallow: /[", "Allow: $", "# c", ""]),
    st.text(max_size=40)), max_size=12).map("\n".join)


@FUZZ
@given(ROBOTS_LINES, st.text(max_size=40))
def test_robots_rules_answer_for_any_file_and_path(text, path):
    robots = Robots(text)
    assert isinstance(robots.can_fetch("dishgen", "https://www.recepti.com/" + path), bool)
    delay = robots.crawl_delay("dishgen")
    assert delay is None or isinstance(delay, float)
    assert all(isinstance(url, str) for url in robots.site_maps())


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_are_photo_errors(data):
    try:
        check_image(data, 1)
    except PhotoError as err:
        assert str(err)


@FUZZ
@given(st.sampled_from(IMAGES), st.floats(0, 1), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4))
def test_truncated_and_corrupted_real_images_are_photo_errors(path, keep, flips):
    data = bytearray(path.read_bytes())
    for where, value in flips:  # corrupt a few bytes
        data[int(where * (len(data) - 1))] = value
    data = bytes(data[: max(1, int(len(data) * keep))])
    try:
        fmt, width, height = check_image(data, 1)
    except PhotoError as err:
        assert str(err)
    else:
        assert fmt in ("JPEG", "PNG", "WEBP") and width > 0 and height > 0
