"""``dishgen data scrape`` and ``dishgen data caption``: thin click shells over the library.

Registered in the ``dishgen data`` group as lazy commands ``dishgen.cli.data_scrape:scrape`` and
``dishgen.cli.data_scrape:caption``.
"""

from __future__ import annotations

from pathlib import Path

import click

from dishgen.cli import FiniteFloatRange


@click.command("scrape")
@click.argument("site", required=False, type=click.Choice(["recepti", "coolinarika", "generic"]))
@click.option("--site", "site_url", default=None, metavar="URL",
              help="Scrape any site with schema.org recipes, e.g. https://www.kuhinjica.rs "
                   "(instead of SITE; the same as `generic --base-url URL`).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Raw folder to write (recipes.jsonl, skipped.jsonl, images/).")
@click.option("--base-url", default=None,
              help="A mirror or test server with the site's paths, e.g. http://127.0.0.1:8000; "
                   "for `generic`, the site to scrape.")
@click.option("--recipe-path", default=None, metavar="REGEX",
              help="Regex a recipe page's path must match [default: the site's; for a generic "
                   "site any page except archives, feeds and files].")
@click.option("--max-recipes", type=click.IntRange(1, 10_000_000), default=None,
              help="Stop once OUT holds this many recipes of SITE (a re-run continues).")
@click.option("--delay", type=FiniteFloatRange(0, 3600), default=1.0, show_default=True,
              help="Seconds between two requests to the site (robots.txt Crawl-delay wins if larger).")
@click.option("--urls", "urls_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Scrape the URLs in this file (one per line) instead of discovering them.")
@click.option("--discover", type=click.Choice(["auto", "sitemap", "listing"]), default="auto",
              show_default=True,
              help="Where to find recipe URLs: sitemaps, listing pages, or sitemaps then listings.")
@click.option("--max-pages", type=click.IntRange(1, 10_000_000), default=10_000, show_default=True,
              help="Most listing pages to walk.")
@click.option("--discovery-max-age", type=FiniteFloatRange(min=0), default=24.0, show_default=True,
              help="Hours a cached sitemap or listing page is reused before it is fetched again.")
@click.option("--timeout", type=FiniteFloatRange(0.01, 3600), default=20.0, show_default=True,
              help="Seconds to connect and for each read.")
@click.option("--retries", type=click.IntRange(0, 100), default=3, show_default=True,
              help="Extra attempts after a timeout, 429 or 5xx.")
@click.option("--backoff", type=FiniteFloatRange(0, 600), default=2.0, show_default=True,
              help="Base seconds of the exponential backoff when the server sends no Retry-After.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="On-disk HTTP cache of pages [default: OUT/.http-cache].")
@click.option("--refresh", is_flag=True, help="Fetch pages again even when they are cached.")
@click.option("--user-agent", default=None,
              help="User-Agent header (add a contact address for a large crawl).")
@click.option("--min-image-side", type=click.IntRange(1, 16384), default=256, show_default=True,
              help="Smallest accepted shorter side of a photo, in pixels (smaller: a thumbnail).")
@click.option("--max-download-mb", type=FiniteFloatRange(0.01, 10_240), default=40.0, show_default=True,
              help="Largest page or photo read (a gzip sitemap: unpacked), in MiB; bigger ones "
                   "are skipped unread.")
@click.option("--parse-budget", type=FiniteFloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Most seconds spent parsing one page; a slower one (a 20 MB page) is skipped "
                   "with its reason.")
@click.option("--request-deadline", type=FiniteFloatRange(0.1, 3600), default=120.0, show_default=True,
              help="Most seconds one request may take in all (--timeout is per read); a slower "
                   "response is skipped.")
def scrape(site, site_url, out, base_url, recipe_path, max_recipes, delay, urls_file, discover,
           max_pages, discovery_max_age, timeout, retries, backoff, cache_dir, refresh, user_agent,
           min_image_side, max_download_mb, parse_budget, request_deadline):
    """Scrape SITE (recepti, coolinarika) or any site (--site URL) into a raw folder, politely
    and resumably.

    \b
    Obeys robots.txt, sends one request at a time with --delay between them, retries 429/5xx
    (honouring Retry-After), caches pages on disk, and continues where an interrupted run
    stopped. Records go to OUT/recipes.jsonl, photos to OUT/images/, and every URL that gave
    no record to OUT/skipped.jsonl with the reason. OUT is locked while the scrape runs (a
    second scrape into it stops with an error naming the first one's pid).

    \b
    Examples:
      dishgen data scrape coolinarika --out raw/ --max-recipes 200 --delay 2
      dishgen data scrape recepti --out raw/ --base-url http://127.0.0.1:8000
      dishgen data scrape --site https://www.kuhinjica.rs --out raw/ --max-recipes 100
    """
    if site_url and (site not in (None, "generic") or base_url):
        raise click.UsageError("give either SITE (with --base-url) or --site URL, not both")
    if site_url is None and site is None:
        raise click.UsageError("name a SITE (recepti, coolinarika) or give --site URL")
    if site == "generic" and not base_url:
        raise click.UsageError("generic needs --base-url URL (or use --site URL)")
    from tqdm import tqdm

    from dishgen.data.scrape.sites import resolve_site
    from dishgen.errors import DishgenError

    target = site_url or site
    try:
        resolve_site(target, base_url, recipe_path)  # a bad URL or regex stops before any request
    except DishgenError as err:
        raise click.UsageError(str(err)) from None

    from dishgen.data.scrape import DEFAULT_USER_AGENT
    from dishgen.data.scrape import scrape as run_scrape

    label = base_url if site == "generic" else target
    bar = tqdm(total=max_recipes, unit="recipe", desc=f"scrape {label}", dynamic_ncols=True)
    counts = {"written": 0, "skipped": 0, "done": 0}

    def on_progress(event: str, url: str) -> None:
        counts[event] += 1
        if event == "written":
            bar.update(1)
        bar.set_postfix(skipped=counts["skipped"], done_before=counts["done"], refresh=False)

    try:
        summary = run_scrape(
            target, out, base_url=base_url, recipe_path=recipe_path, urls_file=urls_file, discover=discover,
            max_recipes=max_recipes, max_pages=max_pages,
            discovery_max_age=discovery_max_age * 3600, delay=delay, timeout=timeout,
            retries=retries, backoff=backoff, cache_dir=cache_dir, refresh=refresh,
            user_agent=user_agent or DEFAULT_USER_AGENT, min_image_side=min_image_side,
            max_download_mb=max_download_mb, request_deadline=request_deadline,
            parse_budget=parse_budget, on_progress=on_progress,
        )
    finally:
        bar.close()
    for line in summary.lines():
        click.echo(line)
    if summary.discovered == 0:
        click.echo(
            f"warning: no recipe URLs found for {target}; check --base-url, the site's robots.txt "
            "and sitemaps, or pass --urls FILE", err=True,
        )


@click.command("caption")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--captioner", "captioner_name", type=click.Choice(["llm", "llm-vision", "template"]),
              default="llm", show_default=True,
              help="llm: from the recipe text; llm-vision: from the photo; template: offline.")
