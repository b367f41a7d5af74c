"""The bundled model out of the box: cold start of the main job, and warm throughput.

    python bench/bench_generate.py [--model default] [--repeats 3] [--batch 256]

Cold start: wall time of the README's main-job command (`dishgen generate "<caption>"`) in a fresh
process, from launch to the written PNG (target: under 5 s on a 2-core CPU). Warm: images per
second of the loaded model, batched (target: over 50 images/s at 64 px).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAPTIONS = [
    "Sarma, cabbage rolls served in a clay pot",
    "Ćevapi with chopped onions and flatbread",
    "Baklava with walnuts and syrup",
    "Goulash in a deep bowl",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    dishgen = Path(sys.executable).with_name("dishgen")

    cold = []
    with tempfile.TemporaryDirectory() as out:
        for i in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run([str(dishgen), "generate", CAPTIONS[0], "--model", args.model, "--seed", str(i),
                                   "--out", out], capture_output=True, text=True, check=True)
            cold.append(time.perf_counter() - start)
            assert Path(done.stdout.strip().splitlines()[-1]).is_file()
    print(f"cold start, caption -> PNG (fresh process): median {statistics.median(cold):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in cold)}; target < 5 s)")

    import torch

    from dishgen.generation import load_generator

    start = time.perf_counter()
    generator = load_generator(args.model)
    print(f"load in a warm process: {time.perf_counter() - start:.2f} s; torch threads {torch.get_num_threads()}")
    per_prompt = args.batch // len(CAPTIONS)
    generator.generate(CAPTIONS, num_images=2, seed=0)  # warm-up
    rates = []
    for r in range(args.repeats):
        start = time.perf_counter()
        images = generator.generate(CAPTIONS, num_images=per_prompt, seed=r)
        rates.append(len(images) / (time.perf_counter() - start))
    size = images[0].size
    print(f"warm generation, {len(images)} images of {size[0]}x{size[1]} per call: median "
          f"{statistics.median(rates):.1f} images/s (runs: {', '.join(f'{x:.1f}' for x in rates)}; target > 50)")


if __name__ == "__main__":
    main()
