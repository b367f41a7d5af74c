"""Data-pipeline throughput: `data build` against a bare single-core Pillow decode + resize loop.

Prints images/second for both on the same files (the FFML set by default) and their ratio.
The issue's target: build (validate + dedupe + crop + caption, all cores) >= 1.6x the bare loop.

    python bench/bench_data.py [--photos ../shared/data/ffml/images] [--size 128] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import LoadWatch
from PIL import Image

from dishgen.data.build import BuildOptions, build_dataset
from dishgen.data.importer import import_photo_folder

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ffml" / "images"


def bare_loop(files: list[Path], size: int) -> float:
    """Seconds for the simplest single-core loop: decode, convert to RGB, resize, encode PNG."""
    start = time.perf_counter()
    out = Path(tempfile.mkdtemp())
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS).save(out / f"{i}.png", compress_level=1)
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not args.photos.is_dir():
        raise SystemExit(f"{args.photos} not found; pass --photos DIR")
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        raw = work / "raw"
        import_photo_folder(args.photos, raw)
        files = sorted((raw / "images").iterdir())
        n = len(files)
        bare, built = [], []
        with LoadWatch() as load:
            for r in range(args.repeats):  # interleaved: bare, build, build, bare, ...
                for which in ("bare", "build") if r % 2 == 0 else ("build", "bare"):
                    if which == "bare":
                        bare.append(bare_loop(files, args.size))
                        continue
                    t0 = time.perf_counter()
                    build_dataset([raw], work / f"ds{r}", BuildOptions(size=args.size, min_size=64))
                    built.append(time.perf_counter() - t0)
        bare_s, build_s = statistics.median(bare), statistics.median(built)
        print(f"images: {n}, size {args.size}, cores: {os.cpu_count()}")
        print(f"bare Pillow decode+resize+save, 1 core : {n / bare_s:8.1f} images/s ({bare_s:.2f} s)")
        print(f"dishgen data build (all stages)        : {n / build_s:8.1f} images/s ({build_s:.2f} s)")
        print(f"ratio build / bare                     : {load.ratio(bare_s / build_s, '{:8.2f}x')}  (target >= 1.6x)")
        print(load.report())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
