"""Scoring one image set: its features (one decode and resize path), then every metric.

:func:`set_features` runs the feature network and CLIP over an image set in batches;
:func:`score` turns the features of a generated set and of the real reference into the report's
numbers, each with its bootstrap interval. :func:`pixel_stats` computes the backbone-free
statistics of a set at one size (spectra, edge energy, grid, thumbnails, detail maps).
:class:`DishIndex` holds the real photos' colour histograms by dish, against which
:func:`dish_retrieval` ranks generated images (and :func:`dish_retrieval_reference` the real photos
themselves, leaving each out). The formulas themselves live in :mod:`dishgen.evaluate.metrics` and
:mod:`dishgen.evaluate.pixels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dishgen.evaluate import metrics as M
from dishgen.evaluate import pixels as P
from dishgen.evaluate.features import ClipEmbedder, extract_features
from dishgen.evaluate.imagesets import ImageSet, load_batch

CLIP_METRICS = ("clip-score", "clip-cosine")
PIXEL_METRICS = ("spectral", "edges", "grid")  # need no network at all
RETRIEVAL_METRIC = "retrieval"  # needs no network either; computed at pixels.DESCRIPTOR_SIZE, not per size
RETRIEVAL_TOP_K = 5  # the second accuracy reported besides top-1


@dataclass
class PixelStats:
    """Backbone-free statistics of one image set, every image resized to ``size`` px."""

    size: int
    spectra: torch.Tensor  # (N, R) log power per radius
    edges: torch.Tensor  # (N,) gradient energy inside the dish (nan: no dish)
    foreground: torch.Tensor  # (N,) share of the image that is dish
    thumbnails: torch.Tensor  # (N, 768) mean-centred 16 px colour thumbnails
    details: torch.Tensor  # (N, 64, 64) detail maps for the near-copy test
    detail_energy: torch.Tensor  # (N,)
    grid: torch.Tensor  # (N,) log power on the frequency axes over off them (like radii)

    def subset(self, index: torch.Tensor) -> PixelStats:
        """The statistics of the images at ``index``."""
        return PixelStats(self.size, *(getattr(self, k)[index] for k in
                                       ("spectra", "edges", "foreground", "thumbnails", "details", "detail_energy",
                                        "grid")))


def pixel_stats(image_set: ImageSet, size: int, batch_size: int = 64, progress: bool = False) -> PixelStats:
    """Decode ``image_set`` at ``size`` px (the one resize path) and compute its pixel statistics."""
    from tqdm.auto import tqdm

    parts: list[tuple[torch.Tensor, ...]] = []
    starts = range(0, len(image_set), batch_size)
    for start in tqdm(starts, desc=f"pixels {image_set.name} @{size}", unit="batch", disable=not progress):
        images = load_batch(image_set.paths[start : start + batch_size], size)  # (B, 3, S, S) uint8
        edges, foreground = P.edge_energy(images)
        details, energy = P.detail_maps(images)
        parts.append((P.radial_log_spectrum(images), edges, foreground, P.thumbnails(images), details, energy,
                      P.grid_log_ratio(images)))
    return PixelStats(size, *(torch.cat(column) for column in zip(*parts, strict=True)))


@dataclass
class SetFeatures:
    """What the metrics need of one image set."""

    features: torch.Tensor | None  # (N, D) feature-network features (None: no network loaded)
    clip_image: torch.Tensor | None = None  # (N, P) CLIP image embeddings
    clip_text: torch.Tensor | None = None  # (N, P) CLIP embeddings of each image's caption


def set_features(
    image_set: ImageSet, network: torch.nn.Module, clip: ClipEmbedder | None, size: int,
    batch_size: int, text_cache: dict[str, torch.Tensor], progress: bool = False,
) -> SetFeatures:
    """Decode ``image_set`` in batches (one resize path) and run the feature and CLIP networks."""
    from tqdm.auto import tqdm

    if network is None and clip is None:
        return SetFeatures(None)
    feats, clip_feats = [], []
    starts = range(0, len(image_set), batch_size)
    for start in tqdm(starts, desc=f"features {image_set.name}", unit="batch", disable=not progress):
        images = load_batch(image_set.paths[start : start + batch_size], size)  # (B, 3, S, S) uint8
        if network is not None:
            feats.append(extract_features(network, images, batch_size))
        if clip is not None:  # with the clip backbone, the FID features are the CLIP embeddings
            same = network is clip.image_features
            clip_feats.append(feats[-1] if same else extract_features(clip.image_features, images, batch_size))
    result = SetFeatures(torch.cat(feats) if feats else None)
    if clip is not None and image_set.captions is not None:
        missing = sorted({c for c in image_set.captions if c not in text_cache})
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            text_cache.update(zip(chunk, clip.encode_texts(chunk).cpu(), strict=True))
        result.clip_image = torch.cat(clip_feats)
        result.clip_text = torch.stack([text_cache[c] for c in image_set.captions])
    return result


def _interval(low: float, high: float) -> list[float] | None:
    return None if low != low else [low, high]  # nan -> None


def score(
    real: SetFeatures, fake: SetFeatures, metrics: list[str], *, train: torch.Tensor | None = None,
    bootstrap: int = 200, seed: int = 0, per_image: dict[str, torch.Tensor] | None = None, device=None,
    real_pixels: PixelStats | None = None, fake_pixels: PixelStats | None = None,
    train_pixels: PixelStats | None = None,
) -> dict[str, dict[str, Any]]:
    """Every requested metric of ``fake`` against ``real``, each with a bootstrap interval.

    Args:
        real: features of the real reference images.
        fake: features of the images being judged.
        metrics: names from :data:`METRICS`.
        train: ``(N_train, D)`` training features, the space in which memorization looks for
            the nearest training photos (``None``: the thumbnail space of ``train_pixels``).
        bootstrap: resamples per interval.
        seed: seeds KID subsets and the resampling.
        per_image: if given, filled with per-image values (``clip_cosine``,
            ``nearest_train_distance``, ``nearest_train_index``) for a per-image listing.
        device: where the FID and KID bootstrap replicates run (a GPU makes them fast).
        real_pixels: pixel statistics of the real images at the generated size (spectral,
            edges, and the calibration of memorization).
        fake_pixels: pixel statistics of the generated images, at the same size.
        train_pixels: pixel statistics of the training images at that size (memorization).

    Returns:
        ``{metric: {"value": ..., "ci": [low, high] | None, ...}}``.
    """
    out: dict[str, dict[str, Any]] = {}
    r, f = real.features, fake.features
    if "fid" in metrics or "kid" in metrics:
        r_dev, f_dev = r.to(device or "cpu"), f.to(device or "cpu")
    if fake_pixels is not None and real_pixels is not None:
        out.update(score_pixels(real_pixels, fake_pixels, metrics, bootstrap=bootstrap, seed=seed))
    if "fid" in metrics:
        value = M.fid(r, f)

        def fid_stat(a, b):  # float32 replicates: twice as fast, 1e-6 relative to float64
            return M.frechet_distance(a, b, dtype=torch.float32)

        low, high = M.bootstrap_ci(fid_stat, [r_dev, f_dev], n_resamples=bootstrap, seed=seed, method="centred")
        out["fid"] = {"value": value, "ci": _interval(max(low, 0.0), high)}
    if "kid" in metrics:
        size = M.kid_subset_size(len(r), len(f))
        mean, std = M.kid(r, f, subset_size=size, seed=seed)

        def kid_stat(a, b, cap=2000):  # the unbiased MMD on (at most 2000 of) each resample
            return M.mmd_poly_unbiased(a[:cap], b[:cap])

        low, high = M.bootstrap_ci(kid_stat, [r_dev, f_dev], n_resamples=bootstrap, seed=seed, method="centred")
        out["kid"] = {"value": mean, "std": std, "subset_size": size, "ci": _interval(low, high)}
    if fake.clip_image is not None and any(m in metrics for m in CLIP_METRICS):
        cosine = M.clip_cosine(fake.clip_image, fake.clip_text).double()
        if per_image is not None:
            per_image["clip_cosine"] = cosine
        values_by_name = {"clip_cosine": cosine}
        if "clip-score" in metrics:
            values_by_name["clip_score"] = M.clip_score(cosine)
            values_by_name["clip_score_rescaled"] = M.clip_score_rescaled(cosine)
        if "clip-cosine" not in metrics:
            values_by_name.pop("clip_cosine")
        for name, values in values_by_name.items():
            low, high = M.bootstrap_ci(lambda v: float(v.mean()), [values], n_resamples=bootstrap, seed=seed)
            out[name] = {"value": float(values.mean()), "ci": _interval(low, high)}
    if "memorization" in metrics and train_pixels is not None and fake_pixels is not None:
        out["memorization"] = memorization(real_pixels, fake_pixels, train_pixels, r if train is not None else None,
                                           f if train is not None else None, train, bootstrap=bootstrap, seed=seed,
                                           per_image=per_image)
    return out


def score_pixels(real: PixelStats, fake: PixelStats, metrics: list[str], *, bootstrap: int = 200,
                 seed: int = 0) -> dict[str, dict[str, Any]]:
    """The backbone-free signals of ``fake`` against ``real`` (both at the generated size)."""
    out: dict[str, dict[str, Any]] = {}
    if real.size != fake.size:
        raise ValueError(f"pixel statistics at {real.size} and {fake.size} px: compute both at the generated size")
    if "spectral" in metrics:
        profile = P.spectrum_profile(real.spectra, fake.spectra)
        low_band, high_band = P.spectrum_profile_interval(real.spectra, fake.spectra)
        value = P.spectral_distance(real.spectra, fake.spectra)
        low, high = M.bootstrap_ci(P.spectral_distance, [real.spectra, fake.spectra], n_resamples=bootstrap,
                                   seed=seed, method="centred")
        out["spectral_distance"] = {
            "value": value, "ci": _interval(max(low, 0.0), high), "image_size": fake.size,
            "bands": P.band_means(profile, fake.size),
            "frequencies": [round(x, 5) for x in P.radial_frequencies(len(profile), fake.size).tolist()],
            "profile": profile.tolist(), "profile_ci": [low_band.tolist(), high_band.tolist()],
        }
    def with_interval(statistic, real_values, fake_values) -> dict:
        low, high = M.bootstrap_ci(statistic, [real_values, fake_values], n_resamples=bootstrap, seed=seed)
        return {"value": statistic(real_values, fake_values), "ci": _interval(low, high), "image_size": fake.size}

    if "edges" in metrics:
        out["edge_ratio"] = {
            **with_interval(P.edge_ratio, real.edges, fake.edges),
            "generated_edge_energy": float(fake.edges.nanmean()), "real_edge_energy": float(real.edges.nanmean()),
            "generated_foreground": float(fake.foreground.mean()), "real_foreground": float(real.foreground.mean()),
            "images_without_dish": int(fake.edges.isnan().sum()),
        }
    if "grid" in metrics:
        out["grid_excess"] = {
            **with_interval(P.grid_excess, real.grid, fake.grid),
            "generated_grid": float(fake.grid.mean()), "real_grid": float(real.grid.mean()),
        }
    return out


def memorization(
    real: PixelStats, fake: PixelStats, train: PixelStats, real_features: torch.Tensor | None = None,
    fake_features: torch.Tensor | None = None, train_features: torch.Tensor | None = None, *,
    bootstrap: int = 200, seed: int = 0, per_image: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """How close generated images come to training photos, and which of them are near-copies.

    The nearest training photos are searched in the feature space when features are given, else
    in the thumbnail space; the distance ratio is computed there. Whether an image is a
    near-copy is decided by the detail test (:func:`dishgen.evaluate.pixels.near_copies`) against
    its :data:`~dishgen.evaluate.pixels.COPY_CANDIDATES` nearest training photos, so a blurry
    average close to everything is not called a copy. Real test photos go through the same test:
    their near-copy rate is the test's false-positive rate on genuinely new photos.
    """
    space = "features" if train_features is not None else "thumbnails"
    if train_features is None:
        real_features, fake_features, train_features = real.thumbnails, fake.thumbnails, train.thumbnails
    gen_k, gen_idx_k = M.nearest_k(fake_features, train_features, P.COPY_CANDIDATES)
    real_k, real_idx_k = M.nearest_k(real_features, train_features, P.COPY_CANDIDATES)
    gen_d, gen_idx, real_d = gen_k[:, 0], gen_idx_k[:, 0], real_k[:, 0]
    low, high = M.bootstrap_ci(M.memorization_ratio, [gen_d, real_d], n_resamples=bootstrap, seed=seed)
    threshold = float(torch.quantile(real_d.double(), 0.05))

    def copy_test(stats: PixelStats, candidates: torch.Tensor):
        cosine, match = P.best_detail_match(stats.details, train.details, candidates)
        energy_ratio = stats.detail_energy / train.detail_energy[match].clamp(min=1e-12)
        return P.near_copies(cosine, energy_ratio), cosine, energy_ratio, match

    copies, cosine, energy_ratio, match = copy_test(fake, gen_idx_k)
    real_copies = copy_test(real, real_idx_k)[0]
    if per_image is not None:
        per_image.update(nearest_train_distance=gen_d, nearest_train_index=gen_idx, near_copy=copies,
                         copy_match_index=match, detail_cosine=cosine, detail_energy_ratio=energy_ratio)
    # Confirmed copies first, then the closest in the search space.
    order = sorted(range(len(gen_d)), key=lambda i: (not bool(copies[i]), float(gen_d[i])))[:5]
    return {
        "value": M.memorization_ratio(gen_d, real_d), "ci": _interval(low, high), "space": space,
        "image_size": fake.size,
        "generated_median_distance": float(gen_d.median()), "real_median_distance": float(real_d.median()),
        # Share that passes the detail test (a copy of one training photo): about 0 for a model
        # that does not copy (the real test photos' own rate says how often the test errs).
        "near_copy_rate": float(copies.double().mean()), "near_copies": int(copies.sum()),
        "real_near_copy_rate": float(real_copies.double().mean()),
        # Share closer (in the search space) than 95% of real test photos are: about 0.05 when
        # generated images are as novel as photos; a blurry average can push it up without copying.
        "candidate_rate": float((gen_d < threshold).double().mean()),
        "closest": [{"index": i, "train_index": int(match[i]) if copies[i] else int(gen_idx[i]),
                     "distance": float(gen_d[i]), "detail_cosine": float(cosine[i]),
                     "energy_ratio": float(energy_ratio[i]), "near_copy": bool(copies[i])} for i in order],
    }


# -- dish retrieval -----------------------------------------------------------------------------
def colour_descriptors(image_set: ImageSet, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Decode ``image_set`` at :data:`~dishgen.evaluate.pixels.DESCRIPTOR_SIZE` px (the one resize
    path) and compute each image's colour histogram: ``(N, 64)``, ``nan`` rows for images with no dish."""
    from tqdm.auto import tqdm

    parts = []
    starts = range(0, len(image_set), batch_size)
    for start in tqdm(starts, desc=f"colours {image_set.name}", unit="batch", disable=not progress):
        parts.append(P.colour_histograms(load_batch(image_set.paths[start : start + batch_size], P.DESCRIPTOR_SIZE)))
    return torch.cat(parts)


