"""Benchmark the cGAN: training images/s (ours vs the original loop's cost) and generation images/s.

    OMP_NUM_THREADS=2 nice python bench/bench_cgan.py                # full FFML set, CPU preset geometry
    python bench/bench_cgan.py --data DATASET --steps 40 --repeat 2

Training geometry: 64 px, base channels 32, batch 16, DiffAugment, mismatched-text term and lazy R1
(every 16 steps) on. Variants, all in this process on the same data:

- ``original``: a re-implementation of the original project's loop cost: fp32, contiguous memory,
  DiffAugment applied one image at a time, and three separate D passes (real, fake, real with a
  shuffled caption) instead of one pass whose features serve all three.
- ``fp32``/``bf16`` x ``channels_last``: our training loop (``dishgen.train.cgan.train``), timed from
  its own ``log.jsonl`` (images/s), the first logged window (warm-up) left out.

It also checks what bf16 costs in accuracy (relative error of G's output and D's logits, cosine of
fp32 and bf16 gradients) and times generation with the exported model (batched, fp32 and bf16).
Numbers are noisy on a shared machine: run with ``nice`` and ``--repeat``, and read the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

FFML = Path(__file__).resolve().parents[2] / "shared" / "data" / "ffml" / "images"
GEOMETRY = dict(resolution=64, base_channels=32, batch_size=16, text_encoder="minilm", mismatch_weight=0.5,
                r1_gamma=0.1, r1_every=16, augment="color,translation,cutout")


def build_ffml_dataset(root: Path, size: int = 64) -> Path:
    """An imagefolder of every FFML photo (train split only), captions from the dish folder."""
    from PIL import Image

    if (root / "train" / "metadata.jsonl").is_file():
        return root
    out = root / "train"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in sorted(p for p in FFML.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*")):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
                continue
            name = f"{len(rows):05d}.png"
            with Image.open(path) as im:
                im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS).save(out / name)
            rows.append({"file_name": name, "text": f"a photo of {folder.name.lower()}", "dish": folder.name})
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def time_our_loop(data: Path, steps: int, **overrides) -> tuple[float, Path]:
    """Images/s of ``train()`` over ``steps`` steps (first 5-step window left out)."""
    from dishgen.config import resolve_config
    from dishgen.train.cgan import CGANTrainConfig, train

    out = Path(tempfile.mkdtemp(prefix="bench-cgan-"))
    config = resolve_config(CGANTrainConfig, overrides={**GEOMETRY, "max_steps": steps, "log_every": 5,
                                                        "sample_every": 10**6, "checkpoint_every": 10**6,
                                                        **overrides})
    train(config, data, out)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # images/s over the timed windows, weighted by their steps: total images / total seconds.
    windows = rows[1:]
    seconds = sum(5 * 16 / r["images_per_s"] for r in windows)
    return 5 * 16 * len(windows) / seconds, out


def time_original_loop(data: Path, steps: int) -> float:
    """Images/s of the original loop's cost on our networks (see the module docstring)."""
    from dishgen.data.dataset import load_split
    from dishgen.images_tensor import load_images_uint8
    from dishgen.models import cgan
    from dishgen.models.augment import apply_params_loop, sample_params
    from dishgen.text import load_text_encoder
    from dishgen.text.cache import encode_cached

    rows = load_split(data, "train")
    c_all = encode_cached(load_text_encoder("minilm"), [r.text for r in rows], data / ".cache")
    images = load_images_uint8([r.path for r in rows], 64).float() / 127.5 - 1
    torch.manual_seed(0)
    config = cgan.CGANConfig(resolution=64, c_dim=c_all.shape[1], base_channels=32)
    G, D = cgan.Generator(config), cgan.Discriminator(config)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.99))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.0, 0.99))

    def augment(x):
        return apply_params_loop(x, sample_params(x.shape[0], 64, 64, GEOMETRY["augment"]))

    times = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        idx = torch.randint(0, len(images), (16,))
        real, c = images[idx], c_all[idx]
        fake = G(torch.randn(16, 128), c).detach()
        real_logits, fake_logits = D(augment(real), c), D(augment(fake), c)
        wrong_logits = D(augment(real), c[torch.randperm(16)])
        loss_D = sum(cgan.d_hinge_loss(real_logits, fake_logits)) + 0.5 * torch.relu(1 + wrong_logits).mean()
        if step % 16 == 0:
            x = augment(real).detach().requires_grad_(True)
            loss_D = loss_D + 0.05 * 16 * cgan.r1_penalty(D(x, c), x)
        opt_D.zero_grad()
        loss_D.backward()
        opt_D.step()
        loss_G = cgan.g_hinge_loss(D(augment(G(torch.randn(16, 128), c)), c))
        opt_G.zero_grad()
        loss_G.backward()
        opt_G.step()
        times.append(time.perf_counter() - start)
    timed = times[5:]
    return 16 * len(timed) / sum(timed)


