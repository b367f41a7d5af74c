"""Benchmark of the evaluation maths and of a full-size feature network on this machine.

Prints, for realistic set sizes: torchmetrics FID against the SVD form used for bootstrap
replicates (time and agreement), the cost of 200-resample bootstrap intervals for FID, KID and a
CLIPScore mean, and the throughput of a DINOv2-base-sized and a CLIP ViT-L/14-sized image tower
(random weights, same shapes and cost as the real ones).

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_evaluate.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import LoadWatch, interleaved, median_ratio

from dishgen.evaluate import metrics as M


def bench_fid(sizes, rounds: int = 3):
    print("FID: torchmetrics (eigvals of a DxD product) vs the SVD form (bootstrap replicates), interleaved")
    print(f"{'N':>6} {'D':>5} {'torchmetrics s':>15} {'svd form s':>11} {'ratio':>7} {'rel. diff':>10}")
    for n, d in sizes:
        g = torch.Generator().manual_seed(0)
        real = torch.randn(n, d, generator=g)
        fake = torch.randn(n, d, generator=g) * 1.1 + 0.05
        v_tm, v_fast = M.fid(real, fake), M.frechet_distance(real, fake)
        with LoadWatch() as load:
            times = interleaved({"tm": lambda real=real, fake=fake: M.fid(real, fake),
                                 "svd": lambda real=real, fake=fake: M.frechet_distance(real, fake)}, rounds=rounds)
        t_tm, t_fast = min(times["tm"]), min(times["svd"])
        ratio = load.ratio(median_ratio(times["tm"], times["svd"]), "{:>6.1f}x")
        print(f"{n:>6} {d:>5} {t_tm:>15.3f} {t_fast:>11.4f} {ratio} {abs(v_tm - v_fast) / v_tm:>10.1e}")
    print(f"  {load.report()} (last size)")


def bench_bootstrap(n, d, resamples):
    """Absolute costs (no peer): read them with the load line printed after them."""
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) + 0.1
    cos = torch.rand(n, generator=g).double() * 0.4
    print(f"\nbootstrap, {resamples} resamples, N = {n}, D = {d}")
    for name, stat, samples in [
        ("FID (svd form, fp32)", lambda a, b: M.frechet_distance(a, b, dtype=torch.float32), [real, fake]),
        ("KID (unbiased MMD)", lambda a, b: M.mmd_poly_unbiased(a[:2000], b[:2000]), [real, fake]),
        ("CLIPScore mean", lambda v: float(M.clip_score(v).mean()), [cos]),
    ]:
        start = time.perf_counter()
        M.bootstrap_ci(stat, samples, n_resamples=resamples, method="centred")
        print(f"  {name:<20} {time.perf_counter() - start:8.2f} s")
    start = time.perf_counter()
    M.kid(real, fake, seed=0)
    print(f"  {'KID point (torchmetrics, 100 subsets)':<20} {time.perf_counter() - start:8.2f} s")


@torch.no_grad()
def bench_backbones(device, batch, batches):
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        Dinov2Config,
        Dinov2Model,
    )

    print(f"\nfeature networks (random weights, real shapes) on {device}, batch {batch}, 224 px")
    nets = {
        "DINOv2-base (86M)": Dinov2Model(Dinov2Config(image_size=224)),
        "CLIP ViT-L/14 image tower (303M)": CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            image_size=224, patch_size=14, projection_dim=768)),
    }
    x = torch.randn(batch, 3, 224, 224, device=device)
    for name, net in nets.items():
        net = net.to(device).eval()
        net(pixel_values=x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            net(pixel_values=x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        per_image = (time.perf_counter() - start) / (batches * batch)
        print(f"  {name:<34} {1 / per_image:8.1f} images/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-backbones", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    sizes = [(500, 768), (2000, 1024)] if args.quick else [(500, 768), (1000, 768), (2000, 1024), (2000, 2048)]
    bench_fid(sizes)
    with LoadWatch() as load:  # absolute figures, no peer: the load says how far to trust them
        bench_bootstrap(1000, 768, 50 if args.quick else 200)
        if not args.no_backbones:
            bench_backbones(args.device, batch=4 if args.device == "cpu" else 64,
                            batches=2 if args.device == "cpu" else 10)
    print(f"  {load.report()}")


if __name__ == "__main__":
    main()
