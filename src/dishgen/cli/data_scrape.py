"""``dishgen data scrape`` and ``dishgen data caption``: thin click shells over the library.

Registered in the ``dishgen data`` group as lazy commands ``dishgen.cli.data_scrape:scrape`` and
``dishgen.cli.data_scrape:caption``.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("scrape")
@click.argument("site", type=click.Choice(["recepti", "coolinarika"]))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Raw folder to write (recipes.jsonl, skipped.jsonl, images/).")
@click.option("--base-url", default=None,
              help="A mirror or test server with the site's paths, e.g. http://127.0.0.1:8000.")
@click.option("--max-recipes", type=click.IntRange(min=1), default=None,
              help="Stop once OUT holds this many recipes of SITE (a re-run continues).")
@click.option("--delay", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between two requests to the site (robots.txt Crawl-delay wins if larger).")
@click.option("--urls", "urls_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Scrape the URLs in this file (one per line) instead of discovering them.")
@click.option("--discover", type=click.Choice(["auto", "sitemap", "listing"]), default="auto",
              show_default=True,
              help="Where to find recipe URLs: sitemaps, listing pages, or sitemaps then listings.")
@click.option("--max-pages", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Most listing pages to walk.")
@click.option("--timeout", type=click.FloatRange(min=0.01), default=20.0, show_default=True,
              help="Seconds to connect and for each read.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Extra attempts after a timeout, 429 or 5xx.")
@click.option("--backoff", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Base seconds of the exponential backoff when the server sends no Retry-After.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="On-disk HTTP cache of pages [default: OUT/.http-cache].")
@click.option("--refresh", is_flag=True, help="Fetch pages again even when they are cached.")
@click.option("--user-agent", default=None,
              help="User-Agent header (add a contact address for a large crawl).")
@click.option("--min-image-side", type=click.IntRange(min=1), default=256, show_default=True,
              help="Smallest accepted shorter side of a photo, in pixels (smaller: a thumbnail).")
def scrape(site, out, base_url, max_recipes, delay, urls_file, discover, max_pages, timeout,
           retries, backoff, cache_dir, refresh, user_agent, min_image_side):
    """Scrape SITE (recepti or coolinarika) into a raw folder, politely and resumably.

    \b
    Obeys robots.txt, sends one request at a time with --delay between them, retries 429/5xx
    (honouring Retry-After), caches pages on disk, and continues where an interrupted run
    stopped. Records go to OUT/recipes.jsonl, photos to OUT/images/, and every URL that gave
    no record to OUT/skipped.jsonl with the reason.

    \b
    Examples:
      dishgen data scrape coolinarika --out raw/ --max-recipes 200 --delay 2
      dishgen data scrape recepti --out raw/ --base-url http://127.0.0.1:8000
    """
    from tqdm import tqdm

    from dishgen.data.scrape import DEFAULT_USER_AGENT
    from dishgen.data.scrape import scrape as run_scrape

    bar = tqdm(total=max_recipes, unit="recipe", desc=f"scrape {site}", dynamic_ncols=True)
    counts = {"written": 0, "skipped": 0, "done": 0}

    def on_progress(event: str, url: str) -> None:
        counts[event] += 1
        if event == "written":
            bar.update(1)
        bar.set_postfix(skipped=counts["skipped"], done_before=counts["done"], refresh=False)

    try:
        summary = run_scrape(
            site, out, base_url=base_url, urls_file=urls_file, discover=discover,
            max_recipes=max_recipes, max_pages=max_pages, delay=delay, timeout=timeout,
            retries=retries, backoff=backoff, cache_dir=cache_dir, refresh=refresh,
            user_agent=user_agent or DEFAULT_USER_AGENT, min_image_side=min_image_side,
            on_progress=on_progress,
        )
    finally:
        bar.close()
    for line in summary.lines():
        click.echo(line)
    if summary.discovered == 0:
        click.echo(
            f"warning: no recipe URLs found for {site}; check --base-url, the site's robots.txt "
            "and sitemaps, or pass --urls FILE", err=True,
        )
