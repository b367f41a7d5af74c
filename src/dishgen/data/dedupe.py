"""De-duplication: exact (content hash) and near-duplicate (perceptual hash, Hamming distance).

Pure functions over hashes, so they are cheap to test: clusters are found with union-find over
all pairs within the threshold (blocked, vectorised NumPy popcounts; 10,000 images compare in
about a second), and one representative per cluster is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dishgen.errors import DishgenError

HASH_BITS = 64  # imagehash.phash with its default hash_size 8


class DedupeError(DishgenError, ValueError):
    """A threshold or a hash that de-duplication cannot work with."""


def check_threshold(threshold: object) -> int:
    """``threshold`` as an int in ``[-1, 64]`` (``-1``: exact duplicates only), or :class:`DedupeError`."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not -1 <= threshold <= HASH_BITS:
        raise DedupeError(
            f"dedupe threshold must be an integer from -1 to {HASH_BITS} (pHash bits that may differ; "
            f"-1 merges exact duplicates only), got {threshold!r}"
        )
    return int(threshold)


def _hash_ints(phashes: Sequence[str]) -> np.ndarray:
    values = []
    for index, text in enumerate(phashes):
        try:
            value = int(text, 16)
        except (TypeError, ValueError):
            value = -1
        if not 0 <= value < 1 << HASH_BITS:
            raise DedupeError(
                f"perceptual hash #{index} {str(text)[:40]!r} is not a {HASH_BITS}-bit hex number "
                f"(at most {HASH_BITS // 4} hex digits); hashes come from dishgen.data.images.phash_hex"
            )
        values.append(value)
    return np.array(values, dtype=np.uint64)


def hamming_matrix(hashes: np.ndarray, block: int = 2048):
    """Yield ``(i0, j0, distances)`` blocks of the pairwise Hamming distances of 64-bit hashes."""
    n = len(hashes)
    for i0 in range(0, n, block):
        a = hashes[i0 : i0 + block, None]
        for j0 in range(i0, n, block):
            b = hashes[None, j0 : j0 + block]
            yield i0, j0, np.bitwise_count(a ^ b)


def near_duplicate_pairs(phashes: Sequence[str], threshold: int) -> list[tuple[int, int, int]]:
    """All pairs ``(i, j, distance)`` with ``i < j`` whose pHash distance is at most ``threshold``.

    Raises:
        DedupeError: a threshold outside ``[-1, 64]`` or a hash that is not 64-bit hex.
    """
    threshold = check_threshold(threshold)
    if len(phashes) < 2 or threshold < 0:
        return []
    hashes = _hash_ints(phashes)
    pairs = []
    for i0, j0, dist in hamming_matrix(hashes):
        ii, jj = np.nonzero(dist <= threshold)
        for i, j in zip(ii + i0, jj + j0, strict=True):
            if i < j:
                pairs.append((int(i), int(j), int(dist[i - i0, j - j0])))
    return pairs


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def find_duplicates(
    sha256s: Sequence[str], phashes: Sequence[str], threshold: int, quality: Sequence[float] | None = None
) -> dict[int, list[tuple[int, str]]]:
    """Group duplicates and choose a representative for each group.

    Args:
        sha256s: content hashes (equal hashes are exact duplicates).
        phashes: perceptual hashes as hex strings.
        threshold: maximum pHash Hamming distance for a near duplicate (``-1`` disables).
        quality: a score per image; the highest is kept (e.g. pixel count). Ties keep the first.

    Returns:
        ``{kept_index: [(merged_index, reason), ...]}`` for groups of two or more.

    Raises:
        DedupeError: a threshold outside ``[-1, 64]``, a hash that is not 64-bit hex, or
            lists of different lengths.
    """
    threshold = check_threshold(threshold)
    n = len(sha256s)
    if len(phashes) != n or (quality is not None and len(quality) != n):
        raise DedupeError(f"find_duplicates needs one pHash and one quality score per image: got {n} content hashes, "
                          f"{len(phashes)} pHashes and {'no' if quality is None else len(quality)} scores")
    uf = _UnionFind(n)
    reasons: dict[tuple[int, int], str] = {}
    first_by_sha: dict[str, int] = {}
    for i, sha in enumerate(sha256s):
        if sha in first_by_sha:
            uf.union(first_by_sha[sha], i)
        else:
            first_by_sha[sha] = i
    for i, j, d in near_duplicate_pairs(phashes, threshold):
        if sha256s[i] != sha256s[j]:
            uf.union(i, j)
            reasons.setdefault((i, j), f"near duplicate (pHash distance {d})")
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    score = list(quality) if quality is not None else [0.0] * n
    result = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        kept = max(members, key=lambda m: (score[m], -m))
        merged = []
        for m in members:
            if m == kept:
                continue
            if sha256s[m] == sha256s[kept]:
                reason = "exact duplicate (same bytes)"
            else:
                reason = reasons.get((min(m, kept), max(m, kept)), "near duplicate (same cluster)")
            merged.append((m, reason))
        result[kept] = merged
    return result
