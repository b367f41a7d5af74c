"""Scoring one image set: its features (one decode and resize path), then every metric.

:func:`set_features` runs the feature network and CLIP over an image set in batches;
:func:`score` turns the features of a generated set and of the real reference into the report's
numbers, each with its bootstrap interval. The formulas themselves live in
:mod:`dishgen.evaluate.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dishgen.evaluate import metrics as M
from dishgen.evaluate.features import ClipEmbedder, extract_features
from dishgen.evaluate.imagesets import ImageSet, load_batch

CLIP_METRICS = ("clip-score", "clip-cosine")


@dataclass
class SetFeatures:
    """What the metrics need of one image set."""

    features: torch.Tensor  # (N, D) feature-network features
    clip_image: torch.Tensor | None = None  # (N, P) CLIP image embeddings
    clip_text: torch.Tensor | None = None  # (N, P) CLIP embeddings of each image's caption


def set_features(
    image_set: ImageSet, network: torch.nn.Module, clip: ClipEmbedder | None, size: int,
    batch_size: int, text_cache: dict[str, torch.Tensor], progress: bool = False,
) -> SetFeatures:
    """Decode ``image_set`` in batches (one resize path) and run the feature and CLIP networks."""
    from tqdm.auto import tqdm

    feats, clip_feats = [], []
    starts = range(0, len(image_set), batch_size)
    for start in tqdm(starts, desc=f"features {image_set.name}", unit="batch", disable=not progress):
        images = load_batch(image_set.paths[start : start + batch_size], size)  # (B, 3, S, S) uint8
        feats.append(extract_features(network, images, batch_size))
        if clip is not None:  # with the clip backbone, the FID features are the CLIP embeddings
            same = network is clip.image_features
            clip_feats.append(feats[-1] if same else extract_features(clip.image_features, images, batch_size))
    result = SetFeatures(torch.cat(feats))
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
) -> dict[str, dict[str, Any]]:
    """Every requested metric of ``fake`` against ``real``, each with a bootstrap interval.

    Args:
        real: features of the real reference images.
        fake: features of the images being judged.
        metrics: names from :data:`METRICS`.
        train: ``(N_train, D)`` training features, for memorization.
        bootstrap: resamples per interval.
        seed: seeds KID subsets and the resampling.
        per_image: if given, filled with per-image values (``clip_cosine``,
            ``nearest_train_distance``, ``nearest_train_index``) for a per-image listing.
        device: where the FID and KID bootstrap replicates run (a GPU makes them fast).

    Returns:
        ``{metric: {"value": ..., "ci": [low, high] | None, ...}}``.
    """
    out: dict[str, dict[str, Any]] = {}
    r, f = real.features, fake.features
    r_dev, f_dev = r.to(device or "cpu"), f.to(device or "cpu")
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
    if "memorization" in metrics and train is not None:
        gen_d, gen_idx = M.nearest_distances(f, train)
        real_d, _ = M.nearest_distances(r, train)
        if per_image is not None:
            per_image.update(nearest_train_distance=gen_d, nearest_train_index=gen_idx)
        low, high = M.bootstrap_ci(M.memorization_ratio, [gen_d, real_d], n_resamples=bootstrap, seed=seed)
        threshold = float(torch.quantile(real_d.double(), 0.05))
        order = torch.argsort(gen_d)[:5].tolist()
        out["memorization"] = {
            "value": M.memorization_ratio(gen_d, real_d), "ci": _interval(low, high),
            "generated_median_distance": float(gen_d.median()), "real_median_distance": float(real_d.median()),
            # Share of generated images closer to a training image than 95% of real test photos
            # are: about 0.05 for a model that does not copy.
            "near_copy_rate": float((gen_d < threshold).double().mean()),
            "closest": [{"index": i, "train_index": int(gen_idx[i]), "distance": float(gen_d[i])} for i in order],
        }
    return out