@dataclass
class DishIndex:
    """The real photos' colour histograms grouped by dish: what dish retrieval ranks against.

    Attributes:
        names: the dishes that have a prototype, sorted.
        labels: ``(N_real,)`` each real photo's dish (index into ``names``), ``-1`` for none.
        descriptors: ``(N_real, 64)`` the real photos' colour histograms.
        prototypes: ``(D, 64)`` the mean histogram of each dish's photos.
        by_caption: caption -> dish, for the captions of the real photos that name one dish only.
        note: why retrieval is skipped (fewer than 2 dishes with a name and a photo), else ``None``.
    """

    names: list[str]
    labels: torch.Tensor
    descriptors: torch.Tensor
    prototypes: torch.Tensor
    by_caption: dict[str, int]
    note: str | None = None

    @classmethod
    def build(cls, real: ImageSet, dishes: list[str], batch_size: int = 64, progress: bool = False) -> DishIndex:
        """Index the real photos of ``real``, ``dishes[i]`` the dish of photo ``i`` (``""``: unnamed).

        A dish counts when it has a name and at least one photo with dish pixels (a blank photo
        has no colour). With fewer than 2 such dishes, the index is empty and says why in ``note``.
        """
        empty = torch.empty(0, P.COLOUR_BINS**3)
        named = sorted(set(dishes) - {""})
        descriptors = colour_descriptors(real, batch_size, progress) if len(named) >= 2 else empty
        if len(named) >= 2:  # only dishes with a photo that has dish pixels get a prototype
            has_colour = (~descriptors.isnan().any(1)).tolist()
            named = sorted({d for d, ok in zip(dishes, has_colour, strict=True) if d and ok})
        if len(named) < 2:
            note = (f"dish retrieval skipped: the {real.name} has {len(named)} named dish(es) with a non-blank "
                    "photo (the rows' 'dish' field); ranking a picture's dish needs at least 2")
            return cls(named, torch.full((len(dishes),), -1), empty, empty, {}, note)
        number = {d: i for i, d in enumerate(named)}
        labels = torch.tensor([number.get(d, -1) for d in dishes])
        prototypes, _ = M.class_prototypes(descriptors, labels, len(named))
        captions: dict[str, set[int]] = {}
        for caption, label in zip(real.captions or [], labels.tolist(), strict=False):
            if label >= 0:
                captions.setdefault(caption.strip(), set()).add(label)
        by_caption = {c: next(iter(found)) for c, found in captions.items() if len(found) == 1}
        return cls(named, labels, descriptors, prototypes, by_caption)

    def labels_for_captions(self, captions: list[str] | None, count: int) -> torch.Tensor:
        """The dish of each of ``count`` images from its caption; ``-1`` where the caption is not one of
        the real photos' captions (or names two dishes), or where there are no captions."""
        if captions is None:
            return torch.full((count,), -1)
        return torch.tensor([self.by_caption.get(c.strip(), -1) for c in captions])


