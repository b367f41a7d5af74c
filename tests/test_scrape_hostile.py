"""Hostile input never ends a scrape: each bad page, photo or sitemap is recorded and skipped."""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib
from functools import cache

import pytest
from test_scrape import FAST, FIXTURES, FixtureSite, skipped_reasons

from dishgen.data.records import read_records
from dishgen.data.scrape import PoliteClient, scrape
from dishgen.data.scrape.discover import SitemapError, gunzip_capped, parse_sitemap
from dishgen.data.scrape.http import FetchError
from dishgen.data.scrape.parse import ParseError, parse_recipe
from dishgen.data.scrape.photos import PhotoError, check_image
from dishgen.errors import DishgenError
from dishgen.fileio import OutputLocked, output_lock, read_jsonl


@cache
def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: ~110 KB on disk for 30000x30000 (900 Mpx when decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = bytes(1 + (width + 7) // 8) * 1000  # filter byte 0 + the packed row, 1000 rows
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(rows[: len(rows) // 1000 * min(1000, height - y)])
                    for y in range(0, height, 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@cache
def gzip_bomb(mib: int = 200) -> bytes:
    """One gzip member of ``mib`` MiB of zeros: about 200 KB for 200 MiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(2**20)
    return b"".join(packer.compress(zeros) for _ in range(mib)) + packer.flush()


def nested_json_ld_page(depth: int = 200_000) -> bytes:
    return (b'<html><head><script type="application/ld+json">' + b"[" * depth
            + b"</script></head><body><h1>Burek</h1></body></html>")


def test_decompression_bombs_and_any_decoder_error_are_photo_errors():
    bomb = png_bomb(30000, 30000)
    assert len(bomb) < 200_000
    with pytest.raises(PhotoError, match="decompression bomb"):  # Pillow's DecompressionBombError
        check_image(bomb, 64)
    with pytest.raises(PhotoError, match="decompression bomb"):  # Pillow's warning band (> 89 Mpx)
        check_image(png_bomb(10000, 10000), 64)
    with pytest.raises(PhotoError, match=r"too large \(8000x6000 = 48 Mpx, over the 40 Mpx limit\)"):
        check_image(png_bomb(8000, 6000), 64)
    assert check_image(png_bomb(300, 200), 64) == ("PNG", 300, 200)  # the builder makes real PNGs
    assert issubclass(PhotoError, DishgenError)


def test_gzip_bomb_is_refused_before_it_is_unpacked():
    bomb = gzip_bomb(200)
    assert len(bomb) < 300_000
    tracemalloc.start()
    try:
        with pytest.raises(SitemapError, match=r"more than 4.0 MiB \(a gzip bomb\?\)"):
            parse_sitemap(bomb, max_bytes=4 * 2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak  # gzip.decompress would have held the whole 200 MiB
    # Ordinary gzip sitemaps, several members, zero padding: unpacked as before.
    xml = b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc> /a </loc></url></urlset>'
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = packer.compress(xml) + packer.flush()
    assert parse_sitemap(member) == ("urlset", ["/a"])
    assert gunzip_capped(member + member + b"\0\0", 10_000) == xml + xml
    with pytest.raises(SitemapError, match="truncated"):
        gunzip_capped(member[:-5], 10_000)


def test_page_parse_failures_of_any_kind_are_parse_errors(monkeypatch):
    with pytest.raises(ParseError, match="nested too deeply"):
        parse_recipe(nested_json_ld_page().decode(), "http://x/r")

    import dishgen.data.scrape.parse as parse

    page = (FIXTURES / "coolinarika" / "recept" / "cevapi" / "index.html").read_text()
    assert parse_recipe(page, "http://x/r").name == "Ćevapi"
    for raised, expected in ((RecursionError("deep"), "nested too deeply"),
                             (KeyError("@type"), r"could not be parsed \(KeyError: '@type'\)"),
                             (KeyboardInterrupt(), None), (MemoryError(), None)):
        def broken(*args, raised=raised):
            raise raised

        monkeypatch.setattr(parse, "collect_candidates", broken)
        # KeyboardInterrupt and MemoryError are never turned into a skip.
        with pytest.raises(ParseError if expected else type(raised), match=expected):
            parse_recipe(page, "http://x/r")


def test_hostile_site_every_bad_item_is_recorded_and_a_rerun_passes_it(tmp_path):
    with FixtureSite(FIXTURES / "coolinarika") as site:
        robots = (FIXTURES / "coolinarika" / "robots.txt").read_text().replace("{base}", site.base)
        robots += f"Sitemap: {site.base}/sitemaps/bomba.xml.gz\n"
        gibanica = (FIXTURES / "coolinarika" / "recept" / "gibanica" / "index.html").read_text()
        site.faults = {
            "/robots.txt": [{"status": 200, "body": robots.encode(), "sticky": True}],
            "/sitemaps/bomba.xml.gz": [{"status": 200, "body": gzip_bomb(200), "sticky": True}],
            "/images/cevapi.jpg": [{"status": 200, "body": png_bomb(30000, 30000), "sticky": True}],
            "/recept/burek/": [{"status": 200, "body": nested_json_ld_page(), "sticky": True,
                                "headers": {"Content-Type": "text/html"}}],
            # 8 bytes every 0.25 s: each read arrives within --timeout, the whole takes minutes.
            "/recept/nije-recept/": [{"status": 200, "body": bytes(4000), "drip": (8, 0.25), "sticky": True}],
            # NUL and ANSI escapes in the recipe's name and ingredients.
            "/recept/gibanica/": [{"status": 200, "sticky": True, "body": gibanica.replace("{base}", site.base)
                                   .replace('"name": "Gibanica"', r'"name": "Giba\u0000nica \u001b[31m\u001b]0;x\u0007"')
                                   .replace('"4 jaja"', r'"4\t\u0000jaja\u001b[0m"').encode()}],
        }
        raw = tmp_path / "raw"
        summary = scrape("coolinarika", raw, base_url=site.base, max_download_mb=4,
                         request_deadline=1.0, **FAST)
        reasons = skipped_reasons(raw)
        assert summary.written == 1, reasons
        assert reasons["sitemaps/bomba.xml.gz"].startswith("sitemap skipped: unpacks to more than 4.0 MiB")
        assert "decompression bomb" in reasons["recept/cevapi/"]
        assert reasons["recept/burek/"] == "malformed JSON-LD (nested too deeply) and no other recipe data"
        assert reasons["recept/nije-recept/"].startswith("response too slow (not complete after the 1 s")
        [record] = read_records(raw)
        assert record.name == "Gibanica" and record.ingredients[2] == "4 jaja"
        text = (raw / "recipes.jsonl").read_text()
        assert "\\u0000" not in text and "\\u001b" not in text and "\x1b" not in text

        before = len(site.requests)
        lines_before = len(read_jsonl(raw / "skipped.jsonl"))
        again = scrape("coolinarika", raw, base_url=site.base, max_download_mb=4,
                       request_deadline=1.0, **FAST)
        assert again.written == 0 and len(read_jsonl(raw / "skipped.jsonl")) == lines_before
        refetched = [p for _, p, _ in site.requests[before:]]
        assert not any(p.startswith(("/recept/", "/images/")) for p in refetched), refetched


def test_any_unexpected_page_error_is_a_recorded_retryable_skip(tmp_path, monkeypatch):
    import dishgen.data.scrape.run as run

    def broken(text, url, **options):
        if "cevapi" in url:
            raise RuntimeError("a bug met by this page")
        return real(text, url, **options)

    real = run.parse_recipe
    monkeypatch.setattr(run, "parse_recipe", broken)
    with FixtureSite(FIXTURES / "coolinarika") as site:
        summary = scrape("coolinarika", tmp_path, base_url=site.base, **FAST)
    assert summary.written == 2
    row = {r["url"].split("/", 3)[-1]: r for r in read_jsonl(tmp_path / "skipped.jsonl")}["recept/cevapi/"]
    assert row["reason"] == "unexpected RuntimeError: a bug met by this page" and row["retryable"]

    monkeypatch.setattr(run, "parse_recipe", lambda text, url, **_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with FixtureSite(FIXTURES / "coolinarika") as site, pytest.raises(KeyboardInterrupt):
        scrape("coolinarika", tmp_path / "other", base_url=site.base, **FAST)


def test_a_dripping_server_is_cut_at_the_request_deadline(tmp_path):
    with FixtureSite(tmp_path) as site:
        site.faults["/drip"] = [{"status": 200, "body": bytes(400), "drip": (8, 0.1), "sticky": True}]
        site.faults["/quick"] = [{"status": 200, "body": b"ok", "sticky": True}]
        with PoliteClient(delay=0, timeout=1.0, obey_robots=False, request_deadline=0.5) as client:
            with pytest.raises(FetchError, match="response too slow") as info:
                client.get(site.base + "/drip", use_cache=False)
            assert not info.value.retryable
            assert client.get(site.base + "/quick", use_cache=False).content == b"ok"
        assert site.paths().count("/drip") == 1  # given up, not retried


def test_a_second_scrape_into_a_locked_folder_stops_before_any_request(tmp_path):
    with FixtureSite(FIXTURES / "coolinarika") as site:
        with output_lock(tmp_path):
            with pytest.raises(OutputLocked, match=r"in use by another dishgen command \(pid \d+"):
                scrape("coolinarika", tmp_path, base_url=site.base, **FAST)
        assert site.requests == []
        assert scrape("coolinarika", tmp_path, base_url=site.base, **FAST).written == 3
    assert not (tmp_path / ".dishgen.lock").exists()


def test_robots_wildcards_are_obeyed(tmp_path):
    rules = ("User-agent: *\nDisallow: /*?print=\nDisallow: /*.pdf$\nDisallow: /recept/\n"
             "Allow: /recept/*-javno/$\nCrawl-delay: 0.01\n\nUser-agent: otherbot\nDisallow: /\n")
    with FixtureSite(tmp_path) as site:
        site.faults["/robots.txt"] = [{"status": 200, "body": rules.encode(), "sticky": True}]
        with PoliteClient(delay=0) as client:
            allowed = {path: client.allowed(site.base + path) for path in (
                "/kuvar/sarma/?print=1", "/kuvar/sarma/", "/x.pdf", "/x.pdf?y", "/recept/a/",
                "/recept/sarma-javno/", "/recept/sarma-javno/x")}
            assert allowed == {"/kuvar/sarma/?print=1": False, "/kuvar/sarma/": True, "/x.pdf": False,
                               "/x.pdf?y": True, "/recept/a/": False, "/recept/sarma-javno/": True,
                               "/recept/sarma-javno/x": False}
            assert client._delay_for(site.base + "/") == 0.01
        for status, fetch in ((401, False), (403, False), (404, True), (500, False)):
            site.faults["/robots.txt"] = [{"status": status, "sticky": True}]
            with PoliteClient(delay=0, retries=0) as client:  # a new client reads robots.txt again
                assert client.allowed(site.base + "/recept/x/") is fetch, status


def test_scrape_cli_one_line_error_for_a_locked_folder(tmp_path):
    import subprocess
    import sys

    with output_lock(tmp_path):
        code = "import sys; from dishgen.cli import main; sys.argv[0] = 'dishgen'; main()"
        done = subprocess.run([sys.executable, "-c", code, "data", "scrape", "coolinarika", "--out",
                               str(tmp_path), "--base-url", "http://127.0.0.1:9"],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "rror" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: ") and "Traceback" not in done.stderr
    assert f"in use by another dishgen command (pid {os.getpid()} on " in errors[0]
    assert "delete " in errors[0] and ".dishgen.lock" in errors[0]
