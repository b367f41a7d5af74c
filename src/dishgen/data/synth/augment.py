"""Augment: render caption variations of a dataset's photos through a generator.

``augment_dataset`` writes, for each photo of the chosen splits, ``variations`` new captions of
the same dish (see :mod:`dishgen.data.synth.variations`) and renders each one
``images_per_caption`` times through the common generation interface. Work happens in
``OUT.partial/``: each rendered batch is written (images, then rows) as soon as it is done, so an
interrupted run resumes without redoing or duplicating images, and the finished dataset is
renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dishgen import __version__
from dishgen.data.dataset import DatasetRow, load_split
from dishgen.data.split import dish_key
from dishgen.data.synth.common import SynthError, _place
from dishgen.data.synth.variations import VariationInput, get_variator
from dishgen.families.registry import FAMILIES
from dishgen.fileio import (
    LOCK_FILE,
    append_jsonl,
    atomic_save_image,
    atomic_write_json,
    publish_directory,
    read_jsonl,
    repair_jsonl,
)
from dishgen.generation_io import slugify

log = logging.getLogger(__name__)

DEFAULT_POSITIVE_SUFFIX = "professional food photography, natural light, sharp focus, appetizing"
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, low quality, cartoon, illustration, drawing, painting, text, watermark, logo, "
    "deformed, oversaturated, people, hands"
)
# Kept for callers of earlier releases (("diffusion", "lora")); the code asks the registry's capabilities.
DIFFUSION_FAMILIES = tuple(sorted(family.name for family in FAMILIES.values() if family.steps))


@dataclass
class AugmentOptions:
    """Settings of one augmentation (saved in ``dataset.json``).

    ``positive_suffix`` and ``negative_prompt`` apply only to families whose registry entry says
    they take them (the diffusion models): a GAN or VAE was trained on plain captions, so it gets
    the variation as it is.
    """

    variations: int = 3
    captioner: str = "template"
    captioner_options: dict = field(default_factory=dict)
    model: str = "default"
    lora: list[str] = field(default_factory=list)
    images_per_caption: int = 1
    seed: int = 0
    splits: list[str] = field(default_factory=lambda: ["train"])
    device: str | None = None
    dtype: str | None = None
    positive_suffix: str = DEFAULT_POSITIVE_SUFFIX
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    knobs: dict = field(default_factory=dict)  # other generation knobs: num_inference_steps...
    batch_size: int = 8  # captions per generate() call
    size: int | None = None  # side of the saved images; default: that of each source image
    limit: int | None = None  # first N source images of each split (for a quick trial)
    overwrite: bool = False

    def validate(self) -> None:
        for name in ("variations", "images_per_caption", "batch_size"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise SynthError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if self.size is not None and self.size < 8:
            raise SynthError(f"--size must be at least 8 pixels, got {self.size}")
        if self.limit is not None and self.limit < 1:
            raise SynthError(f"--limit must be at least 1, got {self.limit}")
        if not self.splits:
            raise SynthError("give at least one --split to augment")

    def fingerprint(self) -> dict:
        """What an interrupted run must share with its resumption."""
        ignored = ("overwrite", "device", "dtype", "batch_size")
        keep = {k: v for k, v in asdict(self).items() if k not in ignored}
        keep["captioner_options"] = {k: v for k, v in self.captioner_options.items()
                                     if k in ("base_url", "model", "temperature")}
        return json.loads(json.dumps(keep))


def augment_dataset(dataset: str | Path, out: str | Path, options: AugmentOptions | None = None,
                    *, generator=None) -> dict:
    """Write caption variations of a dataset's photos and render each through a generator.

    Args:
        dataset: a dataset folder (``train/``, ``test/`` with ``metadata.jsonl``).
        out: the synthetic dataset to create; its splits mirror the augmented source splits.
        options: see :class:`AugmentOptions`.
        generator: an already loaded :class:`dishgen.generation.Generator` (default: load
            ``options.model`` with ``options.lora``).

    Returns:
        The ``dataset.json`` summary.

    Raises:
        SynthError: a bad setting, an existing output, or an interrupted run with other settings.
        ModelReferenceError, DiffusionError: the generator cannot be loaded (before any work).
        LLMError: the LLM server is unreachable or refuses the key (before any work).
    """
    options = options or AugmentOptions()
    options.validate()
    source, out = Path(dataset), Path(out)
    if "test" in options.splits:
        log.warning("augmenting the test split: never train on these images (`data mix` keeps "
                    "them out of train and validation)")
    rows = {split: load_split(source, split)[: options.limit] for split in options.splits}
    work = out.with_name(out.name + ".partial")
    if options.overwrite:
        shutil.rmtree(work, ignore_errors=True)
    elif out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise SynthError(f"{str(out)!r} already exists; pass --overwrite to redo it, "
                         "or choose another --out")
    fingerprint = {"source": str(source.resolve()), **options.fingerprint()}
    _check_resumable(work, fingerprint)

    # Everything that can fail for a setting fails here, before any LLM call or rendering.
    variator = get_variator(options.captioner, seed=options.seed, **options.captioner_options)
    generator, knobs, settings = _prepare_generator(generator, options)
    atomic_write_json(work / "_options.json", fingerprint)
    started = time.time()

    sources = [(split, row, _row_key(split, row)) for split, split_rows in rows.items()
               for row in split_rows]
    texts, failures = _write_variations(variator, sources, options.variations, work)
    prompts = [Prompt(split, row, key, k, text) for split, row, key in sources
               for k, text in enumerate(texts.get(key, []))]
    done = _render(generator, prompts, knobs, settings, options, work,
                   provenance={"captioner": variator.description, "source_dataset": str(source)})

    # Assemble the final dataset in the work folder, then rename it into place.
    final = work / "_final"
    shutil.rmtree(final, ignore_errors=True)
    counts = {}
    per = options.images_per_caption
    for split in options.splits:
        names = [_image_name(p, j) for p in prompts if p.split == split for j in range(per)]
        split_rows = [done[name] for name in names if name in done]
        (final / split).mkdir(parents=True)
        for r in split_rows:
            _place(work / "images" / split / r["file_name"], final / split / r["file_name"])
        append_jsonl(final / split / "metadata.jsonl", split_rows)
        counts[split] = {"source_images": len(rows[split]), "images": len(split_rows),
                         "dishes": len({dish_key(r["dish"]) for r in split_rows if r["dish"]})}
    if not any(c["images"] for c in counts.values()):
        first = failures[0]["error"] if failures else "no variations"
        raise SynthError(f"no synthetic image was made ({len(failures)} sources failed: "
                         f"{first}); see {work}")
    summary = {
        "dishgen_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kind": "synthetic",
        "source": {"path": str(source), "splits": options.splits},
        "options": {k: v for k, v in asdict(options).items()
                    if k not in ("captioner_options", "overwrite")},
        "captioner": {"name": options.captioner, "description": variator.description,
                      **{k: v for k, v in options.captioner_options.items()
                         if "key" not in k.lower()}},
        "generator": settings,
        "counts": {**counts, "images": sum(c["images"] for c in counts.values()),
                   "captions": len(prompts), "failed_sources": len(failures)},
        "failures": failures,
        "seconds": round(time.time() - started, 2),
    }
    atomic_write_json(final / "dataset.json", summary)
    publish_directory(final, out, work)
    return summary


@dataclass
class Prompt:
    """One caption variation to render: where it comes from, its index and its text."""

    split: str
    row: DatasetRow
    key: str  # names the source row
    variation: int
    text: str


def _prepare_generator(generator, options: AugmentOptions) -> tuple[Any, dict, dict]:
    """Load the generator (unless given) and check the knobs it will get, before any work."""
    from dishgen.families.registry import find_family
    from dishgen.generation import check_knobs, load_generator

    given = generator is not None
    if generator is None:
        extra = {"lora": list(options.lora)} if options.lora else {}
        generator = load_generator(options.model, device=options.device, dtype=options.dtype,
                                   **extra)
    family = find_family(generator.family)
    knobs = {**options.knobs, "batch_size": options.batch_size * options.images_per_caption}
    if family and family.negative_prompt and options.negative_prompt:
        knobs["negative_prompt"] = options.negative_prompt
    knobs = check_knobs(generator.family, tuple(generator.knobs), knobs)
    model = getattr(generator, "location", "") or (
        type(generator).__name__ if given else options.model)
    settings = {
        "family": generator.family, "model": str(model), "lora": [str(p) for p in options.lora],
        "knobs": {k: v for k, v in knobs.items() if k != "batch_size"},
        "positive_suffix": options.positive_suffix if family and family.prompt_suffix else "",
    }
    return generator, knobs, settings


def _write_variations(variator, sources: list[tuple], n: int, work: Path
                      ) -> tuple[dict[str, list[str]], list[dict]]:
    """Variations per source key; complete ones are cached in the work folder, so a resumed
    run asks no LLM twice, and incomplete ones are asked again."""
    cache_file = work / "_variations.jsonl"
    repair_jsonl(cache_file)
    texts = {row["key"]: row["texts"] for row in read_jsonl(cache_file)}
    need = [(key, VariationInput(row.text, row.dish, key)) for _, row, key in sources
            if key not in texts]
    failures = []
    for start in range(0, len(need), 64):
        chunk = need[start : start + 64]
        results = variator.vary_many([item for _, item in chunk], n)
        complete = []
        for (key, item), result in zip(chunk, results, strict=True):
            texts[key] = result.texts
            if result.error is None:
                complete.append({"key": key, "texts": result.texts})
            else:
                failures.append({"source_key": key, "caption": item.caption, "dish": item.dish,
                                 "variations": len(result.texts), "error": result.error})
        append_jsonl(cache_file, complete)
    return texts, failures


def _render(generator, prompts: list[Prompt], knobs: dict, settings: dict, options: AugmentOptions,
            work: Path, provenance: dict) -> dict[str, dict]:
    """Render every prompt; each batch's images, then its rows, are written as soon as it is done.

    Batches are fixed slices of the full prompt list, seeded by their position, so a batch
    interrupted half-way is rendered again identically and only its missing images are kept.

    Returns:
        The rows by file name (this run's and an interrupted run's).
    """
    from PIL import Image
    from tqdm.auto import tqdm

    rows_file = work / "_rows.jsonl"
    repair_jsonl(rows_file)
    done = {r["file_name"]: r for r in read_jsonl(rows_file)
            if (work / "images" / r["source_split"] / r["file_name"]).is_file()}
    per, size = options.images_per_caption, options.size
    suffix = settings["positive_suffix"]
    name = f"{settings['family']}:{settings['model']}"
    with tqdm(total=len(prompts) * per, initial=len(done), unit="img",
              desc=f"render ({generator.family})") as bar:
        for start in range(0, len(prompts), options.batch_size):
            batch = prompts[start : start + options.batch_size]
            names = [_image_name(p, j) for p in batch for j in range(per)]
            if all(n in done for n in names):
                continue
            seed = options.seed * 1_000_003 + start * per
            texts = [_prompt(p.text, suffix) for p in batch]
            images = generator.generate(texts, num_images=per, seed=seed, **knobs)
            if len(images) != len(names):
                raise SynthError(f"the {generator.family} generator returned {len(images)} images "
                                 f"for {len(texts)} captions x {per}; expected {len(names)}")
            new_rows = []
            for index, (image, file_name) in enumerate(zip(images, names, strict=True)):
                if file_name in done:
                    continue
                p = batch[index // per]
                image = image.convert("RGB")
                generated_size = list(image.size)
                side = size or _image_size(p.row.path)
                if image.size != (side, side):
                    image = image.resize((side, side), Image.Resampling.LANCZOS)
                atomic_save_image(image, work / "images" / p.split / file_name)
                new_rows.append({
                    "file_name": file_name, "text": p.text, "captions": [p.text],
                    "dish": p.row.dish,
                    "source": "synthetic", "url": None, "license": None, "raw_id": None,
                    "original_size": generated_size, "fixes": "", "synthetic": True,
                    "source_caption": p.row.text, "source_image": f"{p.split}/{p.row.path.name}",
                    "source_split": p.split, "prompt": texts[index // per],
                    "captioner": provenance["captioner"], "generator": name,
                    # One JSON string, so that every row has the same flat columns and
                    # `datasets.load_dataset("imagefolder")` reads real and synthetic rows alike.
                    "generator_settings": json.dumps({
                        **settings, "seed": seed, "position": index, "variation": p.variation,
                        "image_index": index % per, "source_dataset": provenance["source_dataset"],
                    }, ensure_ascii=False),
                })
            append_jsonl(rows_file, new_rows)
            done.update({r["file_name"]: r for r in new_rows})
            bar.update(len(new_rows))
    return done


def _check_resumable(work: Path, fingerprint: dict) -> None:
    saved_file = work / "_options.json"
    if not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if changed:
        raise SynthError(
            f"{str(work)!r} holds an interrupted augmentation with other settings "
            f"({', '.join(changed)} differ); run again with the same settings to resume it, "
            "or pass --overwrite to start over"
        )


def _row_key(split: str, row: DatasetRow) -> str:
    payload = f"{split}\0{row.path.name}\0{row.text}\0{row.dish}"
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def _image_name(prompt: Prompt, j: int) -> str:
    slug = slugify(prompt.row.dish or prompt.row.text, 32)
    return f"{slug}-{prompt.key}-v{prompt.variation}-{j}.png"


def _prompt(text: str, suffix: str) -> str:
    return f"{text.rstrip(' .')}, {suffix}" if suffix else text


def _image_size(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return max(im.size)


def augment_summary_text(summary: dict) -> str:
    """A short human-readable report of an augmentation."""
    c = summary["counts"]
    per_split = ", ".join(f"{s}: {c[s]['images']} images from {c[s]['source_images']} photos"
                          for s in summary["source"]["splits"])
    lines = [f"{c['images']} synthetic images ({c['captions']} captions; {per_split}) "
             f"by {summary['generator']['family']} in {summary['seconds']:.1f} s"]
    if summary["failures"]:
        lines.append(f"{len(summary['failures'])} source captions got fewer variations than asked; "
                     f"first: {summary['failures'][0]['error']} (all in dataset.json)")
    return "\n".join(lines)
