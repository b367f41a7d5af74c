"""Diffusion generation through dishgen against a bare diffusers pipeline call, same arguments.

Both paths run on the same pipeline object: ``DiffusionGenerator.generate`` (knob checks, per-image
seeded generators, prompt-major batching, PIL output) against ``pipe(prompt=[...],
generator=[...], ...)`` with the same prompts, seeds, scheduler, steps, guidance and size. Calls are
interleaved so that background load hits both alike; the medians and their ratio are printed. The
issue's target: dishgen costs at most 2% more (ratio <= 1.02).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_diffusion.py
    .venv/bin/python bench/bench_diffusion.py --model ./sd15-shape-only --device cuda --dtype fp16 \\
        --size 512 --steps 25

Timings are noisy on a shared machine: compare the ratio more than the absolute figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import LoadWatch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="diffusers folder or id (default: the tests' tiny pipeline)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=2, help="images per prompt (2 prompts)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from dishgen.diffusion import load_generator

    model = args.model
    if model is None:
        from tiny_models import build_tiny_sd

        model = build_tiny_sd(Path(tempfile.mkdtemp(prefix="bench_diffusion_")) / "tiny_sd")
    generator = load_generator(model, device=args.device, dtype=args.dtype, scheduler=args.scheduler)
    pipe = generator.pipe
    prompts = ["Sarma, cabbage rolls in a clay pot", "Ćevapi with onions on a wooden board"]
    knobs = {"num_inference_steps": args.steps, "guidance_scale": 7.5, "height": args.size, "width": args.size}
    total = len(prompts) * args.images
    seed = 0

    def through_dishgen():
        return generator.generate(prompts, num_images=args.images, seed=seed, batch_size=total, **knobs)

    def bare_diffusers():
        return pipe(prompt=[p for p in prompts for _ in range(args.images)],
                    generator=[torch.Generator("cpu").manual_seed(seed + k) for k in range(total)],
                    output_type="pil", **knobs).images

    def timed(fn) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - started

    a, b = through_dishgen(), bare_diffusers()  # warm-up, and the same pictures from both paths
    same = all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
    dishgen_times, bare_times = [], []
    with LoadWatch() as load:
        for repeat in range(args.repeats):  # interleaved, the order alternating
            if repeat % 2:
                dishgen_times.append(timed(through_dishgen))
                bare_times.append(timed(bare_diffusers))
            else:
                bare_times.append(timed(bare_diffusers))
                dishgen_times.append(timed(through_dishgen))
    bare, ours = statistics.median(bare_times), statistics.median(dishgen_times)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {model}, {args.size} px, "
          f"{args.steps} {args.scheduler} steps, {total} images per call, {args.repeats} interleaved repeats")
    print(f"identical images from both paths: {same}")
    print(f"bare diffusers   median {bare * 1000:8.1f} ms/call")
    print(f"through dishgen  median {ours * 1000:8.1f} ms/call   ratio {load.ratio(ours / bare, '{:.3f}x')} "
          "(target <= 1.02)")
    print(load.report())


if __name__ == "__main__":
    main()
