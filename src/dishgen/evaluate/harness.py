"""The evaluation harness: plan, generate, extract features once, score every model the same way.

The story of one ``dishgen evaluate`` run:

1. plan: resolve every ``--model`` (expanding ``--checkpoints`` over a run directory), check every
   ``--images`` folder, read the split and check its images, load the feature and CLIP networks.
   Anything wrong stops here, before a single image is generated;
2. reference: features of the real split (and of the training split for memorization), and two
   reference rows: real test photos scored against their own captions, and a random subset of
   real training photos scored like a model (the best FID one can expect at this N);
3. per model: generate the missing images (resumable), extract features, score, write the report.
   The backbone-free signals (spectrum, grid, edge energy, the near-copy test) are computed at each
   generated set's own size, with the real photos resized to it; the first set of a size also
   adds a reference row: the real photos' two halves against each other. Dish retrieval ranks
   each generated image's caption's dish by colour among the split's dishes, at one fixed size;
   its reference row is the real photos, each left out of its dish's prototype.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dishgen.errors import DishgenError
from dishgen.evaluate import metrics as M
from dishgen.evaluate.features import DEFAULT_CLIP_MODEL, ClipEmbedder
from dishgen.evaluate.imagesets import ImageSet, folder_set, generate_set, readable_rows, real_set
from dishgen.evaluate.scoring import (
    CLIP_METRICS,
    PIXEL_METRICS,
    RETRIEVAL_METRIC,
    DishIndex,
    PixelStats,
    SetFeatures,
    colour_descriptors,
    dish_retrieval,
    dish_retrieval_reference,
    pixel_stats,
    score,
    score_pixels,
    set_features,
)

log = logging.getLogger(__name__)

METRICS = ("fid", "kid", "clip-score", "clip-cosine", "memorization", "spectral", "edges", "grid", "retrieval")
NETWORK_METRICS = ("fid", "kid", "clip-score", "clip-cosine")  # need a pretrained network
BACKBONE_FREE = ("none",)  # --feature-backbone none: no pretrained network at all


class EvaluationError(DishgenError):
    """An evaluation that cannot run as asked (bad options, nothing to score...)."""


@dataclass
class EvaluationConfig:
    """Everything one evaluation needs; the CLI fills it from its options.

    Attributes:
        data: the dataset folder.
        out: the report folder.
        models: model references (``default``, run or checkpoint folders, diffusers ids/folders).
        images: folders of already generated images to score as they are.
        split: the split whose captions are generated and whose photos are the reference.
        num_samples: use a seeded random subset of this many rows of the split (default: all).
        images_per_caption: images generated per caption (K).
        metrics: a subset of :data:`METRICS`; ``None`` is all of them, skipping those the data
            cannot support (memorization without a train split) with a warning, and those that
            need a network when ``feature_backbone`` is ``none``. ``retrieval`` (dish retrieval)
            on a split with fewer than 2 named dishes is skipped with a note in the report.
        feature_backbone: ``clip``, ``dinov2`` or ``inception``: the space of FID, KID and
            memorization's nearest-photo search; ``none``: no pretrained network (spectral,
            edges, grid, retrieval and memorization in a thumbnail space, offline anywhere).
        feature_model: hub id, folder or weights file for that backbone (default: its standard).
        clip_model: the CLIP model for CLIPScore (and for the ``clip`` backbone by default).
        seed: seeds generation, the subset, KID subsets and bootstrap resampling.
        checkpoints: ``all``, ``latest`` or comma-separated steps: evaluate these checkpoints
            of each run directory instead of its final model.
        device: where generators and feature networks run.
        dtype: generator dtype (feature networks stay in float32).
        batch_size: images per generator call and per feature batch.
        bootstrap: bootstrap resamples per interval (0 turns intervals off).
        image_size: resize real and generated images to this square size before the feature
            networks (default: the feature network's own input size).
        knobs: generation knobs; each model receives those its family takes.
        model_options: loader options for :func:`dishgen.generation.load_generator`.
        progress: show progress bars.
    """

    data: Path
    out: Path
    models: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    split: str = "test"
    num_samples: int | None = None
    images_per_caption: int = 1
    metrics: tuple[str, ...] | None = None
    feature_backbone: str = "clip"
    feature_model: str | None = None
    clip_model: str = DEFAULT_CLIP_MODEL
    seed: int = 0
    checkpoints: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 16
    bootstrap: int = 200
    image_size: int | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self):
        self.data, self.out = Path(self.data), Path(self.out)
        self.models, self.images = [str(m) for m in self.models], [str(i) for i in self.images]


@dataclass
class Entry:
    """One row of the report: a model (at a step) or a folder of images."""

    component: str
    kind: str  # "model", "images" or "reference"
    step: int | None = None
    family: str | None = None
    model: str | None = None
    folder: Path | None = None


# -- planning -----------------------------------------------------------------------------------
def select_checkpoints(found: list[tuple[int, Path]], which: str, run: Path) -> list[tuple[int, Path]]:
    """Pick checkpoints by ``all``, ``latest`` or a comma-separated list of steps."""
    if not found:
        raise EvaluationError(f"--checkpoints {which}: {str(run)!r} has no complete checkpoint-<step>/ folder")
    if which == "all":
        return found
    if which == "latest":
        return found[-1:]
    try:
        wanted = [int(s) for s in which.split(",") if s.strip()]
    except ValueError:
        raise EvaluationError(f"--checkpoints takes all, latest or steps like 1000,2000; got {which!r}") from None
    by_step = dict(found)
    missing = [s for s in wanted if s not in by_step]
    if missing:
        raise EvaluationError(
            f"{str(run)!r} has no complete checkpoint for step(s) {', '.join(map(str, missing))}; "
            f"it has {', '.join(str(s) for s, _ in found)}"
        )
    return [(s, by_step[s]) for s in wanted]


def _step_of(path: Path) -> int | None:
    """The training step of the weights a loader takes from ``path``.

    A model folder says its own step (``checkpoint-<N>``, or ``step`` in its config). A run
    directory is loaded the way the families load it: its final weights (``model/``, or LoRA
    weights at the top) when present, else its latest complete checkpoint; so a stopped run
    is labelled with that checkpoint's step, not with the last step in its log. The log's last
    step is used only for final weights that do not record a step.
    """
    from dishgen.fileio import read_jsonl
    from dishgen.runs import RunDir, recorded_step

    step = recorded_step(path)
    if step is not None:
        return step
    has_final = (path / "model").is_dir() or any(path.glob("*.safetensors"))
    if has_final and (path / "model").is_dir():
        step = recorded_step(path / "model")
        if step is not None:
            return step
    if not has_final:
        checkpoints = RunDir(path, "").checkpoints()
        if checkpoints:
            return checkpoints[-1][0]
    steps = [r["step"] for r in read_jsonl(path / "log.jsonl") if isinstance(r.get("step"), int)]
    return max(steps) if steps else None


def plan_entries(config: EvaluationConfig) -> list[Entry]:
    """Resolve every model and images folder into report rows, failing before any generation."""
    from dishgen.generation import resolve_model
    from dishgen.hub import resolve_hub_model
    from dishgen.runs import CHECKPOINT_RE, RunDir

    entries: list[Entry] = []
    for ref in config.models:
        family, location = resolve_model(ref)
        path = Path(location) if isinstance(location, Path) or Path(str(location)).is_dir() else None
        if path is None:  # a hub id: not cached and offline fails now, not after the reference rows
            resolve_hub_model(str(location), what="diffusion model", option="--model PATH",
                              marker="model_index.json", error=EvaluationError)
            entries.append(Entry(str(ref), "model", None, family, str(ref)))
            continue
        is_checkpoint = bool(CHECKPOINT_RE.match(path.name))
        # runs/gan/checkpoint-500 and runs/gan/model (the export) both belong to "gan".
        inside_run = is_checkpoint or (path.name == "model" and (path.parent / "config.json").is_file())
        component = path.parent.name if inside_run else path.name
        if str(ref) == "default":
            component = "default"
        run_dir = path.parent if inside_run else path  # --checkpoints on RUN/model sweeps RUN
        # A model folder that is not inside a run (a bundled model such as `default`, a copied
        # export) has no checkpoints to sweep: --checkpoints, meant for the run directories beside
        # it, leaves it as it is.
        model_folder = not inside_run and (path / "model.safetensors").is_file()
        if config.checkpoints and model_folder:
            log.info("--checkpoints %s: %s is a model folder, not a run directory; evaluated as it is",
                     config.checkpoints, ref)
            entries.append(Entry(component, "model", _step_of(path), family, str(path)))
            continue
        found = RunDir(run_dir, family).checkpoints() if config.checkpoints and not is_checkpoint else []
        if config.checkpoints in ("all", "latest") and not is_checkpoint and not found:
            log.warning("--checkpoints %s: %s has no complete checkpoint; its final model is evaluated",
                        config.checkpoints, path)
        if found or (config.checkpoints and not is_checkpoint and config.checkpoints not in ("all", "latest")):
            for step, ckpt in select_checkpoints(found, config.checkpoints, run_dir):
                entries.append(Entry(component, "model", step, resolve_model(ckpt)[0], str(ckpt)))
        else:
            entries.append(Entry(component, "model", _step_of(path), family, str(path)))
    for folder in config.images:
        entries.append(Entry(Path(folder).name, "images", folder=Path(folder)))
    if not entries:
        raise EvaluationError("nothing to evaluate: give --model (repeatable) or --images DIR")
    slugs: dict[str, int] = {}
    for entry in entries:
        if entry.kind == "model":
            base = _slug(entry.component + ("" if entry.step is None else f"-step-{entry.step}"))
            slugs[base] = slugs.get(base, 0) + 1
            entry.folder = config.out / "images" / (base if slugs[base] == 1 else f"{base}-{slugs[base]}")
    return entries


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def choose_metrics(config: EvaluationConfig, has_train: bool) -> list[str]:
    """The metrics to compute; unknown names are an error."""
    no_network = config.feature_backbone in BACKBONE_FREE
    asked = list(config.metrics) if config.metrics else [m for m in METRICS if not (no_network and m in NETWORK_METRICS)]
    unknown = [m for m in asked if m not in METRICS]
    if unknown:
        raise EvaluationError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if no_network and any(m in NETWORK_METRICS for m in asked):
        raise EvaluationError(
            f"--feature-backbone none loads no network, so {', '.join(m for m in asked if m in NETWORK_METRICS)} "
            f"cannot be computed; with it use --metrics {','.join(m for m in METRICS if m not in NETWORK_METRICS)}, "
            "or choose a backbone (clip, dinov2, inception)")
    if "memorization" in asked and not has_train:
        if config.metrics:
            raise EvaluationError(f"memorization needs a 'train' split in {str(config.data)!r}, and there is none")
        log.warning("no 'train' split in %s: memorization is skipped", config.data)
        asked.remove("memorization")
    return asked


def _flat(d: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


# -- the whole run ------------------------------------------------------------------------------
def evaluate(
    config: EvaluationConfig, *, feature_network: torch.nn.Module | None = None, clip: ClipEmbedder | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Run an evaluation and (by default) write its report to ``config.out``.

    Args:
        config: what to evaluate and how.
        feature_network: a ready ``nn.Module`` (uint8 images -> ``(B, D)``) instead of
            loading ``config.feature_backbone`` (used by the tests with tiny networks).
        clip: a ready :class:`ClipEmbedder` instead of loading ``config.clip_model``.
        write: write ``report.json``, ``report.md``, charts and the grid.

    Returns:
        The report as a dict (what ``report.json`` holds).

    Raises:
        EvaluationError, ImageSetError, BackboneUnavailable, DatasetError, ModelReferenceError:
            bad input, always before the first image is generated.
    """
    from dishgen.data.dataset import list_splits, load_split
    from dishgen.devices import resolve_device
    from dishgen.evaluate import features as F
    from dishgen.evaluate import report as R

    if config.images_per_caption < 1:
        raise EvaluationError("--images-per-caption must be at least 1")
    if config.num_samples is not None and config.num_samples < 2:
        raise EvaluationError("--num-samples must be at least 2 (FID needs two images per set)")
    # 1. plan: everything that can fail does so here.
    # One unreadable photo is dropped, named in the report and warned about; it ends nothing.
    rows = load_split(config.data, config.split, require_files=False)
    readable, skipped_real = readable_rows(rows, config.split)
    if not readable:
        raise EvaluationError(f"split {config.split!r} of {str(config.data)!r}: none of its images can be read "
                              f"(the first: {skipped_real[0]['path']}: {skipped_real[0]['reason']})")
    real, picked = real_set([rows[i] for i in readable], f"split {config.split!r} of {str(config.data)!r}",
                            config.num_samples, config.seed)
    real_rows = [readable[i] for i in picked]  # places in the whole split
    has_train = config.split != "train" and "train" in list_splits(config.data)
    metrics = choose_metrics(config, has_train)
    entries = plan_entries(config)
    folder_sets = {id(e): folder_set(e.folder) for e in entries if e.kind == "images"}
    device = resolve_device(config.device)
    if clip is None and any(m in metrics for m in CLIP_METRICS):
        clip = F.load_clip(config.clip_model, device=device)
    # A network only for what needs one: spectral, edges and grid never do, memorization only to
    # search its nearest photos in a feature space (with --feature-backbone none: thumbnails).
    needs_network = ("fid" in metrics or "kid" in metrics
                     or ("memorization" in metrics and config.feature_backbone not in BACKBONE_FREE))
    custom_network = feature_network is not None
    default = config.clip_model if config.feature_backbone == "clip" else None
    if not needs_network:
        feature_network = None
    elif feature_network is None:
        feature_network = F.load_feature_network(config.feature_backbone, config.feature_model or default,
                                                 clip=clip, device=device)
    use_clip = clip if any(m in metrics for m in CLIP_METRICS) else None
    size = config.image_size or getattr(feature_network, "image_size", None) or 299
    dim = int(getattr(feature_network, "num_features", 0)) or None

    # 2. references.
    text_cache: dict[str, torch.Tensor] = {}
    real_f = set_features(real, feature_network, use_clip, size, config.batch_size, text_cache, config.progress)
    dim = dim or (real_f.features.shape[1] if real_f.features is not None else None)
    train_set, train_f = None, None
    if has_train and ("memorization" in metrics or "fid" in metrics or "kid" in metrics):
        train_rows = load_split(config.data, "train", require_files=False)
        readable_train, skipped_train = readable_rows(train_rows, "train")
        train_rows, skipped_real = [train_rows[i] for i in readable_train], skipped_real + skipped_train
        if "memorization" not in metrics:  # only the reference row: a subset as large as a model's set
            keep = sorted(random.Random(config.seed).sample(range(len(train_rows)),
                                                            min(len(train_rows), len(real) * config.images_per_caption)))
            train_rows = [train_rows[i] for i in keep]
        if len(train_rows) >= 2:
            train_set, _ = real_set(train_rows, f"split 'train' of {str(config.data)!r}")
            if feature_network is not None:
                train_f = set_features(train_set, feature_network, None, size, config.batch_size, text_cache,
                                       config.progress)
    if feature_network is None:
        feature = {"backbone": "none", "model": None, "network": None, "dim": None, "image_size": None}
    else:
        feature = {"backbone": "custom" if custom_network else config.feature_backbone,
                   "model": None if custom_network else config.feature_model or default_feature_model(config),
                   "network": type(feature_network).__name__, "dim": dim, "image_size": size}
    report: dict[str, Any] = R.new_report(
        config=_flat(asdict(config)), metrics=metrics, feature=feature,
        clip_model=clip.name if use_clip is not None else None,
        dataset={"path": str(config.data), "split": config.split, "rows": len(rows), "n_real": len(real),
                 "real_sizes": [list(s) for s in real.sizes[:5]], "n_train": len(train_set) if train_set else 0,
                 "skipped_images": skipped_real},
    )
    for item in skipped_real:
        log.warning("skipped unreadable %s photo %s (%s); the report lists it", item["split"], item["path"],
                       item["reason"])
    _add_references(report, real, real_f, train_set, train_f, metrics, config, device)
    dishes = None
    if RETRIEVAL_METRIC in metrics:
        dishes = DishIndex.build(real, [rows[i].dish for i in real_rows], config.batch_size, config.progress)
        if dishes.note:
            log.warning("%s", dishes.note)
        _add_retrieval_reference(report, dishes, config)
    pixels = _PixelCache(real, train_set if "memorization" in metrics else None, config)
    pixel_metrics = [m for m in metrics if m in PIXEL_METRICS or m == "memorization"]

    # 3. models and folders.
    grid_columns: dict[str, list[Path]] = {"real photo": real.paths}
    for entry in entries:
        if entry.kind == "images":
            image_set = folder_sets[id(entry)]
        else:
            image_set = _generate(entry, real, real_rows, config)
        fake_f = set_features(image_set, feature_network, use_clip, size, config.batch_size, text_cache, config.progress)
        fake_px = real_px = train_px = None
        if pixel_metrics:
            pixel_size = min(image_set.sizes[0])  # the generated size; real photos are resized to it
            fake_px = pixel_stats(image_set, pixel_size, config.batch_size, config.progress)
            real_px = pixels.real(pixel_size, report)
            train_px = pixels.train(pixel_size) if "memorization" in metrics else None
        warnings = M.sample_size_warnings(len(real), len(image_set), dim) if dim else []
        if use_clip is not None and image_set.captions is None:
            warnings.append("no captions (no metadata.jsonl with 'text'): CLIP metrics skipped")
        for text in warnings:
            log.warning("%s: %s", entry.component, text)
        per_image: dict[str, Any] = {}
        result = score(real_f, fake_f, metrics, train=None if train_f is None or "memorization" not in metrics
                       else train_f.features, bootstrap=config.bootstrap, seed=config.seed, per_image=per_image,
                       device=device, real_pixels=real_px, fake_pixels=fake_px, train_pixels=train_px)
        if dishes is not None:
            result["dish_retrieval"] = _score_retrieval(dishes, entry, image_set, config, per_image)
            if result["dish_retrieval"].get("note"):
                warnings.append(result["dish_retrieval"]["note"])
        if "memorization" in result:
            for item in result["memorization"]["closest"]:
                item["image"] = str(image_set.paths[item["index"]])
                item["train_image"] = str(train_set.paths[item.pop("train_index")])
        report["results"].append({
            "component": entry.component, "kind": entry.kind, "step": entry.step, "family": entry.family,
            "model": entry.model, "images": str(entry.folder), "n_generated": len(image_set),
            "image_sizes": [list(s) for s in image_set.sizes], "metrics": result, "warnings": warnings,
        })
        if write:
            report["results"][-1]["per_image"] = R.write_per_image(
                config.out / "per_image" / f"{_slug(R.row_label(report['results'][-1]))}.jsonl",
                image_set, per_image, train_set)
        per_row = image_set.paths[:: config.images_per_caption] if entry.kind == "model" else _by_caption(image_set, real)
        grid_columns[R.row_label(report["results"][-1])] = per_row
        if write:
            R.write_json(report, config.out)
    report["complete"] = True
    if write:
        R.write_report(report, config.out, captions=real.captions, grid_columns=grid_columns)
    return report


def _generate(entry: Entry, real: ImageSet, real_rows: list[int], config: EvaluationConfig) -> ImageSet:
    from dishgen.families.registry import find_family
    from dishgen.generation import load_generator, normalize_knobs

    # Loader options (LoRA files, scheduler...) go to the families that take them.
    family = find_family(entry.family)
    takes = family.loader_options if family else ()
    options = {k: v for k, v in config.model_options.items() if k in takes}
    generator = load_generator(entry.model, device=config.device, dtype=config.dtype, **options)
    wanted = normalize_knobs(config.knobs)
    knobs = {k: v for k, v in wanted.items() if k in generator.knobs}
    ignored = sorted(set(wanted) - set(knobs))
    if ignored:
        log.warning("%s (%s) does not take %s; ignored for it", entry.component, generator.family, ", ".join(ignored))
    settings = {"model": entry.model, "family": generator.family, "seed": config.seed,
                "images_per_caption": config.images_per_caption, "knobs": knobs}
    try:
        return generate_set(generator, real.captions, real_rows, entry.folder, settings=settings,
                            images_per_caption=config.images_per_caption, seed=config.seed,
                            batch_size=config.batch_size, knobs=knobs, progress=config.progress,
                            loader_options=options, device=config.device, dtype=config.dtype)
    finally:
        del generator
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def default_feature_model(config: EvaluationConfig) -> str | None:
    """The model the feature backbone loads when ``feature_model`` is not given."""
    from dishgen.evaluate.features import DEFAULT_DINOV2_MODEL

    return {"clip": config.clip_model, "dinov2": DEFAULT_DINOV2_MODEL}.get(config.feature_backbone)


def _by_caption(image_set: ImageSet, real: ImageSet) -> list[Path | None]:
    """An image of a folder set for each real row, matched by caption (for the comparison grid)."""
    if image_set.captions is None:
        return list(image_set.paths[: len(real)])
    first: dict[str, Path] = {}
    for path, caption in zip(image_set.paths, image_set.captions, strict=True):
        first.setdefault(caption, path)
    return [first.get(c) for c in real.captions]


def _add_references(report, real, real_f, train_set, train_f, metrics, config, device=None) -> None:
    """Rows that calibrate the table: real photos against their captions, real train vs test."""
    if real_f.clip_image is not None:
        clip_only = [m for m in metrics if m in CLIP_METRICS]
        result = score(real_f, real_f, clip_only, bootstrap=config.bootstrap, seed=config.seed)
        report["references"].append({"component": f"real {config.split} photos", "kind": "reference", "step": None,
                                     "split": config.split, "n_generated": len(real), "metrics": result,
                                     "note": f"real photos of the {config.split!r} split scored against their own "
                                             "captions"})
    if train_f is not None and any(m in metrics for m in ("fid", "kid")):
        n = min(len(train_set), len(real) * config.images_per_caption)
        pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed))[:n]
        subset = SetFeatures(train_f.features[pick])
        result = score(real_f, subset, [m for m in metrics if m in ("fid", "kid")],
                       bootstrap=config.bootstrap, seed=config.seed, device=device)
        report["references"].append({"component": "real train photos", "kind": "reference", "step": None,
                                     "split": "train", "n_generated": n, "metrics": result,
                                     "note": f"real photos of the 'train' split scored as if generated, against the "
                                             f"{config.split!r} split: the FID/KID floor at this N"})