def bf16_accuracy(model_dir: Path) -> dict[str, float]:
    """What bf16 autocast changes, on the trained networks of a run (one batch)."""
    from safetensors.torch import load_file

    from dishgen.families.cgan import load_G_ema
    from dishgen.models import cgan

    G, meta = load_G_ema(model_dir)
    config = G.config
    ckpt = sorted(model_dir.parent.glob("checkpoint-*"))[-1]
    D = cgan.Discriminator(config)
    D.load_state_dict(load_file(str(ckpt / "D.safetensors")))
    gen = torch.Generator().manual_seed(0)
    z, c = torch.randn(32, config.z_dim, generator=gen), torch.nn.functional.normalize(torch.randn(32, config.c_dim), dim=1)
    with torch.no_grad():
        x32 = G(z, c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x16 = G(z, c).float()
    D.eval()
    results = {"G_output_max_abs_err": float((x32 - x16).abs().max()),
               "G_output_mean_abs_err_in_8bit_levels": float((x32 - x16).abs().mean() * 127.5)}
    grads = {}
    for name, ctx in (("fp32", torch.autocast("cpu", enabled=False)),
                      ("bf16", torch.autocast("cpu", dtype=torch.bfloat16))):
        D.zero_grad()
        with ctx:
            logits = D(x32, c)
        cgan.g_hinge_loss(logits).backward()
        grads[name] = (logits.detach().float(), torch.cat([p.grad.flatten() for p in D.parameters()]))
    results["D_logits_rel_err"] = float((grads["fp32"][0] - grads["bf16"][0]).norm() / grads["fp32"][0].norm())
    results["D_grad_cosine"] = float(torch.nn.functional.cosine_similarity(grads["fp32"][1], grads["bf16"][1], dim=0))
    return results


def time_generation(model_dir: Path, dtype: str | None, batch_size: int = 64, n: int = 256) -> float:
    from dishgen.families.cgan import load_generator

    gen = load_generator(model_dir, dtype=dtype)
    prompts = [f"a photo of dish number {i}" for i in range(16)]
    gen.generate(prompts[:2], num_images=batch_size // 2, seed=0, batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    gen.generate(prompts, num_images=n // len(prompts), seed=1, batch_size=batch_size)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the full FFML set at 64 px)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-original", action="store_true")
    args = parser.parse_args()
    data = args.data or build_ffml_dataset(Path(tempfile.gettempdir()) / "dishgen-bench-ffml-64")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu {torch.backends.cpu.get_cpu_capability()}, "
          f"data {data}", flush=True)
    results: dict[str, list[float]] = {}
    last_run = None
    for _ in range(args.repeat):
        if not args.skip_original:
            results.setdefault("original (fp32, contiguous, per-image aug, 3 D passes)", []).append(
                time_original_loop(data, args.steps))
        for precision in ("fp32", "bf16"):
            for channels_last in (False, True):
                name = f"ours {precision}{' channels_last' if channels_last else ''}"
                ips, last_run = time_our_loop(data, args.steps, precision=precision, channels_last=channels_last)
                results.setdefault(name, []).append(ips)
                print(f"  {name}: {ips:.1f} images/s", flush=True)
    base = statistics.median(results.get("original (fp32, contiguous, per-image aug, 3 D passes)", [float("nan")]))
    print("\ntraining images/s (median of repeats; batch 16, 64 px):")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"  {name:58s} {med:6.1f}  ({med / 16:.2f} it/s, x{med / base:.2f} vs original)  runs={len(values)}")
    print("  reference: the original project's loop measured 1.55 s/it = 10.3 images/s (ENVIRONMENT.md)")
    print("\nbf16 autocast accuracy on the trained networks:", json.dumps(bf16_accuracy(last_run / "model"), indent=1))
    print("\ngeneration images/s (exported EMA model, 64 px, batch 64, 256 images):")
    for dtype in (None, "bf16"):
        values = [time_generation(last_run / "model", dtype) for _ in range(max(args.repeat, 2))]
        print(f"  {dtype or 'fp32':5s} {statistics.median(values):6.1f}  (runs: {', '.join(f'{v:.1f}' for v in values)})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