@click.option("--llm-base-url", default=None,
              help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1 [default: "
                   "OPENAI_BASE_URL, else OpenAI].")
@click.option("--llm-model", default=None, help="Model name on that server [default: gpt-4o-mini].")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Caption cache [default: ~/.cache/dishgen/captions].")
@click.option("--llm-concurrency", type=click.IntRange(1, 256), default=None,
              help="LLM requests in flight at once.  [default: 4]")
@click.option("--base-url", "old_base_url", default=None, hidden=True, help="Old spelling of --llm-base-url.")
@click.option("--model", "old_model", default=None, hidden=True, help="Old spelling of --llm-model.")
@click.option("--concurrency", "old_concurrency", type=click.IntRange(1, 256), default=None, hidden=True,
              help="Old spelling of --llm-concurrency.")
@click.option("--max-retries", type=click.IntRange(0, 100), default=3, show_default=True,
              help="Retries of a failed request and of a malformed answer.")
@click.option("--timeout", type=FiniteFloatRange(0.1, 3600), default=60.0, show_default=True,
              help="Seconds per LLM request.")
@click.option("--clip-tokenizer", default=None,
              help="CLIP tokenizer folder or bpe_simple_vocab_16e6.txt.gz, to count caption "
                   "tokens exactly [default: DISHGEN_CLIP_TOKENIZER or a cached one, else an "
                   "estimate].")
@click.option("--split", "splits", multiple=True,
              help="Split(s) to re-caption (repeatable) [default: all].")
@click.option("--raw", "raw_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="Raw folder the dataset was built from: its ingredients and preparation are "
                   "given to the LLM (rows are matched by url, then id).")
@click.option("--force", is_flag=True,
              help="Re-caption rows already captioned by this captioner and model.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Rows captioned between two (atomic) saves of metadata.jsonl.")
def caption(dataset, captioner_name, llm_base_url, llm_model, cache_dir, llm_concurrency, old_base_url, old_model,
            old_concurrency, max_retries, timeout, clip_tokenizer, splits, raw_dir, force, batch_size):
    """Re-caption an existing DATASET's metadata.jsonl rows, atomically and resumably.

    \b
    Each split's metadata.jsonl is rewritten atomically after every batch; rows already
    captioned by the same captioner and model are skipped on a re-run, and LLM captions are
    cached on disk, so an interrupted run continues where it stopped. A row that cannot be
    captioned keeps its previous caption and gets a `caption_error` column.

    \b
    The API key is read from $OPENAI_API_KEY only (never from the command line, where it would
    show in the shell history and the process list); a local server needs none.

    \b
    Examples:
      dishgen data caption dataset/ --llm-base-url http://127.0.0.1:11434/v1 --llm-model qwen2.5:7b
      OPENAI_API_KEY=... dishgen data caption dataset/ --raw raw/
      dishgen data caption photos-dataset/ --captioner llm-vision --llm-model gpt-4o-mini
    """
    from dishgen.cli import renamed_flag
    from dishgen.data.caption import get_captioner
    from dishgen.data.dataset import DatasetError, list_splits
    from dishgen.data.recaption import recaption

    base_url = renamed_flag(llm_base_url, old_base_url, "--base-url", "--llm-base-url")
    model = renamed_flag(llm_model, old_model, "--model", "--llm-model")
    concurrency = renamed_flag(llm_concurrency, old_concurrency, "--concurrency", "--llm-concurrency") or 4

    if not list_splits(dataset):  # checked before the captioner contacts any server
        raise DatasetError(f"{str(dataset)!r} has no <split>/metadata.jsonl; is it a dishgen "
                           "dataset? Build one with `dishgen data build`")
    options = {}
    if captioner_name != "template":
        options = dict(base_url=base_url, model=model, cache_dir=cache_dir,
                       concurrency=concurrency, max_retries=max_retries, timeout=timeout,
                       clip_tokenizer=clip_tokenizer)
    captioner = get_captioner(captioner_name, **options)  # checks the server before any work
    report = recaption(dataset, captioner, splits=list(splits) or None, raw_dir=raw_dir,
                       force=force, batch_size=batch_size)
    for line in report.lines():
        click.echo(line)
    if report.failed:
        raise click.ClickException(
            f"{report.failed} row(s) could not be captioned and kept their previous caption "
            "(see caption_error in metadata.jsonl); run the command again to retry them"
        )