def _score_retrieval(dishes: DishIndex, entry: Entry, image_set: ImageSet, config: EvaluationConfig,
                     per_image: dict[str, Any]) -> dict[str, Any]:
    """Dish retrieval of one set: a model's images take the dish of the row they were generated for
    (K per row, caption-major); a folder's images the dish of the real photo whose caption they carry."""
    if entry.kind == "model":
        labels = dishes.labels.repeat_interleave(config.images_per_caption)
    else:
        labels = dishes.labels_for_captions(image_set.captions, len(image_set))
    if dishes.note is None and image_set.captions is None:
        return {"value": None, "ci": None, "skipped_images": len(image_set),
                "note": "no captions (no metadata.jsonl with 'text'): dish retrieval skipped"}
    scorable = dishes.note is None and bool((labels >= 0).any())
    descriptors = colour_descriptors(image_set, config.batch_size, config.progress) if scorable else None
    return dish_retrieval(dishes, descriptors, labels, bootstrap=config.bootstrap, seed=config.seed,
                          per_image=per_image)


def _add_retrieval_reference(report: dict, dishes: DishIndex, config: EvaluationConfig) -> None:
    """The real photos' own dish retrieval, each photo left out of its dish's prototype."""
    result = dish_retrieval_reference(dishes, bootstrap=config.bootstrap, seed=config.seed)
    if result is None:
        return
    report["references"].append({
        "component": f"real {config.split} photos, leave one out", "kind": "reference", "step": None,
        "split": config.split, "n_generated": result["n"], "metrics": {"dish_retrieval": result},
        "note": f"each real photo of the {config.split!r} split ranked by colour among its {result['dishes']} dishes, "
                "against prototypes built without it (photos that are their dish's only one are left out: "
                f"{result['left_out']}): optimistic, since a dish's photos are often the same plate from "
                "other angles"})