def _retrieval_summary(ranks: torch.Tensor, num_dishes: int, *, bootstrap: int, seed: int) -> dict[str, Any]:
    """Top-1 (the ``value``), top-5 and mean rank of ``ranks``, each with a percentile bootstrap interval."""
    k = RETRIEVAL_TOP_K
    statistics = {"top1": lambda r: float((r == 0).double().mean()),
                  f"top{k}": lambda r: float((r < k).double().mean()),
                  "mean_rank": lambda r: float(r.double().mean())}
    found = {}
    for name, statistic in statistics.items():
        low, high = M.bootstrap_ci(statistic, [ranks], n_resamples=bootstrap, seed=seed)
        found[name] = {"value": statistic(ranks), "ci": _interval(low, high)}
    return {
        **found.pop("top1"), **found, "n": int(ranks.numel()), "dishes": num_dishes,
        "chance": {"top1": 1 / num_dishes, f"top{k}": min(k, num_dishes) / num_dishes,
                   "mean_rank": (num_dishes - 1) / 2},
        "image_size": P.DESCRIPTOR_SIZE,
    }


def dish_retrieval(index: DishIndex, descriptors: torch.Tensor, labels: torch.Tensor, *, bootstrap: int = 200,
                   seed: int = 0, per_image: dict[str, Any] | None = None) -> dict[str, Any]:
    """How well each generated image's colours point to its caption's dish among all dishes.

    Args:
        index: the real photos by dish.
        descriptors: ``(N, 64)`` colour histograms of the generated images.
        labels: ``(N,)`` each image's dish (from its caption's row), ``-1`` where unknown: those
            images are skipped and counted.
        bootstrap: resamples per interval (over the ranked images; the prototypes stay fixed).
        seed: seeds the resampling.
        per_image: if given, filled with ``dish_rank`` (``-1``: not ranked), ``dish_label`` and
            ``nearest_dish_label`` (``-1``: none) and the ``dish_names`` they index.

    Returns:
        ``{"value": top-1 accuracy, "ci", "top5": {"value", "ci"}, "mean_rank": {"value", "ci"},
        "n", "dishes", "chance": {...}, "skipped_images", "images_without_dish", "image_size"}``;
        ``{"value": None, "ci": None, "note": why}`` when nothing can be ranked.
    """
    if index.note:
        return {"value": None, "ci": None, "note": index.note}
    matched = labels >= 0
    if not matched.any():
        return {"value": None, "ci": None, "skipped_images": len(labels),
                "note": "dish retrieval skipped: no image's caption is the caption of a real photo with a dish"}
    ranks = M.retrieval_ranks(descriptors[matched], labels[matched], index.prototypes)
    if per_image is not None:
        all_ranks = torch.full(labels.shape, -1, dtype=torch.long)
        all_ranks[matched] = ranks
        distances = torch.cdist(descriptors.nan_to_num(0.0), index.prototypes)  # nan rows: reset below
        nearest = distances.argmin(1)
        nearest[descriptors.isnan().any(1)] = -1
        per_image.update(dish_rank=all_ranks, dish_label=labels, nearest_dish_label=nearest, dish_names=index.names)
    return {**_retrieval_summary(ranks, len(index.names), bootstrap=bootstrap, seed=seed),
            "skipped_images": int((~matched).sum()),
            "images_without_dish": int(descriptors[matched].isnan().any(1).sum())}


def dish_retrieval_reference(index: DishIndex, *, bootstrap: int = 200, seed: int = 0) -> dict[str, Any] | None:
    """Dish retrieval of the real photos themselves, each against prototypes built without it.

    Photos that are their dish's only photo are left out (without them their dish has no
    prototype) and counted in ``left_out``. ``None`` when no photo can be ranked.
    """
    if index.note:
        return None
    ranks = M.leave_one_out_ranks(index.descriptors, index.labels, len(index.names))
    ranked = ranks >= 0
    if not ranked.any():
        return None
    return {**_retrieval_summary(ranks[ranked], len(index.names), bootstrap=bootstrap, seed=seed),
            "left_out": int((~ranked).sum())}
