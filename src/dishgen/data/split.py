"""Train/test split without leakage: deterministic for a seed, grouped by dish by default."""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence


def dish_key(name: str) -> str:
    """Normalise a dish name so spelling variants group together ("Sarma " == "SARMA")."""
    text = unicodedata.normalize("NFKC", name).casefold()
    return re.sub(r"\s+", " ", text).strip()


def split_indices(
    groups: Sequence[str], test_fraction: float, seed: int, by: str = "dish"
) -> tuple[list[int], list[int]]:
    """Split items into train and test.

    Args:
        groups: one group key per item (the dish; items with an empty key are their own group).
        test_fraction: the share of items wanted in test (0 <= f < 1).
        seed: makes the split repeatable.
        by: ``"dish"`` keeps every group on one side, and a group of one item goes to train
            (a dish seen once cannot be tested without leaking its look); ``"image"`` splits
            items independently.

    Returns:
        ``(train_indices, test_indices)``, each sorted.
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    n = len(groups)
    rng = random.Random(seed)
    target = round(n * test_fraction)
    if by == "image":
        order = list(range(n))
        rng.shuffle(order)
        return sorted(order[target:]), sorted(order[:target])
    if by != "dish":
        raise ValueError(f"split by {by!r}: choose 'dish' or 'image'")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g or f"\0item{i}", []).append(i)
    candidates = sorted(k for k, v in members.items() if len(v) >= 2)
    rng.shuffle(candidates)
    test: list[int] = []
    for key in candidates:
        if len(test) >= target:
            break
        # Take a group only if it brings us closer to the target than leaving it out.
        if abs(len(test) + len(members[key]) - target) <= abs(len(test) - target) or not test:
            test.extend(members[key])
    test_set = set(test)
    return sorted(i for i in range(n) if i not in test_set), sorted(test)


def split_notes(
    groups: Sequence[str], test: Sequence[int], test_fraction: float, by: str = "dish"
) -> dict[str, object]:
    """What a split did that the user did not ask for, for ``dataset.json`` and the build log.

    Args:
        groups: the group keys given to :func:`split_indices`.
        test: its test indices.
        test_fraction: the share asked for.
        by: ``"dish"`` or ``"image"``.

    Returns:
        ``{"one_photo_dishes_in_train": [dish keys], "warnings": [one line each]}``: the dishes
        with a single photo that splitting by dish forced into train, and a warning for an empty
        test split or for such forced dishes.
    """
    counts: dict[str, int] = {}
    for g in groups:
        if g:
            counts[g] = counts.get(g, 0) + 1
    forced = sorted(k for k, v in counts.items() if v == 1) if by == "dish" else []
    warnings = []
    if test_fraction > 0 and not test:
        if round(len(groups) * test_fraction) == 0:
            why = f"{len(groups)} image(s) x test_fraction {test_fraction:g} rounds to 0"
        elif by == "dish" and not any(v >= 2 for v in counts.values()):
            why = "no dish has two or more photos, and a one-photo dish always goes to train"
        else:
            why = "no dish's photos fitted the test share"
        warnings.append(f"the test split is empty ({why}); evaluate on it is impossible: add photos, raise "
                        "--test-fraction or use --split-by image")
    if forced and test_fraction > 0:
        warnings.append(f"{len(forced)} dish(es) with a single photo were put in train (a dish seen once cannot be "
                        f"tested without leaking its look), e.g. {', '.join(repr(k) for k in forced[:3])}")
    return {"one_photo_dishes_in_train": forced, "warnings": warnings}
