"""``dishgen data``: import, scrape, build, caption and inspect datasets."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from dishgen.cli import SEED, FiniteFloatRange, LazyGroup


@click.group(
    cls=LazyGroup,
    lazy_commands={
        "scrape": ("dishgen.cli.data_scrape:scrape", "Scrape recipes and photos from recepti.com or coolinarika.com."),
        "caption": ("dishgen.cli.data_scrape:caption", "Re-caption a dataset (LLM, vision LLM or template)."),
        "augment": ("dishgen.cli.data_synth:augment", "Synthetic data: caption variations rendered by a model."),
        "mix": ("dishgen.cli.data_synth:mix", "Mix real and synthetic datasets in set proportions."),
    },
)
def data() -> None:
    """Build the captioned image dataset every family trains on.

    \b
    Typical road:
      dishgen data import ../shared/data/ffml/images --out raw/ffml
      dishgen data scrape recepti --out raw/recepti --max-recipes 200
      dishgen data build raw/ffml raw/recepti --out datasets/dishes --size 512
      dishgen data stats datasets/dishes
    """


@contextlib.contextmanager
def locked_output(out: Path):
    """Hold ``out``'s output lock while a command writes it (a second writer gets one clear line);
    a folder the lock created that is still empty when the command fails is removed again."""
    from dishgen.fileio import output_lock

    created = not out.exists()
    try:
        with output_lock(out):
            yield
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


@data.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Raw folder to create or extend.")
@click.option("--images-dir", type=click.Path(file_okay=False, path_type=Path),
              help="For caption tables: the folder image paths are relative to (default: found next to the table).")
@click.option("--source-name", "source_name", default=None, help="Value of the 'source' field (default: from the folder name).")
@click.option("--license", "license_", default=None, help="Licence of the photos (default: detected from a LICENSE file).")
def import_(source: Path, out: Path, images_dir, source_name, license_):
    """Import SOURCE: a folder of <dish name>/<images>, or a caption table (.csv/.tsv/.txt/.jsonl).

    \b
    Examples:
      dishgen data import ../shared/data/ffml/images --out raw/ffml
      dishgen data import flickr30k/results.csv --out raw/flickr --images-dir flickr30k/flickr30k_images
    """
    from dishgen.data.importer import import_caption_table, import_photo_folder

    with locked_output(out):
        if source.is_file():
            result = import_caption_table(source, out, images_dir=images_dir, source=source_name, license=license_)
        else:
            result = import_photo_folder(source, out, source=source_name, license=license_)
    click.echo(f"imported {result['added']} images into {out} ({result['already_present']} already present, "
               f"{len(result['skipped'])} skipped)")
    for path, reason in result["skipped"][:20]:
        click.echo(f"  skipped {path}: {reason}", err=True)
    if len(result["skipped"]) > 20:
        click.echo(f"  ... and {len(result['skipped']) - 20} more skipped", err=True)


@data.command("build")
@click.argument("raw", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Dataset folder to create.")
@click.option("--size", default=512, show_default=True, type=click.IntRange(8, 8192),
              help="Side of the square output images, in pixels (the shorter side with --crop keep).")
@click.option("--min-size", type=click.IntRange(1, 8192), default=None,
              help="Drop images whose shorter side is smaller [default: size/2].")
@click.option("--crop", type=click.Choice(["center", "pad", "keep"]), default="center", show_default=True,
              help="Centre-crop to a square, pad on white to keep the whole dish, or keep the aspect ratio "
                   "(shorter side = --size; for LoRA aspect_buckets=true, not for cGAN/cVAE).")
@click.option("--format", "output_format", type=click.Choice(["png", "jpg"]), default="png", show_default=True)
@click.option("--test-fraction", default=0.1, show_default=True, type=FiniteFloatRange(0, 1, max_open=True),
              help="Share of images in the test split.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the split.")
@click.option("--split-by", type=click.Choice(["dish", "image"]), default="dish", show_default=True,
              help="Keep each dish on one side (no leakage), or split images independently.")
@click.option("--dedupe-threshold", default=4, show_default=True, type=click.IntRange(-1, 64),
              help="Max pHash Hamming distance of near duplicates (-1: exact duplicates only).")
@click.option("--captioner", type=click.Choice(["template", "llm", "llm-vision"]), default="template", show_default=True,
              help="template: offline; llm: any OpenAI-compatible server from name+recipe; llm-vision: from the photo.")
@click.option("--llm-base-url", default=None, help="OpenAI-compatible server URL [default: $OPENAI_BASE_URL or OpenAI].")
@click.option("--llm-model", default=None, help="Model name on that server [default: gpt-4o-mini].")
@click.option("--llm-concurrency", type=click.IntRange(1, 64), default=None, help="Requests in flight at once.")
@click.option("--exclude", multiple=True, metavar="REGEX",
              help="Leave out dishes whose name matches (case-insensitive; repeatable), e.g. 'KFC|OREO'.")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Image worker processes [default: all cores].")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
def build(raw, out, size, min_size, crop, output_format, test_fraction, seed, split_by, dedupe_threshold, captioner,
          llm_base_url, llm_model, llm_concurrency, exclude, workers, overwrite):
    """Validate, de-duplicate, crop, caption and split RAW folders into a dataset.

    The API key for --captioner llm is read from $OPENAI_API_KEY only (never from the command
    line, where it would show in the shell history and process list).

    An interrupted build resumes when run again with the same --out (work is kept in
    OUT.partial/); an existing, finished dataset is never overwritten without --overwrite.

    \b
    Examples:
      dishgen data build raw/ffml --out datasets/dishes --size 64
      dishgen data build raw/ffml raw/recepti --out datasets/dishes --size 512 --test-fraction 0.15
      dishgen data build raw/recepti --out datasets/dishes --captioner llm \\
          --llm-base-url http://127.0.0.1:8000/v1 --llm-model qwen2.5-7b-instruct
    """
    from dishgen.data.build import BuildOptions, build_dataset, print_dropped, summary_text

    captioner_options = {k: v for k, v in {
        "base_url": llm_base_url, "model": llm_model, "concurrency": llm_concurrency}.items() if v is not None}
    if captioner == "template" and captioner_options:
        raise click.UsageError("--llm-* options only apply with --captioner llm or llm-vision")
    options = BuildOptions(size=size, min_size=min_size, crop=crop, output_format=output_format,
                           test_fraction=test_fraction, seed=seed, split_by=split_by,
                           dedupe_threshold=dedupe_threshold, captioner=captioner,
                           captioner_options=captioner_options, workers=workers, overwrite=overwrite,
                           exclude=list(exclude))
    with locked_output(out):
        summary = build_dataset(list(raw), out, options)
    click.echo(summary_text(summary))
    if summary["dropped"]:
        click.echo(print_dropped(summary, limit=20), err=True)
    click.echo(f"dataset written to {out}")


@data.command("stats")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats(dataset: Path, as_json: bool):
    """Show counts per split, dishes, caption lengths and image sizes of DATASET.

    \b
    Examples:
      dishgen data stats datasets/dishes
      dishgen data stats datasets/dishes --json
    """
    from dishgen.data.stats import dataset_stats, format_stats

    result = dataset_stats(dataset)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else format_stats(result))
