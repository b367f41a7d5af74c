"""Scraping against loopback copies of recepti.com and coolinarika.com with injected faults."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from dishgen.cli.data_scrape import scrape as scrape_command
from dishgen.data.records import read_records
from dishgen.data.scrape import PoliteClient, scrape
from dishgen.data.scrape.http import FetchError, _retry_after
from dishgen.data.scrape.photos import PhotoError, check_image
from dishgen.fileio import read_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "site"
TEXT_TYPES = {".html": "text/html; charset=utf-8", ".xml": "application/xml", ".txt": "text/plain"}
# The timeout leaves a loaded CI machine room for ordinary loopback requests; the one slow page
# (107-spori) sleeps longer than it.
FAST = dict(delay=0.0, timeout=1.0, retries=1, backoff=0.01, min_image_side=64)


class FixtureSite:
    """A threaded HTTP server on 127.0.0.1 serving one fixture site, with injectable faults.

    ``{base}`` in text files becomes the server's own URL; ``X.gz`` is served as the gzip of X
    when only X exists; ``/a/b`` is served from ``a/b.html`` or ``a/b/index.html``.
    ``faults[path]`` is a list of responses used (and consumed) before the file is served; a
    fault with ``"sticky": True`` is never consumed; ``"drip": (n, seconds)`` sends the body
    ``n`` bytes at a time, ``seconds`` apart.
    """

    def __init__(self, root: Path, page_base: str | None = None):
        self.root = root
        self.page_base = page_base  # what {base} becomes (default: this server, see below)
        self.faults: dict[str, list[dict]] = {}
        self.requests: list[tuple[float, str, str]] = []  # (server time, path, User-Agent)
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                with site._lock:
                    site.requests.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
                    site.in_flight += 1
                    site.max_in_flight = max(site.max_in_flight, site.in_flight)
                counted = [True]

                def answered(code, message=None, _send=self.send_response):
                    # A request stops being in flight when its answer starts, not when the handler
                    # thread gets round to its `finally`: the client may have the whole answer and
                    # sent its next request by then (seen on a loaded machine).
                    with site._lock:
                        site.in_flight -= counted[0]
                        counted[0] = False
                    _send(code, message)

                self.send_response = answered
                try:
                    site.respond(self, counted)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and went away
                finally:
                    with site._lock:
                        site.in_flight -= counted[0]

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FixtureSite:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def respond(self, handler: BaseHTTPRequestHandler, counted: list[bool]) -> None:
        path = handler.path.split("?", 1)[0]
        faults = self.faults.get(path)
        if faults:
            fault = faults[0] if faults[0].get("sticky") else faults.pop(0)
            if fault.get("outlives_timeout"):
                with self._lock:  # the client gives up on it: no longer a request in flight
                    self.in_flight -= 1
                    counted[0] = False
            time.sleep(fault.get("sleep", 0))
            if "status" in fault:
                body = fault.get("body", b"error")
                handler.send_response(fault["status"])
                for key, value in fault.get("headers", {}).items():
                    handler.send_header(key, value)
                if not fault.get("no_length"):  # without it, HTTP/1.0 ends the body by closing
                    handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                size, pause = fault.get("drip", (len(body) or 1, 0))
                for start in range(0, len(body), size):
                    handler.wfile.write(body[start:start + size])
                    handler.wfile.flush()
                    time.sleep(pause)
                return
        found = self.find(path)
        if found is None:
            handler.send_error(404)
            return
        body, content_type = found
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def find(self, path: str) -> tuple[bytes, str] | None:
        relative = path.lstrip("/")
        gzipped = relative.endswith(".gz") and not (self.root / relative).is_file()
        if gzipped:
            relative = relative[:-3]
        for candidate in (relative, relative + ".html", relative.rstrip("/") + "/index.html"):
            file = self.root / candidate
            if candidate and file.is_file():
                break
        else:
            return None
        data = file.read_bytes()
        if file.suffix in TEXT_TYPES:
            data = data.replace(b"{base}", (self.page_base or self.base).encode())
        if gzipped:
            return gzip.compress(data), "application/gzip"
        return data, TEXT_TYPES.get(file.suffix, "image/jpeg")


@pytest.fixture
def recepti():
    with FixtureSite(FIXTURES / "recepti") as site:
        site.faults = {
            "/kuvar/glavna-jela/103-pasulj": [{"status": 500}],
            "/kuvar/glavna-jela/104-gulas": [{"status": 429, "headers": {"Retry-After": "1"}}],
            "/kuvar/glavna-jela/107-spori": [{"sleep": 1.5, "sticky": True, "outlives_timeout": True}],
            "/kuvar/glavna-jela/108-stari": [
                {"status": 301, "headers": {"Location": "/kuvar/glavna-jela/109-podvarak"}, "sticky": True}
            ],
        }
        yield site


@pytest.fixture
def coolinarika():
    with FixtureSite(FIXTURES / "coolinarika") as site:
        yield site


def skipped_reasons(raw: Path) -> dict[str, str]:
    return {row["url"].split("/", 3)[-1]: row["reason"] for row in read_jsonl(raw / "skipped.jsonl")}


def test_recepti_listing_microdata_and_faults(recepti, tmp_path):
    raw = tmp_path / "raw"
    result = CliRunner().invoke(scrape_command, [
        "recepti", "--out", str(raw), "--base-url", recepti.base, "--delay", "0", "--timeout", "1.0",
        "--retries", "1", "--backoff", "0.01", "--min-image-side", "64",
    ])
    assert result.exit_code == 0, result.output
    assert "5 new recipes written" in result.output

    records = read_records(raw)
    by_name = {r.name: r for r in records}
    assert sorted(by_name) == ["Juneći gulaš", "Podvarak", "Prebranac", "Punjene paprike", "Sarma"]
    for record in records:
        assert record.source == "recepti"
        assert record.url.startswith(recepti.base + "/kuvar/glavna-jela/")
        assert record.ingredients and record.preparation and record.fetched_at
        with Image.open(raw / record.image) as im:  # the full-size photo, not the 32x24 thumbnail
            assert im.size == (96, 80)
    sarma = by_name["Sarma"]
    assert sarma.ingredients[1] == "500 g mlevenog mesa"
    assert sarma.preparation[-1] == "Kuvati na tihoj vatri 3 sata."
    # A PNG served as .jpg is stored as .png, under the hash of its bytes.
    assert by_name["Punjene paprike"].image.endswith(".png")
    import hashlib
    data = (raw / sarma.image).read_bytes()
    assert sarma.image == f"images/{hashlib.sha256(data).hexdigest()}.jpg"
    # The redirected recipe is recorded under the URL that was discovered, with where it led.
    assert by_name["Podvarak"].url.endswith("/108-stari")
    assert by_name["Podvarak"].extra["final_url"].endswith("/109-podvarak")

    reasons = skipped_reasons(raw)
    assert "only the listing thumbnail" in reasons["kuvar/glavna-jela/105-bez-slike"]
    assert "not an image" in reasons["kuvar/glavna-jela/106-losa-slika"]
    assert "timed out after 2 attempts" in reasons["kuvar/glavna-jela/107-spori"]
    assert reasons["kuvar/glavna-jela/110-nestao"] == "HTTP 404"
    assert "missing ingredients" in reasons["kuvar/glavna-jela/111-pokvaren"]
    assert reasons["kuvar/privatno/999-tajni-recept"] == "robots.txt disallows"
    skipped = {row["url"].rsplit("/", 1)[-1]: row for row in read_jsonl(raw / "skipped.jsonl")}
    assert skipped["107-spori"]["retryable"] and not skipped["110-nestao"]["retryable"]

    paths = recepti.paths()
    assert not any(p.startswith("/kuvar/privatno/") for p in paths)  # robots.txt obeyed
    assert not any(p.startswith("/slike/male/") for p in paths)  # thumbnails never fetched
    assert paths.count("/kuvar/glavna-jela/103-pasulj") == 2  # 500, then success
    assert all(ua.startswith("dishgen/") for _, _, ua in recepti.requests)
    assert recepti.max_in_flight == 1
    # Retry-After: 1 on the 429 was honoured.
    times = [t for t, p, _ in recepti.requests if p == "/kuvar/glavna-jela/104-gulas"]
    assert len(times) == 2 and times[1] - times[0] >= 0.95


def test_coolinarika_gzip_sitemap_index_and_json_ld(coolinarika, tmp_path):
    raw = tmp_path / "raw"
    summary = scrape("coolinarika", raw, base_url=coolinarika.base, **{**FAST, "delay": 0.05})
    assert summary.written == 3 and summary.total_records == 3

    by_name = {r.name: r for r in read_records(raw)}
    assert sorted(by_name) == ["Burek s mesom", "Gibanica", "Ćevapi"]
    gibanica = by_name["Gibanica"]
    # HowToSection names are not steps; the largest ImageObject is the photo, WebP from the bytes.
    assert gibanica.preparation == [
        "Sir izmiješati s jajima i vrhnjem.", "Kore slagati s nadjevom u tepsiju.",
        "Peći 40 minuta na 200 °C.",
    ]
    assert gibanica.image.endswith(".webp")
    with Image.open(raw / by_name["Burek s mesom"].image) as im:  # list: the small one is refused
        assert im.size == (120, 90)
    assert by_name["Ćevapi"].ingredients[0] == "500 g mljevene junetine"

    reasons = skipped_reasons(raw)
    assert reasons["recept/losa-json/"].startswith("malformed JSON-LD")
    assert reasons["recept/nije-recept/"].startswith("not a recipe page")
    assert reasons["recept/bez-sastojaka/"] == "recipe is missing ingredients"
    assert reasons["recept/tajni-recept/"] == "robots.txt disallows"
    assert len(reasons) == 4

    paths = coolinarika.paths()
    assert "/sitemaps/recepti-1.xml.gz" in paths
    assert not any(p.startswith(("/clanak/", "/korisnik/", "/recept/tajni-")) for p in paths)
    assert paths.count("/recept/cevapi/") == 1  # listed twice in the sitemap, fetched once
    # The delay is honoured between every two requests, measured on the server.
    times = [t for t, _, _ in coolinarika.requests]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) >= 12 and min(gaps) >= 0.049, gaps


def test_interrupted_scrape_resumes_without_duplicates(coolinarika, tmp_path):
    raw = tmp_path / "raw"
    first = scrape("coolinarika", raw, base_url=coolinarika.base, max_recipes=1, **FAST)
    assert first.written == 1 and first.reached_max

    class Killed(Exception):
        pass

    def kill_after_first(event, url):
        if event == "written":
            raise Killed

    with pytest.raises(Killed):
        scrape("coolinarika", raw, base_url=coolinarika.base, on_progress=kill_after_first, **FAST)
    assert len(read_records(raw)) == 2
    # A writer killed mid-line leaves a torn last line; the next run repairs it.
    with open(raw / "recipes.jsonl", "a", encoding="utf-8") as f:
        f.write('{"name": "Torn", "image": "images/x')
    requests_before = len(coolinarika.requests)
    final = scrape("coolinarika", raw, base_url=coolinarika.base, **FAST)
    assert final.written == 1 and final.total_records == 3 and final.already_done >= 2
    lines = (raw / "recipes.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]  # every line is valid JSON
    urls = [row["url"] for row in rows]
    assert len(urls) == len(set(urls)) == 3
    fetched_again = [p for _, p, _ in coolinarika.requests[requests_before:]]
    for row in rows[:2]:
        assert row["url"].split("/", 3)[-1] not in {p.lstrip("/") for p in fetched_again}

    # A run with nothing left to do writes nothing and asks only for the robots.txt.
    again = scrape("coolinarika", raw, base_url=coolinarika.base, **FAST)
    assert again.written == 0 and len(read_records(raw)) == 3
    assert again.requests == 1 and again.cache_hits >= 3  # sitemaps came from the cache


def test_rerun_reparses_from_the_http_cache(coolinarika, tmp_path):
    raw = tmp_path / "raw"
    scrape("coolinarika", raw, base_url=coolinarika.base, **FAST)
    (raw / "recipes.jsonl").unlink()
    (raw / "skipped.jsonl").unlink()
    before = len(coolinarika.requests)
    summary = scrape("coolinarika", raw, base_url=coolinarika.base, **FAST)
    assert summary.written == 3
    refetched = [p for _, p, _ in coolinarika.requests[before:]]
    assert not any(p.startswith(("/recept/", "/sitemap")) for p in refetched), refetched
    # Sitemaps older than discovery_max_age are fetched again (to find new recipes); recipes not.
    before = len(coolinarika.requests)
    scrape("coolinarika", raw, base_url=coolinarika.base, discovery_max_age=0, **FAST)
    refetched = [p for _, p, _ in coolinarika.requests[before:]]
    assert "/sitemap_index.xml" in refetched and not any(p.startswith("/recept/") for p in refetched)


def test_url_file_and_off_site_redirect(recepti, tmp_path):
    recepti.faults["/kuvar/glavna-jela/120-seli-se"] = [
        {"status": 302, "headers": {"Location": "http://example.invalid/sarma"}}
    ]
    recepti.faults["/kuvar/glavna-jela/121-pada"] = [{"status": 500, "sticky": True}]
    recepti.faults["/kuvar/glavna-jela/122-sarma-stara"] = [
        {"status": 301, "headers": {"Location": "/kuvar/glavna-jela/101-sarma"}}]
    urls = tmp_path / "urls.txt"
    urls.write_text("# three recipes\n/kuvar/glavna-jela/101-sarma\n\n"
                    f"{recepti.base}/kuvar/glavna-jela/120-seli-se\n/kuvar/glavna-jela/101-sarma\n"
                    "/kuvar/glavna-jela/121-pada\n/kuvar/glavna-jela/122-sarma-stara\n")
    raw = tmp_path / "raw"
    summary = scrape("recepti", raw, base_url=recepti.base, urls_file=urls, **FAST)
    assert summary.written == 1 and summary.discovered == 4
    assert [r.name for r in read_records(raw)] == ["Sarma"]  # the redirect to it is no duplicate
    reasons = skipped_reasons(raw)
    assert "redirected off-site to http://example.invalid/sarma" in reasons[
        "kuvar/glavna-jela/120-seli-se"]
    assert reasons["kuvar/glavna-jela/121-pada"] == "HTTP 500 after 2 attempts"
    assert reasons["kuvar/glavna-jela/122-sarma-stara"].endswith("a recipe already recorded")
    # A re-run tries the server error again (retryable), but not the off-site redirect.
    before = len(recepti.requests)
    scrape("recepti", raw, base_url=recepti.base, urls_file=urls, **FAST)
    again = [p for _, p, _ in recepti.requests[before:]]
    assert again.count("/kuvar/glavna-jela/121-pada") == 2 and "/kuvar/glavna-jela/120-seli-se" not in again
    assert not any(p.startswith("/kuvar/glavna-jela/0") for p in recepti.paths())  # no discovery


def test_one_request_in_flight_per_site_across_threads(recepti):
    recepti.faults["/slow"] = [{"sleep": 0.05, "status": 200, "sticky": True}]
    with PoliteClient(delay=0.0, timeout=2, obey_robots=False) as client:
        threads = [threading.Thread(target=client.get, args=(f"{recepti.base}/slow",),
                                    kwargs={"use_cache": False}) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert recepti.paths().count("/slow") == 4 and recepti.max_in_flight == 1


def test_robots_txt_errors(tmp_path):
    with FixtureSite(tmp_path) as site:  # an empty site: robots.txt is a 404, so all is allowed
        with PoliteClient(delay=0, retries=0) as client:
            assert client.allowed(site.base + "/recept/x/")
    with FixtureSite(tmp_path) as site:  # robots.txt answers 503: nothing may be fetched
        site.faults["/robots.txt"] = [{"status": 503, "sticky": True}]
        with PoliteClient(delay=0, retries=0) as client:
            with pytest.raises(FetchError, match="robots.txt disallows"):
                client.get(site.base + "/recept/x/")
        assert site.paths() == ["/robots.txt"]


def test_retry_after_forms_and_limit(recepti):
    assert _retry_after("7") == 7.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert _retry_after("soon") is None
    recepti.faults["/busy"] = [{"status": 429, "headers": {"Retry-After": "3600"}}]
    with PoliteClient(delay=0, obey_robots=False, max_retry_after=60) as client:
        with pytest.raises(FetchError, match="Retry-After 3600 s") as info:
            client.get(recepti.base + "/busy")
    assert info.value.retryable


def test_oversized_responses_are_refused_without_reading_them_whole(recepti):
    big = b"x" * 2**20
    recepti.faults.update({
        "/declared": [{"status": 200, "body": big, "sticky": True}],
        "/undeclared": [{"status": 200, "body": big, "no_length": True, "sticky": True}],
        "/gzip-bomb": [{"status": 200, "body": gzip.compress(big), "headers": {"Content-Encoding": "gzip"},
                        "sticky": True}],
        "/small": [{"status": 200, "body": gzip.compress(b"fine"), "headers": {"Content-Encoding": "gzip"},
                    "sticky": True}],
    })
    with PoliteClient(delay=0, obey_robots=False, max_bytes=64 * 1024) as client:
        for path in ("/declared", "/undeclared", "/gzip-bomb"):
            with pytest.raises(FetchError, match="too large.*max_bytes") as info:
                client.get(recepti.base + path, use_cache=False)
            assert not info.value.retryable, path
        assert client.get(recepti.base + "/small", use_cache=False).content == b"fine"
    assert len(gzip.compress(big)) < 64 * 1024  # the bomb was small on the wire


def test_check_image_rejects_non_images_and_thumbnails():
    with pytest.raises(PhotoError, match="not an image"):
        check_image(b"<!DOCTYPE html><html>", 64)
    thumb = (FIXTURES / "recepti" / "slike" / "male" / "sarma.jpg").read_bytes()
    with pytest.raises(PhotoError, match="too small"):
        check_image(thumb, 64)
    full = (FIXTURES / "recepti" / "slike" / "velike" / "sarma.jpg").read_bytes()
    assert check_image(full, 64) == ("JPEG", 96, 80)
    with pytest.raises(PhotoError, match="not an image"):
        check_image(full[: len(full) // 2], 64)  # a truncated download


def test_page_text_follows_the_declared_charset():
    from dishgen.data.scrape.http import Page

    body = "Ćevapi u lepinji".encode("cp1250")
    assert Page("u", 200, body, "text/html; charset=windows-1250").text == "Ćevapi u lepinji"
    meta = b'<meta charset="windows-1250">' + body
    assert Page("u", 200, meta, "text/html").text.endswith("Ćevapi u lepinji")
    assert Page("u", 200, "Ćevapi".encode(), "text/html").text == "Ćevapi"


def test_a_mirror_whose_pages_name_the_real_site(tmp_path):
    # robots.txt, sitemaps and JSON-LD images all say https://www.coolinarika.com/...
    with FixtureSite(FIXTURES / "coolinarika", page_base="https://www.coolinarika.com") as mirror:
        summary = scrape("coolinarika", tmp_path / "raw", base_url=mirror.base, **FAST)
        assert summary.written == 3
        assert "/sitemaps/recepti-1.xml.gz" in mirror.paths()
        assert "/images/gibanica-full.webp" in mirror.paths()
    assert all(r.url.startswith(mirror.base) for r in read_records(tmp_path / "raw"))


def test_scrape_killed_with_sigkill_then_rerun(coolinarika, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    raw = tmp_path / "raw"
    args = ["data", "scrape", "coolinarika", "--out", str(raw), "--base-url", coolinarika.base,
            "--delay", "0.15", "--min-image-side", "64"]
    code = "import sys; from dishgen.cli import main; sys.argv[0] = 'dishgen'; main()"
    process = subprocess.Popen([sys.executable, "-c", code, *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = raw / "recipes.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (records.is_file() and records.read_bytes().count(b"\n")):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # no cleanup, no finally: blocks
    process.wait()
    written_before = records.read_bytes().count(b"\n")
    assert 1 <= written_before < 3

    summary = scrape("coolinarika", raw, base_url=coolinarika.base, **FAST)
    rows = [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len({row["url"] for row in rows}) == 3
    assert summary.written == 3 - written_before
