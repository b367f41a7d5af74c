"""Metrics as pure functions over feature tensors.

Every function takes features (``(N, D)`` tensors) or cosines (``(N,)``) and returns numbers; none
knows about files, models or the CLI, so each can be checked in isolation.

- FID and KID: the reported values come from torchmetrics (``FrechetInceptionDistance`` and
  ``KernelInceptionDistance`` with ``feature=<nn.Module>``), fed features that were extracted once.
  Bootstrap replicates use :func:`frechet_distance` and :func:`mmd_poly_unbiased`, exact
  re-statements of the same formulas that are fast enough to repeat hundreds of times.
- CLIPScore: ``100 * max(cos, 0)`` per image (torchmetrics' definition; Hessel et al. use 2.5
  instead of 100), the plain cosine, and the original project's ``(cos + 1) / 2 * 100``.
- Memorization: nearest-training-image distances of generated images against the same distances
  for real held-out images. Whether an image is a near-copy is decided in pixel detail
  (:func:`dishgen.evaluate.pixels.near_copies`), not by a distance alone.
- Retrieval: the rank of each image's own class (its caption's dish) among all classes, by the
  distance from its embedding to each class's mean embedding (prototype), and the same for real
  images against prototypes built without them (leave one out).
- The backbone-free signals (spectrum, edge energy, colour histograms) live in
  :mod:`dishgen.evaluate.pixels`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

# Below this many images FID is visibly biased (it falls as N grows) and noisy: only compare runs
# evaluated at the same N, and read the bootstrap interval.
MIN_STABLE_FID_N = 1000
MAX_KID_SUBSET_SIZE = 1000


class FeatureIdentity(nn.Module):
    """Passes precomputed features through, so torchmetrics can score cached features.

    Args:
        num_features: the feature dimension (read by torchmetrics instead of a dummy forward).
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _as_features(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim != 2:
        raise ValueError(f"{name} features must be a (N, D) tensor, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64)


# -- FID ----------------------------------------------------------------------------------------
def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between two feature sets, computed by torchmetrics.

    Args:
        real: ``(N_real, D)`` features of real images.
        fake: ``(N_fake, D)`` features of generated images.

    Returns:
        The FID (lower is better; 0 for identical sets).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {real.shape[0]} real and {fake.shape[0]} generated")
    metric = FrechetInceptionDistance(feature=FeatureIdentity(real.shape[1]), normalize=True)
    metric.set_dtype(torch.float64)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return max(float(metric.compute()), 0.0)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor, dtype: torch.dtype = torch.float64) -> float:
    """The same Fréchet distance as :func:`fid`, in a form fast enough for bootstrap replicates.

    With ``S1 = P^T P`` and ``S2 = Q^T Q`` (the centred samples, scaled), ``Tr sqrt(S1 S2)`` is the
    sum of the singular values of ``P Q^T``. A set larger than the feature dimension is first
    replaced by the ``R`` factor of its QR decomposition (same Gram matrix, D rows), so the SVD is
    of a ``min(N_real, D) x min(N_fake, D)`` matrix and no ``(D, D)`` non-symmetric eigenproblem
    is solved. ``dtype=torch.float32`` is about twice as fast and agrees to ~1e-6 relative (it is
    what the bootstrap replicates use).
    """
    real, fake = _as_features(real, "real").to(dtype), _as_features(fake, "fake").to(dtype)
    p = (real - real.mean(0)) / math.sqrt(real.shape[0] - 1)  # (N_real, D)
    q = (fake - fake.mean(0)) / math.sqrt(fake.shape[0] - 1)  # (N_fake, D)
    mean_term = (real.mean(0) - fake.mean(0)).square().sum()
    trace_sqrt = torch.linalg.svdvals(_compact(p) @ _compact(q).T).sum()
    return max(float(mean_term + p.square().sum() + q.square().sum() - 2 * trace_sqrt), 0.0)


def _compact(x: torch.Tensor) -> torch.Tensor:
    """A matrix with the same ``x^T x`` and at most ``D`` rows."""
    return torch.linalg.qr(x, mode="r").R if x.shape[0] > x.shape[1] else x


# -- KID ----------------------------------------------------------------------------------------
def kid_subset_size(n_real: int, n_fake: int, maximum: int = MAX_KID_SUBSET_SIZE) -> int:
    """The KID subset size for these set sizes: torchmetrics' 1000, or all images when fewer."""
    return max(2, min(maximum, n_real, n_fake))


def kid(
    real: torch.Tensor, fake: torch.Tensor, *, subset_size: int | None = None, subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (cubic polynomial kernel MMD), computed by torchmetrics.

    Args:
        real: ``(N_real, D)`` features of real images.
        fake: ``(N_fake, D)`` features of generated images.
        subset_size: images per subset; default :func:`kid_subset_size` (adapted to N).
        subsets: number of random subsets averaged.
        seed: seeds the subset draws, so the value is repeatable.

    Returns:
        ``(mean, std)`` over the subsets.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {real.shape[0]} real and {fake.shape[0]} generated")
    size = subset_size or kid_subset_size(real.shape[0], fake.shape[0])
    with warnings.catch_warnings():  # "will save all extracted features": that is the point here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=FeatureIdentity(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def mmd_poly_unbiased(real: torch.Tensor, fake: torch.Tensor, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD² with the kernel ``(x.y / D + coef) ** degree`` (KID on one subset)."""
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    m, n, dim = real.shape[0], fake.shape[0], real.shape[1]
    k_xx = (real @ real.T / dim + coef) ** degree
    k_yy = (fake @ fake.T / dim + coef) ** degree
    k_xy = (real @ fake.T / dim + coef) ** degree
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * k_xy.mean())


# -- CLIP ---------------------------------------------------------------------------------------
def clip_cosine(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine between each image embedding and its own caption's embedding: ``(N,)``."""
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(f"image and text embeddings differ in shape: {tuple(image_embeds.shape)} vs {tuple(text_embeds.shape)}")
    return nn.functional.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)


def clip_score(cosine: torch.Tensor) -> torch.Tensor:
    """Standard CLIPScore per image: ``100 * max(cos, 0)`` (torchmetrics' scale)."""
    return 100 * cosine.clamp(min=0)


def clip_score_rescaled(cosine: torch.Tensor) -> torch.Tensor:
    """The original project's "CLIPScore", ``(cos + 1) / 2 * 100``: a rescaled cosine, for comparison."""
    return (cosine + 1) / 2 * 100


# -- memorization -------------------------------------------------------------------------------
def nearest_distances(
    queries: torch.Tensor, reference: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine distance from each query to its nearest reference feature.

    Returns:
        ``(distances, indices)``, each ``(N_queries,)``; distances are ``1 - cos`` in [0, 2].
    """
    distances, indices = nearest_k(queries, reference, 1, chunk)
    return distances[:, 0], indices[:, 0]


def nearest_k(
    queries: torch.Tensor, reference: torch.Tensor, k: int, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine distances from each query to its ``k`` nearest reference features, nearest first.

    Returns:
        ``(distances, indices)``, each ``(N_queries, min(k, N_reference))``.
    """
    ref = nn.functional.normalize(reference.float(), dim=-1)
    k = min(k, ref.shape[0])
    dists, idxs = [], []
    for start in range(0, queries.shape[0], chunk):
        q = nn.functional.normalize(queries[start : start + chunk].float(), dim=-1)
        best = (q @ ref.T).topk(k, dim=1)
        dists.append(1 - best.values)
        idxs.append(best.indices)
    return torch.cat(dists).clamp(min=0), torch.cat(idxs)


def memorization_ratio(generated_distances: torch.Tensor, real_distances: torch.Tensor) -> float:
    """Median nearest-training distance of generated images over that of real held-out images.

    About 1: generated images are as far from the training set as new real photos are. Well below
    1: the model reproduces training images.
    """
    real_median = float(real_distances.median())
    if real_median <= 0:
        return float("nan")
    return float(generated_distances.median()) / real_median


# -- retrieval ----------------------------------------------------------------------------------
def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean embedding of each class.

    Args:
        embeddings: ``(N, D)``; rows of ``nan`` (no descriptor) are left out.
        labels: ``(N,)`` class of each row in ``0 .. num_classes - 1``, or ``-1`` for none (left out).
        num_classes: ``C``.

    Returns:
        ``(prototypes, counts)``: ``(C, D)`` float64 means (``nan`` for a class without a member)
        and ``(C,)`` the members each mean was taken over.
    """
    keep = (labels >= 0) & ~embeddings.isnan().any(1)
    members, classes = embeddings[keep].to(torch.float64), labels[keep]
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=torch.float64).index_add_(0, classes, members)
    counts = torch.bincount(classes, minlength=num_classes)
    return sums / counts.unsqueeze(1), counts  # 0 / 0 = nan for an empty class


def _rank_of_own(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Other classes at least as close as the own class: ``(N, C)`` distances -> ``(N,)``."""
    own = distances.gather(1, labels.unsqueeze(1))  # (N, 1)
    return (distances <= own).sum(1) - 1


def retrieval_ranks(queries: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """The rank of each query's own class among all classes, by Euclidean distance to the prototypes.

    The rank is the number of *other* classes whose prototype is at least as close to the query as
    its own class's: 0 when its own class is the nearest (a top-1 hit), ``C - 1`` when it is the
    farthest. Ties count against the query, so a descriptor that is equally far from every class
    cannot score a hit. Classes whose prototype is ``nan`` (no member) are not ranked; a query
    whose embedding is ``nan`` (an image with no descriptor) gets the worst rank.

    Args:
        queries: ``(N, D)`` embeddings.
        labels: ``(N,)`` each query's own class, which must have a prototype.
        prototypes: ``(C, D)`` from :func:`class_prototypes`.

    Returns:
        ``(N,)`` long ranks in ``0 .. C' - 1``, ``C'`` the classes with a prototype. Chance (a
        random class order) gives a mean rank of ``(C' - 1) / 2``.
    """
    ranked = ~prototypes.isnan().any(1)
    if labels.numel() and ((labels < 0).any() or not ranked[labels].all()):
        raise ValueError("every query's class must have a prototype (a label >= 0 with at least one member)")
    distances = torch.cdist(queries.to(torch.float64), prototypes.nan_to_num(0.0),
                            compute_mode="donot_use_mm_for_euclid_dist")  # (N, C), exact
    distances[:, ~ranked] = float("inf")
    ranks = _rank_of_own(distances, labels)
    ranks[queries.isnan().any(1)] = int(ranked.sum()) - 1
    return ranks


def leave_one_out_ranks(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """:func:`retrieval_ranks` of each embedding against prototypes built without it.

    The embedding's own class prototype is the mean of the class's *other* members; every other
    class keeps its full prototype. All classes with a member are ranked.

    Args:
        embeddings: ``(N, D)``.
        labels: ``(N,)`` classes in ``0 .. num_classes - 1``, or ``-1`` for none.
        num_classes: ``C``.

    Returns:
        ``(N,)`` long ranks; ``-1`` for a row that cannot be ranked: no class, a ``nan`` embedding,
        or the only member of its class (without it, its class has no prototype to be found by).
    """
    prototypes, counts = class_prototypes(embeddings, labels, num_classes)
    x = embeddings.to(torch.float64)
    usable = (labels >= 0) & ~x.isnan().any(1)
    usable &= counts[labels.clamp(min=0)] >= 2
    ranks = torch.full(labels.shape, -1, dtype=torch.long)
    if not usable.any():
        return ranks
    x, own = x[usable], labels[usable]
    n = counts[own].to(torch.float64).unsqueeze(1)  # (M, 1)
    without = (prototypes[own] * n - x) / (n - 1)  # the own class's mean without this member
    distances = torch.cdist(x, prototypes.nan_to_num(0.0), compute_mode="donot_use_mm_for_euclid_dist")
    distances[:, counts == 0] = float("inf")
    distances.scatter_(1, own.unsqueeze(1), (x - without).norm(dim=1, keepdim=True))
    ranks[usable] = _rank_of_own(distances, own)
    return ranks


# -- uncertainty --------------------------------------------------------------------------------
def bootstrap_ci(
    statistic: Callable[..., float],
    samples: Sequence[torch.Tensor],
    *,
    n_resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap confidence interval of ``statistic(*samples)``.

    Each sample (the real set, the generated set...) is resampled with replacement on its own
    first axis.

    Args:
        statistic: maps the samples to one number.
        samples: tensors resampled independently.
        n_resamples: bootstrap replicates.
        confidence: the interval's coverage.
        seed: seeds the resampling.
        method: ``percentile``, or ``centred``: the percentile interval shifted so that the
            bootstrap median sits on the point estimate. Use ``centred`` for a statistic that
            resampling with replacement biases, such as FID and KID: duplicated images make a
            resample look less diverse, which moves every replicate up by about the same amount.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n_resamples`` is 0.
    """
    if n_resamples <= 0:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n_resamples):
        picks = [s[torch.randint(0, s.shape[0], (s.shape[0],), generator=generator)] for s in samples]
        values.append(statistic(*picks))
    values_t = torch.tensor(values, dtype=torch.float64)
    values_t = values_t[torch.isfinite(values_t)]
    if values_t.numel() == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low, high = (float(v) for v in torch.quantile(values_t, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)))
    if method == "centred":
        shift = float(values_t.median()) - statistic(*samples)
        return low - shift, high - shift
    if method != "percentile":
        raise ValueError(f"unknown bootstrap method {method!r}; use 'percentile' or 'centred'")
    return low, high


def sample_size_warnings(n_real: int, n_fake: int, feature_dim: int) -> list[str]:
    """Warnings for set sizes that make FID unstable or its covariances rank-deficient."""
    found = []
    n = min(n_real, n_fake)
    if n < MIN_STABLE_FID_N:
        found.append(
            f"only {n} images in the smaller set (real {n_real}, generated {n_fake}): FID is biased upward "
            f"and noisy below ~{MIN_STABLE_FID_N} (50,000 is the standard); compare models only at equal N "
            "and read the bootstrap intervals"
        )
    if n <= feature_dim:
        found.append(
            f"N = {n} is not above the feature dimension {feature_dim}: the covariance matrices are "
            "rank-deficient, so FID mostly measures the mean and the spread within N directions"
        )
    return found