class _PixelCache:
    """Pixel statistics of the real and training photos, computed once per generated size; the
    first time a size is seen, the real photos' two halves are scored against each other."""

    def __init__(self, real: ImageSet, train: ImageSet | None, config: EvaluationConfig):
        self.real_set, self.train_set, self.config = real, train, config
        self._real: dict[int, PixelStats] = {}
        self._train: dict[int, PixelStats] = {}

    def real(self, size: int, report: dict) -> PixelStats:
        if size not in self._real:
            config = self.config
            stats = self._real[size] = pixel_stats(self.real_set, size, config.batch_size, config.progress)
            wanted = [m for m in report["metrics"] if m in PIXEL_METRICS]
            if wanted and len(self.real_set) >= 4:
                order = torch.randperm(len(self.real_set), generator=torch.Generator().manual_seed(config.seed))
                half_a, half_b = stats.subset(order[: len(order) // 2]), stats.subset(order[len(order) // 2 :])
                result = score_pixels(half_a, half_b, wanted, bootstrap=config.bootstrap, seed=config.seed)
                report["references"].append({
                    "component": f"real {config.split} photos, half vs half, {size} px", "kind": "reference",
                    "step": None, "split": config.split, "n_generated": len(order) - len(order) // 2,
                    "metrics": result,
                    "note": f"a seeded random half of the {config.split!r} photos against the other half, at {size} "
                            "px: the spectral distance, edge ratio and grid excess of two sets of real photos of this "
                            "size (N/2 each, so a little noisier than a model row at N)"})
        return self._real[size]

    def train(self, size: int) -> PixelStats | None:
        if self.train_set is None:
            return None
        if size not in self._train:
            self._train[size] = pixel_stats(self.train_set, size, self.config.batch_size, self.config.progress)
        return self._train[size]
