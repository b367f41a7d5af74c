"""The bench helper's verdict on load (bench/_common.py); no timing is asserted."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _common as common  # noqa: E402


@pytest.mark.parametrize(("before", "others_after", "expected"), [
    (0.2, 0.4, False),
    (1.5, 1.5, False),  # at the limit is still quiet
    (1.6, 0.1, True),
    (0.1, 1.6, True),
    (math.nan, 0.1, True),  # no reading: not trusted
])
def test_is_unreliable(before, others_after, expected):
    assert common.is_unreliable(before, others_after) is expected


def test_own_share_follows_the_one_minute_decay():
    assert common.own_load_share(0.0, 10.0) == 0.0
    assert common.own_load_share(5.0, 0.0) == 0.0
    # two busy threads for a long time: the whole 2 is the bench's
    assert common.own_load_share(2 * 600.0, 600.0) == pytest.approx(2.0, abs=1e-3)
    # two threads for one minute: 2 * (1 - 1/e)
    assert common.own_load_share(120.0, 60.0) == pytest.approx(2 * (1 - math.exp(-1)))


def test_ratio_is_marked_only_under_load():
    watch = common.LoadWatch()
    watch.before, watch.after, watch.own = 0.3, 2.2, 2.0  # the bench's own threads do not count
    assert not watch.unreliable
    assert watch.ratio(2.5) == "2.50x"
    assert "quiet enough" in watch.report()
    watch.after = 4.1  # 2.1 from other processes
    assert watch.unreliable
    assert watch.ratio(2.5) == "2.50x [UNRELIABLE: 1-min load 2.10 > 1.5]"
    assert "UNRELIABLE" in watch.report()
    assert watch.as_dict()["unreliable"] is True


def test_watch_reads_the_load_around_a_block():
    with common.LoadWatch() as watch:
        sum(range(1000))
    assert watch.before >= 0 and watch.after >= 0 and watch.own >= 0


def test_interleaved_alternates_the_order_and_pairs_rounds():
    calls = []
    times = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert [len(v) for v in times.values()] == [3, 3]
    assert common.median_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 1.0]) == 2.0


def test_gpu_bench_records_a_part_that_runs_out_of_time_or_fails(tmp_path):
    import time

    import gpu_bench

    bench = gpu_bench.Bench(tmp_path / "out", smoke=True, work=tmp_path, caps_scale=1.0)
    bench.caps.update(slow=1, broken=5, fine=5)
    bench.run_part("slow", lambda: time.sleep(5))
    bench.run_part("broken", lambda: 1 / 0)
    bench.run_part("fine", lambda: bench.add("fine", "a figure", images_per_s=2.0))
    assert bench.parts["slow"]["status"].startswith("timed out") and bench.parts["slow"]["seconds"] < 3
    assert bench.parts["broken"]["status"].startswith("failed: ZeroDivisionError")
    assert bench.parts["fine"]["status"] == "ok"
    with common.LoadWatch() as load:
        pass
    bench.write(load, total=1.0)
    table = (tmp_path / "out" / "gpu_bench.md").read_text()
    assert "| fine | a figure |" in table and "| slow | timed out" in table
    assert '"images_per_s": 2.0' in (tmp_path / "out" / "gpu_bench.json").read_text()
