"""What every bench script shares: peers timed in turn, and the machine's load around them.

A ratio is only worth printing if both sides ran under the same conditions, so every bench
times its peer in the same run, interleaved (:func:`interleaved`), and brackets the measurement
with :class:`LoadWatch`. The watch reads the 1-minute load average before and after and takes
out the part this bench itself put there; if the rest (other processes) was above
:data:`LOAD_LIMIT` at either end, every ratio it formats carries an ``UNRELIABLE`` mark instead
of being printed plainly::

    with LoadWatch() as load:
        times = interleaved({"ours": ours_step, "peer": peer_step}, rounds=10)
    print(load.report())
    print("ours / peer:", load.ratio(median_ratio(times["ours"], times["peer"])))

The load average counts runnable threads, and a bench running N threads adds about N to it, so
the bench's own share is estimated from its CPU time (children included) and the 1-minute
average's decay, ``cpu_seconds / wall_seconds * (1 - exp(-wall_seconds / 60))``.
A process at ``nice 19`` counts fully in the load but takes little from a bench at nice 0; the
mark errs on the side of caution there.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

LOAD_LIMIT = 1.5  # 1-minute load (other processes) above which a ratio is marked unreliable


def load_1min() -> float:
    """The machine's 1-minute load average (``nan`` where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return math.nan


def own_cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) of this process and its reaped children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def own_load_share(cpu_seconds: float, wall_seconds: float) -> float:
    """How much of the 1-minute load average a job put there by itself.

    A job that kept ``r = cpu_seconds / wall_seconds`` threads busy for ``wall_seconds`` raises
    the exponentially decaying 1-minute average by about ``r * (1 - exp(-wall / 60))``.
    """
    if wall_seconds <= 0:
        return 0.0
    return cpu_seconds / wall_seconds * (1 - math.exp(-wall_seconds / 60))


def is_unreliable(before: float, others_after: float, limit: float = LOAD_LIMIT) -> bool:
    """Whether a measurement taken with this background load should not be trusted.

    Args:
        before: the 1-minute load just before the measurement (the bench not yet running).
        others_after: the 1-minute load just after it, less the bench's own share.
        limit: the highest background load still taken as a quiet machine.

    Returns:
        True if either reading is above ``limit``, or unknown (``nan``).
    """
    if math.isnan(before) or math.isnan(others_after):
        return True
    return before > limit or others_after > limit


def mark(text: str, unreliable: bool, load: float) -> str:
    """``text`` as it is, or followed by the unreliable mark with the load that earned it."""
    if not unreliable:
        return text
    shown = "unknown" if math.isnan(load) else f"{load:.2f}"
    return f"{text} [UNRELIABLE: 1-min load {shown} > {LOAD_LIMIT}]"


class LoadWatch:
    """The 1-minute load before and after a measurement, and the mark its ratios get.

    Use as a context manager around the measurement (or call :meth:`start` and :meth:`stop`).
    """

    def __init__(self, limit: float = LOAD_LIMIT):
        self.limit = limit
        self.before = self.after = self.own = math.nan
        self._wall = self._cpu = 0.0

    def start(self) -> LoadWatch:
        self.before = load_1min()
        self._wall, self._cpu = time.perf_counter(), own_cpu_seconds()
        return self

    def stop(self) -> LoadWatch:
        wall = time.perf_counter() - self._wall
        self.own = own_load_share(own_cpu_seconds() - self._cpu, wall)
        self.after = load_1min()
        return self

    def __enter__(self) -> LoadWatch:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def others_after(self) -> float:
        """The load after the measurement, less this bench's own share."""
        return max(self.after - self.own, 0.0)

    @property
    def worst(self) -> float:
        """The higher of the two background readings."""
        return max(self.before, self.others_after)

    @property
    def unreliable(self) -> bool:
        return is_unreliable(self.before, self.others_after, self.limit)

    def report(self) -> str:
        """One line: the load before and after, the bench's share, and the verdict."""
        verdict = (f"UNRELIABLE: background load above {self.limit}, ratios are marked" if self.unreliable
                   else f"quiet enough (background load at most {self.limit})")
        return (f"1-min load: before {self.before:.2f}, after {self.after:.2f} (about {self.own:.2f} of it "
                f"this bench, {self.others_after:.2f} the rest) -> {verdict}")

    def ratio(self, value: float, fmt: str = "{:.2f}x") -> str:
        """A ratio formatted with ``fmt``, marked if it was measured under load."""
        return mark(fmt.format(value), self.unreliable, self.worst)

    def as_dict(self) -> dict:
        """The readings, for a JSON report."""
        return {"load_before": self.before, "load_after": self.after, "own_share": self.own,
                "load_others_after": self.others_after, "unreliable": self.unreliable, "limit": self.limit}


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each function, called in turn round after round.

    The order alternates (A B C, C B A, ...) so that a drift in the machine's speed hits every
    function alike. ``warmup`` rounds run first and are not timed.

    Returns:
        name -> the ``rounds`` timings, in round order (pairs line up for :func:`median_ratio`).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median of the per-round ratios ``a[i] / b[i]`` (robust to one slow round on either side)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def reset_accelerate_state() -> None:
    """Let the next ``Accelerator()`` in this process choose its own device and precision
    (accelerate keeps one process-wide state and refuses a change otherwise)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def keep_first_images(data: Path, count: int) -> Path:
    """Trim an imagefolder dataset's ``train`` split to its first ``count`` images (metadata rows and
    files), so that a short warm-up meets every image; the ``test`` split is left as it is.

    The LoRA benches need this: dishgen fills its latent and text caches the first time it meets an
    image (one entry per image and flip) and caption, so a "cached" step is only a cache hit once
    the warm-up has met every training image (with ``random_flip=false``: one entry per image).

    Raises:
        SystemExit: ``count`` is below 1 or above the number of training images.
    """
    train = data / "train"
    rows = (train / "metadata.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    if not 1 <= count <= len(rows):
        raise SystemExit(f"--images {count}: the sample has {len(rows)} training images; pick 1 to {len(rows)}")
    keep = {json.loads(row)["file_name"] for row in rows[:count]}
    for path in train.iterdir():
        if path.name != "metadata.jsonl" and path.name not in keep:
            path.unlink()
    (train / "metadata.jsonl").write_text("".join(rows[:count]), encoding="utf-8")
    return data


def warmup_warning(warmup: int, batch_size: int, images: int) -> str | None:
    """The warning to print when ``warmup`` steps of ``batch_size`` cannot meet all ``images`` training
    images (so a cached variant's timed steps would include cache misses), else None.

    Assumes ``random_flip=false`` (one cache entry per image) and an epoch that draws every image once.
    """
    if warmup * batch_size >= images:
        return None
    return (f"warning: {warmup} warm-up steps of batch {batch_size} do not meet all {images} images: "
            "the cached variant's timed steps will include cache misses")
