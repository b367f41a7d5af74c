"""Synthetic data: caption variations rendered by a generator, and real + synthetic mixes.

Two steps, each a command of ``dishgen data``::

    augment_dataset("datasets/dishes", "datasets/synth", AugmentOptions(variations=3))
    mix_datasets("datasets/dishes", "datasets/synth", "datasets/mixed",
                 MixOptions(synthetic_fraction=0.5))

``augment`` writes, for each training photo, ``variations`` new captions of the same dish
(plating, angle, setting and the ingredients shown vary) and renders each one
``images_per_caption`` times through the common generation interface. The result is a dataset in
the standard format whose rows carry ``synthetic: true``, the source caption and image, and the
generator with its settings. Work happens in ``OUT.partial/``: each rendered batch is written
(images, then rows) as soon as it is done, so an interrupted run resumes without redoing or
duplicating images, and the finished dataset is renamed into place.

``mix`` combines a real dataset with a synthetic one into ``train/``, ``validation/`` and
``test/`` with set shares of synthetic rows (see :class:`MixOptions`); a dish never straddles two
splits, and synthetic images identical to a real one (or to each other) are removed first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dishgen import __version__
from dishgen.data.caption import describe_dish
from dishgen.data.dataset import DatasetRow, list_splits, load_split
from dishgen.data.split import dish_key, split_indices
from dishgen.errors import DishgenError
from dishgen.fileio import (
    append_jsonl,
    atomic_save_image,
    atomic_write_json,
    read_jsonl,
    repair_jsonl,
)
from dishgen.generation_io import slugify

log = logging.getLogger(__name__)

MIN_WORDS, MAX_WORDS = 2, 25
DEFAULT_POSITIVE_SUFFIX = "professional food photography, natural light, sharp focus, appetizing"
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, low quality, cartoon, illustration, drawing, painting, text, watermark, logo, "
    "deformed, oversaturated, people, hands"
)
DIFFUSION_FAMILIES = ("diffusion", "lora")


class SynthError(DishgenError):
    """Inputs or settings that make an augmentation or a mix impossible."""


# -- caption variations -------------------------------------------------------------------------


@dataclass
class VariationInput:
    """One source caption to vary: its text, its dish, and a key that names the source row."""

    caption: str
    dish: str = ""
    key: str = ""


@dataclass
class VariationResult:
    """The valid variations written for one source caption, and why there are fewer if so."""

    texts: list[str]
    error: str | None = None


def _fold(text: str) -> str:
    """Lower case without diacritics ("Ćevapi" -> "cevapi"), for word matching."""
    text = unicodedata.normalize("NFKD", text.replace("đ", "dj").replace("Đ", "Dj"))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def _dish_words(dish: str) -> set[str]:
    words = set(re.findall(r"[a-z]{3,}", _fold(dish)))
    return words - {"the", "and", "with", "sa", "od", "na", "za", "u"}


def validate_variation(text: str, dish: str = "", source_caption: str = ""
                       ) -> tuple[str | None, str]:
    """Clean and check one caption variation.

    A variation is one line of 2 to 25 words that names the dish (a word of the dish name, or of
    its English description, when the dish is known) and is not the source caption itself.

    Returns:
        ``(clean_text, "")`` when usable, else ``(None, reason)``.
    """
    clean = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", str(text))  # list markers an LLM may add
    clean = re.sub(r"\s+", " ", clean).strip().strip("\"'“”")
    words = clean.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None, f"{len(words)} words, not {MIN_WORDS}-{MAX_WORDS} ({clean[:60]!r})"
    if _fold(clean).rstrip(".") == _fold(source_caption).strip().rstrip("."):
        return None, "same as the source caption"
    if dish:
        expected = _dish_words(dish) | _dish_words(describe_dish(dish))
        if expected and not expected & set(re.findall(r"[a-z]{3,}", _fold(clean))):
            return None, f"does not name the dish {dish!r} ({clean[:60]!r})"
    return clean, ""


_PLATING = [
    "served on a white ceramic plate", "in a rustic clay pot", "on a wooden serving board",
    "in a shallow enamel bowl", "on a patterned porcelain plate", "in a cast-iron pan",
    "on a blue stoneware plate", "in a deep earthenware dish",
]
_ANGLE = [
    "photographed from above", "close-up from the side", "seen at a 45-degree angle",
    "in a low-angle close-up", "seen at eye level",
]
_SETTING = [
    "on a linen tablecloth", "on a rustic kitchen table", "in a cosy village tavern",
    "on a sunny terrace", "on a marble countertop", "at a family lunch table",
]
_EXTRA = [
    "in soft natural light", "in warm evening light", "in bright daylight",
    "with cutlery beside it", "with a linen napkin beside it", "with a glass of water nearby",
]


class TemplateVariator:
    """Offline, deterministic variations: the dish phrase with new plating, angle and setting.

    The choices are drawn from a generator seeded by ``(seed, source key, caption)``, so a re-run
    writes the same variations and two photos of one dish get different ones.
    """

    name = "template"

    def __init__(self, seed: int = 0):
        self.seed = seed

    @property
    def description(self) -> str:
        return self.name

    def vary(self, item: VariationInput, n: int) -> VariationResult:
        """Up to ``n`` distinct variations of one caption."""
        phrase = describe_dish(item.dish) if item.dish.strip() else _caption_subject(item.caption)
        if not phrase:
            return VariationResult([], "no dish name or caption to vary")
        if sum(c.isupper() for c in phrase) > sum(c.islower() for c in phrase):
            phrase = phrase.lower()  # "7 DAY's CROISSANT" (FFML names) -> "7 day's croissant"
        phrase = phrase[0].upper() + phrase[1:]
        digest = hashlib.sha256(f"{self.seed}\0{item.key}\0{item.caption}".encode()).digest()
        rng = random.Random(digest)
        pools = [rng.sample(pool, len(pool)) for pool in (_PLATING, _ANGLE, _SETTING, _EXTRA)]
        texts: list[str] = []
        problem = ""
        for k in range(n * 3):  # a few spare draws for the rare duplicate or too-long one
            parts = [pool[(k + k // len(pool)) % len(pool)] for pool in pools]
            while parts:  # drop details from the end until the caption fits in 25 words
                candidate = f"{phrase}, {', '.join(parts)}."
                text, problem = validate_variation(candidate, item.dish, item.caption)
                if text is not None or "words" not in problem:
                    break
                parts.pop()
            if text is not None and text not in texts:
                texts.append(text)
            if len(texts) == n:
                return VariationResult(texts)
        why = problem or "duplicates"
        return VariationResult(texts, f"only {len(texts)} of {n} variations: {why}")

    def vary_many(self, items: list[VariationInput], n: int) -> list[VariationResult]:
        return [self.vary(item, n) for item in items]


def _caption_subject(caption: str) -> str:
    """The dish part of a caption: "A photo of sarma, served on..." -> "sarma"."""
    lead = r"^(a|an)\s+(photo|photograph|picture|image)\s+of\s+"
    text = re.sub(lead, "", caption.strip(), flags=re.I)
    return re.split(r",|\.| on | in | with | served ", text, maxsplit=1)[0].strip()


VARIATION_PROMPT = """\
You write captions for a text-to-image dataset of Serbian and Balkan dishes.
You get one caption of a food photograph and the dish it shows. Write {n} new captions of a \
photograph of the SAME dish. Stay faithful to the dish: keep its name and what it is made of; do \
not turn it into another dish. Vary what the photograph shows: which of its usual ingredients \
and side dishes are visible, the plating or vessel, the camera angle, the setting and the light.
Each caption is one line of {low} to {high} words, in English, with no quantities or recipes, \
and all {n} differ from each other and from the original.
Answer with a JSON object and nothing else: {{"variations": ["<caption>", ...]}}"""

VARIATIONS_PER_REQUEST = 4  # four 25-word captions fit in the answer budget of one request


def parse_variations(content: str | None) -> tuple[list[str] | None, str]:
    """Read an LLM answer: a JSON object with a ``variations`` list of strings (or a bare list).

    Returns:
        ``(strings, "")``, or ``(None, reason)`` for a malformed answer.
    """
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", (content or "").strip())
    if not text:
        return None, "empty answer"
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        start, end = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1), max(
            text.rfind("}"), text.rfind("]"))
        try:
            data = json.loads(text[start:end + 1]) if 0 <= start < end else None
        except json.JSONDecodeError:
            data = None
        if data is None:
            return None, f"not JSON ({text[:60]!r})"
    if isinstance(data, dict):
        data = data.get("variations", data.get("captions"))
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        return None, "JSON without a 'variations' list of strings"
    return data, ""


class LLMVariator:
    """Variations written by an LLM on any OpenAI-compatible server.

    Client, key handling (``OPENAI_API_KEY`` only; never logged), retries with backoff, bounded
    concurrency and the preflight check come from :class:`dishgen.data.llm.LLMCaptioner`; this
    class adds the variation prompt, its validation and the re-asking of malformed or short
    answers. Sources with the same caption and dish share one request.

    Args:
        temperature: sampling temperature (higher than for captions: variety is the point).
        **options: ``base_url``, ``model``, ``concurrency``, ``max_retries``, ``timeout``,
            ``preflight`` of the LLM captioner.
    """

    name = "llm"

    def __init__(self, *, temperature: float = 0.9, **options: Any):
        from dishgen.data.llm import LLMCaptioner

        self.client = LLMCaptioner(temperature=temperature, **options)

    @property
    def description(self) -> str:
        return self.client.description

    def vary_many(self, items: list[VariationInput], n: int) -> list[VariationResult]:
        from tqdm.auto import tqdm

        unique = list(dict.fromkeys((item.caption, item.dish) for item in items))
        with ThreadPoolExecutor(max_workers=self.client.concurrency) as pool, tqdm(
            total=len(unique), desc=f"variations ({self.client.model})", unit="caption",
            leave=False,
        ) as bar:
            answers = {}
            results = pool.map(lambda k: self._ask(*k, n), unique)
            for key, result in zip(unique, results, strict=True):
                answers[key] = result
                bar.update()
        return [answers[(item.caption, item.dish)] for item in items]

    def _ask(self, caption: str, dish: str, n: int) -> VariationResult:
        """Ask until ``n`` valid variations are in hand or the attempts are spent."""
        import openai

        texts: list[str] = []
        attempts = (self.client.max_retries + 1) * -(-n // VARIATIONS_PER_REQUEST)
        problem = ""
        for _ in range(attempts):
            want = min(VARIATIONS_PER_REQUEST, n - len(texts))
            user = f"Caption: {caption}\nDish: {dish or 'as named in the caption'}"
            if texts:
                user += "\nAlready written (do not repeat):\n" + "\n".join(f"- {t}" for t in texts)
            messages = [
                {"role": "system",
                 "content": VARIATION_PROMPT.format(n=want, low=MIN_WORDS, high=MAX_WORDS)},
                {"role": "user", "content": user},
            ]
            try:
                content = self.client._complete(messages)
            except openai.APIError as err:  # the client has already retried 429/5xx/timeouts
                status = getattr(err, "status_code", None)
                detail = self.client._redact(getattr(err, "message", "") or str(err))[:200]
                what = f"HTTP {status}" if status else type(err).__name__
                return VariationResult(texts, f"LLM request failed ({what}): {detail}")
            candidates, problem = parse_variations(content)
            for candidate in candidates or []:
                text, reason = validate_variation(candidate, dish, caption)
                if text is None:
                    problem = reason
                elif text in texts:
                    problem = f"repeated an earlier variation ({text[:60]!r})"
                elif len(texts) < n:
                    texts.append(text)
            if len(texts) == n:
                return VariationResult(texts)
            log.info("variations of %r: %d of %d valid so far (%s); asking again",
                     caption, len(texts), n, problem)
        return VariationResult(
            texts, f"{len(texts)} of {n} valid variations after {attempts} requests: {problem}")


def get_variator(name: str, *, seed: int = 0, **options: Any):
    """``template`` (offline) or ``llm`` (an OpenAI-compatible server; preflight-checked now)."""
    if name == "template":
        if options:
            raise SynthError("the template variator takes no LLM options "
                             f"(got {', '.join(sorted(options))})")
        return TemplateVariator(seed)
    if name == "llm":
        return LLMVariator(**options)
    raise SynthError(f"unknown captioner {name!r} for variations; choose 'template' or 'llm'")


# -- augment ------------------------------------------------------------------------------------


@dataclass
class AugmentOptions:
    """Settings of one augmentation (saved in ``dataset.json``).

    ``positive_suffix`` and ``negative_prompt`` apply to diffusion models only: a GAN or VAE
    was trained on plain captions, so it gets the variation as it is.
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
        generator: an already loaded :class:`dishgen.generate.Generator` (default: load
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
    elif out.exists() and any(out.iterdir()):
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
    if out.exists():
        shutil.rmtree(out)
    os.replace(final, out)
    shutil.rmtree(work, ignore_errors=True)
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
    from dishgen.generate import check_knobs, load_generator

    given = generator is not None
    if generator is None:
        extra = {"lora": list(options.lora)} if options.lora else {}
        generator = load_generator(options.model, device=options.device, dtype=options.dtype,
                                   **extra)
    diffusion = generator.family in DIFFUSION_FAMILIES
    knobs = {**options.knobs, "batch_size": options.batch_size * options.images_per_caption}
    if diffusion and options.negative_prompt:
        knobs["negative_prompt"] = options.negative_prompt
    check_knobs(generator.family, tuple(generator.knobs), knobs)
    model = getattr(generator, "location", "") or (
        type(generator).__name__ if given else options.model)
    settings = {
        "family": generator.family, "model": str(model), "lora": [str(p) for p in options.lora],
        "knobs": {k: v for k, v in knobs.items() if k != "batch_size"},
        "positive_suffix": options.positive_suffix if diffusion else "",
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


def _place(src: Path, dst: Path) -> None:
    # A hard link makes assembly instant; across file systems (or where links fail) copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# -- mix ----------------------------------------------------------------------------------------


@dataclass
class MixOptions:
    """Settings of one mix (saved in ``dataset.json``).

    A split's synthetic fraction is the share of synthetic rows among all rows of that split:
    ``synthetic / (real + synthetic)``. Every real row of a split is kept and the number of
    synthetic rows is chosen to hit the fraction (within one image); a fraction of 1 leaves the
    split's real rows out. ``synthetic_fraction=None`` takes every synthetic row train may have.
    """

    synthetic_fraction: float | None = None  # of train
    val_synthetic: float = 0.5
    test_synthetic: float = 0.0
    val_fraction: float = 0.1  # share of the real train rows moved to validation (by dish)
    seed: int = 0
    overwrite: bool = False

    def validate(self) -> None:
        for name in ("synthetic_fraction", "val_synthetic", "test_synthetic"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise SynthError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        if not 0 <= self.val_fraction < 1:
            raise SynthError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")


SPLITS = ("train", "validation", "test")


def content_hash(path: str | Path) -> str:
    """SHA-256 of an image's decoded RGB pixels and size: equal for equal pictures in any format."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        return hashlib.sha256(f"{im.size}".encode() + im.tobytes()).hexdigest()


def _row_dict(row: DatasetRow) -> dict:
    return {"file_name": row.path.name, "text": row.text, "dish": row.dish, **row.extra}


def mix_datasets(real: str | Path, synthetic: str | Path, out: str | Path,
                 options: MixOptions | None = None) -> dict:
    """Mix a real dataset and a synthetic one into train, validation and test splits.

    The real test split stays the test split (so models trained on different mixes are scored
    on the same photos); validation is carved out of the real train split by dish. Each
    synthetic row goes only to the split that holds its dish's real photos (train when the dish
    has none), so no dish straddles two splits. Synthetic images identical to a real image or to
    an earlier synthetic one are removed before counting.

    Args:
        real: the real dataset (``train/``, optionally ``validation/`` and ``test/``).
        synthetic: a dataset from :func:`augment_dataset`.
        out: the dataset to create.
        options: see :class:`MixOptions`.

    Returns:
        The ``dataset.json`` summary.

    Raises:
        SynthError: a bad setting, an existing output, or too few synthetic images for a fraction.
    """
    from dishgen.fileio import atomic_directory

    options = options or MixOptions()
    options.validate()
    real, synthetic, out = Path(real), Path(synthetic), Path(out)
    if out.exists() and any(out.iterdir()) and not options.overwrite:
        raise SynthError(f"{str(out)!r} already exists; pass --overwrite to replace it, "
                         "or choose another --out")
    real_splits = list_splits(real)
    unknown = sorted(set(real_splits) - set(SPLITS))
    if unknown:
        raise SynthError(f"{str(real)!r} has splits {', '.join(unknown)}; "
                         f"mix knows {', '.join(SPLITS)}")
    parts = {split: [_row_dict(r) | {"_path": r.path} for r in load_split(real, split)]
             if split in real_splits else [] for split in SPLITS}
    if not parts["train"]:
        raise SynthError(f"{str(real)!r} has no train split to mix into")
    if not parts["validation"] and options.val_fraction > 0:
        keys = [dish_key(r["dish"]) if r["dish"] else "" for r in parts["train"]]
        train_idx, val_idx = split_indices(keys, options.val_fraction, options.seed, "dish")
        parts["validation"] = [parts["train"][i] for i in val_idx]
        parts["train"] = [parts["train"][i] for i in train_idx]
    synth_rows = [_row_dict(r) | {"_path": r.path} for split in list_splits(synthetic)
                  for r in load_split(synthetic, split)]
    if not synth_rows:
        raise SynthError(f"{str(synthetic)!r} holds no synthetic rows; "
                         "make them with `dishgen data augment`")

    unique_synth, duplicates, real_duplicates = _drop_duplicates(parts, synth_rows)
    eligible, ineligible, straddling = _assign_by_dish(parts, unique_synth)

    wanted = {"train": options.synthetic_fraction, "validation": options.val_synthetic,
              "test": options.test_synthetic}
    rng = random.Random(options.seed)
    chosen, left_out_real, counts = {}, {}, {}
    for split in SPLITS:
        real_rows, pool, fraction = parts[split], eligible[split], wanted[split]
        if fraction == 1:
            left_out_real[split], real_rows = len(real_rows), []
        # synthetic / (real + synthetic) = f  <=>  synthetic = f * real / (1 - f)
        if fraction in (None, 1):
            n = len(pool)
        else:
            n = round(fraction * len(real_rows) / (1 - fraction))
        if n > len(pool):
            best = len(pool) / (len(pool) + len(real_rows))
            hint = ("augment the test split too (`dishgen data augment REAL --split test`)"
                    if split == "test" else
                    "make more with `dishgen data augment --variations/--images-per-caption`")
            raise SynthError(
                f"a synthetic fraction of {fraction} in {split} needs {n} synthetic images of its "
                f"dishes, but only {len(pool)} are there (after removing duplicates): at most "
                f"{best:.3f} is possible; ask for less, or {hint}"
            )
        chosen[split] = real_rows + _spread(pool, n, rng)
        total = len(real_rows) + n
        counts[split] = {"real": len(real_rows), "synthetic": n, "total": total,
                         "dishes": len({dish_key(r["dish"]) for r in chosen[split] if r["dish"]}),
                         "synthetic_fraction": round(n / max(1, total), 6)}
    if not chosen["train"]:
        raise SynthError("the train split would be empty; "
                         "lower --synthetic-fraction or --val-fraction")

    for rows in chosen.values():
        for r in rows:
            r["synthetic"] = bool(r.get("synthetic"))
    _align_columns(list(chosen.values()))
    with atomic_directory(out) as tmp:
        for split in SPLITS:
            if not chosen[split]:
                continue
            (tmp / split).mkdir()
            for r in chosen[split]:
                if (tmp / split / r["file_name"]).exists():
                    raise SynthError(f"two images named {r['file_name']!r} in {split}: "
                                     "rename one of them")
                _place(r["_path"], tmp / split / r["file_name"])
            metadata = [{k: v for k, v in r.items() if k != "_path"} for r in chosen[split]]
            append_jsonl(tmp / split / "metadata.jsonl", metadata)
        used = sum(c["synthetic"] for c in counts.values())
        summary = {
            "dishgen_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kind": "mix",
            "inputs": {"real": str(real), "synthetic": str(synthetic)},
            "options": {k: v for k, v in asdict(options).items() if k != "overwrite"},
            "fraction_definition": "synthetic rows / all rows of the split",
            "counts": counts,
            "synthetic_available": len(synth_rows),
            "removed_duplicates": {"synthetic": len(duplicates),
                                   "real_among_real": real_duplicates},
            "duplicates": duplicates,
            "left_out": {"synthetic_unused": sum(len(p) for p in eligible.values()) - used,
                         "synthetic_fitting_no_split": len(ineligible),
                         "real_rows_by_split": left_out_real},
            "dishes_in_several_real_splits": straddling,
        }
        atomic_write_json(tmp / "dataset.json", summary)
    if straddling:
        log.warning("%d dishes have real photos in more than one split of %s (%s...): the real "
                    "dataset was not split by dish", len(straddling), real,
                    ", ".join(straddling[:3]))
    return summary


def _drop_duplicates(parts: dict[str, list[dict]], synth_rows: list[dict]
                     ) -> tuple[list[dict], list[dict], int]:
    """Synthetic rows whose picture equals no real one and no earlier synthetic one.

    Returns:
        ``(kept, removed, real_duplicates)``: ``removed`` names what each one duplicated;
        ``real_duplicates`` counts equal pictures among the real rows (kept: not ours to fix).
    """
    real_rows = [r for split in SPLITS for r in parts[split]]
    seen = {content_hash(r["_path"]): r for r in real_rows}
    kept, removed = [], []
    for r in synth_rows:
        digest = content_hash(r["_path"])
        first = seen.setdefault(digest, r)
        if first is r:
            kept.append(r)
        else:
            removed.append({"file_name": r["file_name"], "duplicate_of": first["file_name"],
                            "of": "synthetic" if first.get("synthetic") else "real"})
    return kept, removed, len(real_rows) - (len(seen) - len(kept))


def _assign_by_dish(parts: dict[str, list[dict]], synth_rows: list[dict]
                    ) -> tuple[dict[str, list[dict]], list[dict], list[str]]:
    """The split each synthetic row may join: that of its dish's real photos (train if none).

    Returns:
        ``(eligible by split, rows that fit no split, dishes whose real photos straddle splits)``.
        A synthetic row made from a test photo may only go to test; one without a dish only to
        train, and only if made from a train photo.
    """
    home: dict[str, set[str]] = {}
    for split in SPLITS:
        for r in parts[split]:
            if r["dish"]:
                home.setdefault(dish_key(r["dish"]), set()).add(split)
    eligible: dict[str, list[dict]] = {split: [] for split in SPLITS}
    ineligible = []
    for r in synth_rows:
        if r["dish"]:
            splits = home.get(dish_key(r["dish"]), {"train"})
        else:
            splits = {"train"} if r.get("source_split", "train") == "train" else set()
        if r.get("source_split") == "test":  # made from a test photo: never trained on
            splits = splits & {"test"}
        if len(splits) == 1:
            eligible[next(iter(splits))].append(r)
        else:
            ineligible.append(r)
    return eligible, ineligible, sorted(d for d, s in home.items() if len(s) > 1)


_EMPTY = {str: "", bool: False, int: -1, float: float("nan"), list: [], dict: {}}


def _align_columns(splits: list[list[dict]]) -> None:
    """Give every row the same columns, in the same order, with the same types (in place).

    ``datasets.load_dataset("imagefolder")`` refuses splits whose metadata differ in columns or
    types, and reads a column that is empty in one split as type null. So a real row gets the
    synthetic columns (``""``, ``False``) and a synthetic row the real ones, typed like the others.
    """
    kinds: dict[str, type | None] = {}
    rows = [r for split in splits for r in split]
    for r in rows:
        for key, value in r.items():
            if key != "_path" and (kinds.get(key) is None):
                kinds[key] = None if value is None else type(value)
    for split in splits:
        for index, r in enumerate(split):
            for key, kind in kinds.items():
                if r.get(key) is not None:
                    continue
                if key == "captions":
                    r[key] = [r["text"]]
                elif key == "original_size":
                    from PIL import Image

                    with Image.open(r["_path"]) as im:
                        r[key] = list(im.size)
                else:
                    empty = _EMPTY.get(kind)
                    r[key] = empty.copy() if isinstance(empty, (list, dict)) else empty
            split[index] = {key: r.get(key) for key in kinds} | {"_path": r["_path"]}


def _spread(pool: list[dict], n: int, rng: random.Random) -> list[dict]:
    """``n`` rows of ``pool`` spread over source images: one of each source before a second."""
    by_source: dict[str, list[dict]] = {}
    for r in pool:
        by_source.setdefault(str(r.get("source_image") or r["file_name"]), []).append(r)
    sources = sorted(by_source)
    rng.shuffle(sources)
    for key in sources:
        rng.shuffle(by_source[key])
    picked: list[dict] = []
    depth = 0
    while len(picked) < n:
        for key in sources:
            if depth < len(by_source[key]) and len(picked) < n:
                picked.append(by_source[key][depth])
        depth += 1
    return picked


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


def mix_summary_text(summary: dict) -> str:
    """A short human-readable report of a mix."""
    lines = [f"{split}: {c['total']} images ({c['real']} real, {c['synthetic']} synthetic = "
             f"{c['synthetic_fraction']:.3f}), {c['dishes']} dishes"
             for split, c in summary["counts"].items()]
    lines.append(f"removed {summary['removed_duplicates']['synthetic']} synthetic duplicates; "
                 f"{summary['left_out']['synthetic_unused']} synthetic images unused")
    return "\n".join(lines)
