"""Benchmark the cGAN: training images/s (ours vs the original loop's cost) and generation images/s.

    OMP_NUM_THREADS=2 nice python bench/bench_cgan.py                # full FFML set, CPU preset geometry
    python bench/bench_cgan.py --data DATASET --rounds 30 --loop-steps 40
    python bench/bench_cgan.py --like-for-like --rounds 8 --loop-steps 0  # same widths: loop vs network
    python bench/bench_cgan.py --profile 6 [--compile]                # where our step's time goes

``--like-for-like`` separates "same function, faster loop" from "smaller network": the original
loop's cost and ours, each at the original project's widths (G 9.78M parameters, cond_dim 512,
512-d captions, no channel cap, one more D block: 169.5 GFLOP per step in the original loop, the
original trainer's measured 170.9) and at ours (G 3.30M, D 1.31M), with GFLOP per step
(``torch.utils.flop_counter``) and the speed of a plain conv measured in the same rounds. A fifth
row runs our loop at our widths with the trainer's ``compile=true`` (its graph build timed apart;
run with a fresh ``TORCHINDUCTOR_CACHE_DIR`` for the cold figure).

Training geometry: 64 px, base channels 32, batch 16, DiffAugment, mismatched-text term and lazy R1
(every 16 steps) on. The variants run one step at a time in turn (interleaved), so that the load of
a shared machine falls on all of them alike; ratios are medians of per-round ratios:

- ``original``: a re-implementation of the original project's loop cost on our networks: fp32,
  contiguous memory, textbook blocks (upsample then conv, conv then average-pool), DiffAugment
  applied one image at a time, and three separate D passes (real, fake, real with a shuffled
  caption) with D's weight gradients computed in the G step too.
- ``ours``: the math of ``dishgen.train.cgan``'s step (one D pass whose features serve real, fake
  and mismatched logits; D frozen in the G step; vectorised DiffAugment; folded up/down-sampling
  convs), in fp32 or bf16 autocast, contiguous or channels-last.

Then the real ``train()`` loop runs for a few steps (its own ``log.jsonl`` gives images/s), bf16's
accuracy is checked on its networks (relative error of G's output and D's logits, cosine of fp32
and bf16 gradients), and generation with the exported model is timed (batched, fp32 and bf16).
Numbers are noisy on a shared machine: run with ``nice`` and read the medians. CPU seconds (all
threads) are printed beside wall seconds: under load, "images/s on N idle cores" (N = threads) is
the estimate that other processes do not distort, assuming the threads scale.
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
from _common import LoadWatch

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


def time_our_loop(data: Path, steps: int, device: str | None = None, **overrides) -> tuple[float, Path]:
    """Images/s of the real ``train()`` over ``steps`` steps (first 5-step window left out)."""
    from dishgen.config import resolve_config
    from dishgen.train.cgan import CGANTrainConfig, train

    out = Path(tempfile.mkdtemp(prefix="bench-cgan-"))
    config = resolve_config(CGANTrainConfig, overrides={**GEOMETRY, "max_steps": steps, "log_every": 5,
                                                        "sample_every": 10**6, "checkpoint_every": 10**6,
                                                        **overrides})
    train(config, data, out, device=device)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    images = seconds = 0.0
    for previous, row in zip(rows, rows[1:], strict=False):  # a row covers the steps since the last
        images += (row["step"] - previous["step"]) * config.batch_size
        seconds += (row["step"] - previous["step"]) * config.batch_size / row["images_per_s"]
    return images / seconds, out


def use_textbook_blocks(*nets: torch.nn.Module) -> None:
    """Run the blocks as the original project did: upsample then 3x3 conv, 3x3 conv then
    average-pool, shortcut convs at the larger size. Same weights, same function (to rounding);
    ours folds each pair into one cheaper conv (``dishgen.models.layers``)."""
    import types

    import torch.nn.functional as F

    from dishgen.models.layers import DownBlock, UpBlock

    def up(block, x, cond=None):
        h = F.interpolate(F.relu(block._norm(block.norm1, x, cond)), scale_factor=2, mode="nearest")
        h = block.conv2(F.relu(block._norm(block.norm2, block.conv1(h), cond)))
        return h + block.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))

    def down(block, x):
        if not block.downsample:  # nothing to fold
            return block.conv2(F.relu(block.conv1(F.relu(x)))) + block.shortcut(x)
        h = F.avg_pool2d(block.conv2(F.relu(block.conv1(x if block.first else F.relu(x)))), 2)
        skip = block.shortcut(F.avg_pool2d(x, 2)) if block.first else F.avg_pool2d(block.shortcut(x), 2)
        return h + skip

    for net in nets:
        for module in net.modules():
            if isinstance(module, UpBlock):
                module.forward = types.MethodType(up, module)
            elif isinstance(module, DownBlock):
                module.forward = types.MethodType(down, module)


def network_config(widths: str, c_dim: int):
    """``ours``: the ``cpu`` preset's networks (cond_dim 128, channels capped at 8x base).
    ``original``: the original project's widths at 64 px, base 32 (512-d CLIP captions, cond_dim
    512, no channel cap, one more D block at 4x4): G 9.78M parameters as the original's; D 5.15M
    (the original's is said to have 7.51M, but this D's step cost matches the original's
    170.9 GFLOP: see docs/cgan.md)."""
    from dishgen.models import cgan

    if widths == "original":
        return cgan.CGANConfig(resolution=64, c_dim=ORIGINAL_C_DIM, cond_dim=512, base_channels=32,
                               max_channel_mult=16, d_extra_blocks=1)
    return cgan.CGANConfig(resolution=64, c_dim=c_dim, base_channels=32)


ORIGINAL_C_DIM = 512  # the original's CLIP ViT-B/32 caption vectors


class Variant:
    """One way of running a training step, with its own networks and optimizers (same init)."""

    def __init__(self, name: str, c_dim: int, *, original: bool = False, precision: str = "fp32",
                 channels_last: bool = False, widths: str = "ours", compile: bool = False):
        from dishgen.models import cgan

        self.name, self.original, self.channels_last = name, original, channels_last
        self.dtype = torch.bfloat16 if precision == "bf16" else None
        torch.manual_seed(0)
        config = network_config(widths, c_dim)
        # Captions of another width: a fixed random projection of ours, renormalised.
        self.project = None if config.c_dim == c_dim else torch.randn(c_dim, config.c_dim) / c_dim**0.5
        self.G, self.D = cgan.Generator(config), cgan.Discriminator(config)
        self.params = (sum(p.numel() for p in self.G.parameters()), sum(p.numel() for p in self.D.parameters()))
        self.gflop = float("nan")  # per step without R1, set by count_gflop()
        if original:
            use_textbook_blocks(self.G, self.D)
        if channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        # compile: as the trainer's compile=true (the graphs build on the first step: time_compile())
        self.compiled = compile and _compile(self.G, self.D)
        self.compile_s = self.compile_cpu_s = float("nan")
        fused = not original  # ours uses the fused Adam kernel, like the trainer
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.0, 0.99), fused=fused)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.0, 0.99), fused=fused)
        self.times: list[float] = []  # wall seconds per step
        self.cpu_times: list[float] = []  # CPU seconds per step (all threads): what load does not change

    def step(self, real: torch.Tensor, c: torch.Tensor, step: int) -> None:
        if self.project is not None:
            c = torch.nn.functional.normalize(c @ self.project, dim=1)
        start, cpu_start = time.perf_counter(), time.process_time()
        (self._original_step if self.original else self._our_step)(real, c, step)
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)

    def _original_step(self, real, c, step):
        """fp32, contiguous, per-image augmentation, a D pass each for real, fake and mismatch."""
        from dishgen.models import cgan
        from dishgen.models.augment import apply_params_loop, sample_params

        def augment(x):
            return apply_params_loop(x, sample_params(x.shape[0], 64, 64, GEOMETRY["augment"]))

        G, D = self.G, self.D
        fake = G(torch.randn(16, 128), c).detach()
        real_logits, fake_logits = D(augment(real), c), D(augment(fake), c)
        wrong_logits = D(augment(real), c[torch.randperm(16)])
        loss_D = sum(cgan.d_hinge_loss(real_logits, fake_logits)) + 0.5 * torch.relu(1 + wrong_logits).mean()
        if step % 16 == 0:
            x = augment(real).detach().requires_grad_(True)
            loss_D = loss_D + 0.05 * 16 * cgan.r1_penalty(D(x, c), x)
        self.opt_D.zero_grad()
        loss_D.backward()
        self.opt_D.step()
        loss_G = cgan.g_hinge_loss(D(augment(G(torch.randn(16, 128), c)), c))
        self.opt_G.zero_grad()
        loss_G.backward()
        self.opt_G.step()

    def _our_step(self, real, c, step):
        """The math of dishgen.train.cgan's step: one G forward (its fakes serve both steps), one D
        pass whose features serve real, fake and mismatched logits, D frozen in the G step."""
        from dishgen.models import cgan
        from dishgen.models.augment import diff_augment
        from dishgen.train.cgan import eager_if

        G, D, policy = self.G, self.D, GEOMETRY["augment"]
        autocast = torch.autocast("cpu", dtype=self.dtype or torch.float32, enabled=self.dtype is not None)
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        with autocast, eager_if(self.compiled and step % 16 == 0):  # R1 steps run eagerly, as in the trainer
            fake = G(torch.randn(16, 128), c)  # kept with its graph for the G step
            h = D.features(diff_augment(torch.cat([real, fake.detach().float()]), policy))
            real_logits, fake_logits = D.logits(h[:16], c), D.logits(h[16:], c)
            loss_D = sum(cgan.d_hinge_loss(real_logits, fake_logits))
            c_wrong = c[torch.randperm(16)]
            loss_D = loss_D + 0.5 * cgan.mismatch_loss(D.logits(h[:16], c_wrong), (c_wrong != c).any(1))
        if step % 16 == 0:
            with eager_if(self.compiled):
                x = diff_augment(real, policy).detach().requires_grad_(True)
                loss_D = loss_D + 0.05 * 16 * cgan.r1_penalty(D(x, c), x)
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()
        D.requires_grad_(False)
        with autocast:
            loss_G = cgan.g_hinge_loss(D(diff_augment(fake, policy), c))
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        D.requires_grad_(True)


def _compile(G: torch.nn.Module, D: torch.nn.Module) -> bool:
    from dishgen.train.cgan import compile_networks

    if not compile_networks(G, D):
        raise SystemExit("torch.compile does not work here (see the warning above)")
    return True


def time_compile(variant, images: torch.Tensor, c_all: torch.Tensor) -> None:
    """The first step of a compiled variant builds its graphs: its wall and CPU seconds (one step
    included) are the compile cost. A fresh ``TORCHINDUCTOR_CACHE_DIR`` gives the cold figure."""
    from _common import own_cpu_seconds

    cpu_start = own_cpu_seconds()  # the C++ compiler runs in child processes: their CPU time counts
    variant.step(images[:16], c_all[:16], 1)
    variant.cpu_times.pop()
    variant.compile_s, variant.compile_cpu_s = variant.times.pop(), own_cpu_seconds() - cpu_start


class ConvPeakProbe:
    """The yardstick: a plain fp32 3x3 conv (128 -> 128 channels, 32x32, batch 16, channels-last,
    forward only), run in the same rounds as the training steps, so "percent of the conv peak" is
    measured under the same load."""

    original = False
    params = (0, 0)

    def __init__(self, repeats: int = 4, backward: bool = False):
        self.name = (f"conv probe (3x3 conv 128->128, 32x32, batch 16, channels_last, "
                     f"{'forward + backward' if backward else 'forward'})")
        self.conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(memory_format=torch.channels_last)
        self.x = torch.randn(16, 128, 32, 32).contiguous(memory_format=torch.channels_last)
        self.backward = backward
        self.x.requires_grad_(backward)
        self.repeats = repeats
        # forward; the backward pass adds the input and the weight gradients, each as costly
        self.gflop = 2 * 16 * 32 * 32 * 128 * 128 * 9 * repeats * (3 if backward else 1) / 1e9
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def step(self, real=None, c=None, step=0) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(self.repeats):
            if self.backward:
                self.conv(self.x).sum().backward()
            else:
                with torch.no_grad():
                    self.conv(self.x)
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)


def load_training_data(data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All training images in memory as floats in [-1, 1], and their MiniLM caption vectors."""
    from dishgen.data.dataset import load_split
    from dishgen.images_tensor import load_images_uint8
    from dishgen.text import load_text_encoder
    from dishgen.text.cache import encode_cached

    rows = load_split(data, "train")
    c_all = encode_cached(load_text_encoder("minilm"), [r.text for r in rows], data / ".cache")
    return load_images_uint8([r.path for r in rows], 64).float() / 127.5 - 1, c_all


def count_gflop(variant, images: torch.Tensor, c_all: torch.Tensor) -> float:
    """GFLOP of one training step without R1 (``torch.utils.flop_counter``: convs, matmuls and
    their backward passes; element-wise work is not counted). The step runs for real (a warm-up)."""
    from torch.utils.flop_counter import FlopCounterMode

    from dishgen.train.cgan import eager_if

    with FlopCounterMode(display=False) as counter, eager_if(getattr(variant, "compiled", False)):
        variant.step(images[:16], c_all[:16], 1)
    for timings in (variant.times, variant.cpu_times):
        timings.pop()  # not a timed step
    variant.gflop = counter.get_total_flops() / 1e9
    return variant.gflop


def like_for_like_variants(c_dim: int) -> list:
    """The original loop and ours, each at the original's widths and at ours, plus the conv probe."""
    return [
        Variant("original loop, original widths", c_dim, original=True, widths="original"),
        Variant("our loop, original widths (fp32, channels_last)", c_dim, channels_last=True, widths="original"),
        Variant("original loop, our widths", c_dim, original=True),
        Variant("our loop, our widths (fp32, channels_last)", c_dim, channels_last=True),
        Variant("our loop, our widths (fp32, channels_last, compile=true)", c_dim, channels_last=True, compile=True),
        ConvPeakProbe(repeats=2, backward=True),
        ConvPeakProbe(),
    ]


def interleaved_training(data: Path, rounds: int, precisions=("fp32", "bf16"), variants=None) -> list:
    """Run every variant one step at a time, in turn, so they share the machine's load equally."""
    import random

    images, c_all = load_training_data(data)
    if variants is None:
        variants = [Variant("original (fp32, contiguous, per-image aug, 3 D passes)", c_all.shape[1], original=True)]
        for precision in precisions:
            for channels_last in (False, True):
                name = f"ours {precision}{', channels_last' if channels_last else ''}"
                variants.append(Variant(name, c_all.shape[1], precision=precision, channels_last=channels_last))
    else:
        variants = variants(c_all.shape[1])
    for variant in variants:
        if isinstance(variant, Variant):
            count_gflop(variant, images, c_all)
            if variant.compiled:
                time_compile(variant, images, c_all)
    order = random.Random(0)
    for step in range(1, rounds + 1):
        idx = torch.randint(0, len(images), (16,))
        for variant in order.sample(variants, len(variants)):
            variant.step(images[idx], c_all[idx], step)
        print(f"  round {step}/{rounds}: " + ", ".join(f"{v.times[-1]:.2f}s" for v in variants), flush=True)
    return variants


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


def time_generation(model_dir: Path, dtype: str | None, batch_size: int = 64, n: int = 256) -> tuple[float, float]:
    """Images per wall-second and per CPU-second of batched generation (text encoding included)."""
    from dishgen.families.cgan import load_generator

    gen = load_generator(model_dir, dtype=dtype)
    prompts = [f"a photo of dish number {i}" for i in range(16)]
    gen.generate(prompts[:2], num_images=batch_size // 2, seed=0, batch_size=batch_size)  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    gen.generate(prompts, num_images=n // len(prompts), seed=1, batch_size=batch_size)
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu_start)


def profile_our_step(data: Path, steps: int, widths: str, compile: bool = False) -> None:
    """Where our step's time goes: torch.profiler over ``steps`` steps (after 3 warm-up steps).
    Shares of CPU time are what to read: absolute times move with the machine's load."""
    from torch.profiler import ProfilerActivity, profile

    images, c_all = load_training_data(data)
    variant = Variant(f"our loop, {widths} widths", c_all.shape[1], channels_last=True, widths=widths, compile=compile)
    for step in range(1, 4):
        variant.step(images[:16], c_all[:16], step)
    with LoadWatch() as load, profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(4, 4 + steps):
            idx = torch.randint(0, len(images), (16,))
            variant.step(images[idx], c_all[idx], step)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print(f"median step {statistics.median(variant.times[3:]):.3f} s; {load.report()}")


def like_for_like(data: Path, args) -> None:
    """Same function, faster loop vs smaller network: four variants and the conv probe, interleaved."""
    warm = 2
    with LoadWatch() as load:
        variants = interleaved_training(data, args.rounds, variants=like_for_like_variants)
    probe = variants[-1]
    peak = probe.gflop / statistics.median(probe.times[warm:])
    # CPU seconds leave out the time other processes held the core (with one thread; with more,
    # threads that spin while waiting for each other add CPU time of their own).
    peak_cpu = probe.gflop / statistics.median(probe.cpu_times[warm:])
    base = variants[0]
    print(f"\ntraining step, interleaved, {args.rounds} rounds (64 px, base channels 32, batch 16, DiffAugment, "
          "mismatch, lazy R1/16); GFLOP of a step without R1:\n")
    print("| variant | G params | D params | GFLOP/step | s/step (median) | GFLOP/s | % of conv probe | "
          "CPU-s/step | % of conv probe, CPU time | speed vs original loop at original widths |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for v in variants:
        med, cpu = statistics.median(v.times[warm:]), statistics.median(v.cpu_times[warm:])
        ratio = statistics.median(b / t for b, t in zip(base.times[warm:], v.times[warm:], strict=True))
        rows.append({"name": v.name, "G_params": v.params[0], "D_params": v.params[1], "gflop_per_step": v.gflop,
                     "s_per_step": med, "gflop_per_s": v.gflop / med, "cpu_s_per_step": cpu,
                     "gflop_per_cpu_s": v.gflop / cpu, "speed_vs_original": ratio})
        params = ("", "") if isinstance(v, ConvPeakProbe) else (f"{v.params[0] / 1e6:.2f}M", f"{v.params[1] / 1e6:.2f}M")
        print(f"| {v.name} | {params[0]} | {params[1]} | {v.gflop:.1f} | {med:.3f} | {v.gflop / med:.0f} | "
              f"{100 * v.gflop / med / peak:.0f}% | {cpu:.3f} | {100 * v.gflop / cpu / peak_cpu:.0f}% | "
              f"{'' if isinstance(v, ConvPeakProbe) else load.ratio(ratio)} |")
    loop_gain = rows[0]["s_per_step"] / rows[1]["s_per_step"]
    net_gain = rows[1]["s_per_step"] / rows[3]["s_per_step"]
    paired = statistics.median(a / b for a, b in zip(variants[0].times[warm:], variants[1].times[warm:], strict=True))
    print(f"\nsame function, faster loop (original widths, original loop / ours): {load.ratio(paired)} "
          f"(FLOP ratio {rows[0]['gflop_per_step'] / rows[1]['gflop_per_step']:.2f}x)")
    print(f"smaller network (our loop, original widths / our widths): {load.ratio(net_gain)} "
          f"(FLOP ratio {rows[1]['gflop_per_step'] / rows[3]['gflop_per_step']:.2f}x)")
    print(f"together (original loop at original widths / our loop at our widths): {load.ratio(loop_gain * net_gain)}")
    for i, v in enumerate(variants):
        if getattr(v, "compiled", False):
            eager = next(e for e in variants if isinstance(e, Variant) and not e.original and not e.compiled
                         and e.params == v.params)
            gain = statistics.median(a / b for a, b in zip(eager.times[warm:], v.times[warm:], strict=True))
            gain_cpu = statistics.median(a / b for a, b in zip(eager.cpu_times[warm:], v.cpu_times[warm:], strict=True))
            saved = statistics.median(eager.cpu_times[warm:]) - statistics.median(v.cpu_times[warm:])
            saved_wall = statistics.median(eager.times[warm:]) - statistics.median(v.times[warm:])
            print(f"compile=true ({v.name}): {load.ratio(gain)} eager per step, {gain_cpu:.2f}x by CPU time; the first "
                  f"step (graph build) took {v.compile_s:.1f} s wall, {v.compile_cpu_s:.1f} CPU-s (compiler processes "
                  f"included), paid back after {v.compile_cpu_s / saved if saved > 0 else float('inf'):.0f} steps by "
                  f"CPU time, {v.compile_s / saved_wall if saved_wall > 0 else float('inf'):.0f} by wall time")
            rows[i].update(compile_s=v.compile_s, compile_cpu_s=v.compile_cpu_s, speed_vs_eager=gain,
                           speed_vs_eager_cpu=gain_cpu)
    print(f"conv probe: {peak:.0f} GFLOP/s wall, {peak_cpu:.0f} GFLOP per CPU-second\n{load.report()}")
    report = {"rows": rows, "conv_probe_gflop_per_s": peak, "conv_probe_gflop_per_cpu_s": peak_cpu, "loop_speedup_same_widths": paired,
              "network_speedup": net_gain, "load": load.as_dict(), "rounds": args.rounds,
              "threads": torch.get_num_threads()}
    if args.loop_steps:
        overrides = {"cond_dim": 512, "max_channel_mult": 16, "d_extra_blocks": 1}
        with LoadWatch() as loop_load:
            ips, _ = time_our_loop(data, args.loop_steps, precision=args.loop_precision, channels_last=True,
                                   **overrides)
        print(f"\nreal train() loop at the original's widths (MiniLM captions: c_dim 384), {args.loop_precision}, "
              f"channels_last: {16 / ips:.3f} s/step, {loop_load.ratio(rows[0]['s_per_step'] * ips / 16)} the "
              f"original loop at its widths above (not interleaved with it)\n{loop_load.report()}")
        report["train_loop_original_widths_s_per_step"] = 16 / ips
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the full FFML set at 64 px)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved training steps per variant")
    parser.add_argument("--loop-steps", type=int, default=25, help="steps of the real train() loop")
    parser.add_argument("--loop-precision", default="fp32", help="precision of the real-loop run")
    parser.add_argument("--precisions", default="fp32,bf16", help="precisions of the interleaved variants")
    parser.add_argument("--gen-dtypes", default="fp32,bf16", help="dtypes for the generation timing")
    parser.add_argument("--like-for-like", action="store_true",
                        help="the original loop and ours, each at the original's widths and at ours, with "
                             "parameters, GFLOP per step and percent of a conv probe's speed")
    parser.add_argument("--json", type=Path, default=None, help="--like-for-like: also write the figures here")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="only profile this many steps of our loop (torch.profiler) and print the top ops")
    parser.add_argument("--profile-widths", choices=["ours", "original"], default="ours")
    parser.add_argument("--compile", action="store_true", help="--profile: the step with compile=true")
    args = parser.parse_args()
    data = args.data or build_ffml_dataset(Path(tempfile.gettempdir()) / "dishgen-bench-ffml-64")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu {torch.backends.cpu.get_cpu_capability()}, "
          f"data {data}", flush=True)
    if args.profile:
        return profile_our_step(data, args.profile, args.profile_widths, args.compile)
    if args.like_for_like:
        return like_for_like(data, args)

    with LoadWatch() as load:
        variants = interleaved_training(data, args.rounds, tuple(args.precisions.split(",")))
    warm = 3  # leave out the first steps (allocation, oneDNN kernel selection)
    base = variants[0]
    print("\ntraining step, interleaved (64 px, base channels 32, batch 16, DiffAugment, mismatch, lazy R1/16):")
    threads = torch.get_num_threads()
    for v in variants:
        med, cpu = statistics.median(v.times[warm:]), statistics.median(v.cpu_times[warm:])
        ratios = [b / t for b, t in zip(base.times[warm:], v.times[warm:], strict=True)]
        print(f"  {v.name:56s} {med:5.2f} s/it wall  {16 / med:5.1f} images/s  "
              f"{load.ratio(statistics.median(ratios))} vs original;"
              f"  {cpu:5.2f} CPU-s/it -> {16 * threads / cpu:5.1f} images/s on {threads} idle core(s)")
    print(f"  {load.report()}")

    with LoadWatch() as loop_load:
        ips, run = time_our_loop(data, args.loop_steps, precision=args.loop_precision, channels_last=True)
    original = 16 / statistics.median(base.times[warm:])
    print(f"\nreal train() loop ({args.loop_precision}, channels_last): {ips:.1f} images/s ({16 / ips:.2f} s/it), "
          f"{loop_load.ratio(ips / original)} the original's cost measured above (not interleaved with it)")
    print(f"  {loop_load.report()}")
    print("\nbf16 autocast accuracy on the trained networks:", json.dumps(bf16_accuracy(run / "model"), indent=1))
    print("\ngeneration images/s (exported EMA model, 64 px, batch 64, 256 images), interleaved:")
    threads = torch.get_num_threads()
    dtypes = args.gen_dtypes.split(",")
    values: dict[str, list[tuple[float, float]]] = {dtype: [] for dtype in dtypes}
    with LoadWatch() as gen_load:
        for _ in range(3):
            for dtype in dtypes:
                values[dtype].append(time_generation(run / "model", None if dtype == "fp32" else dtype))
    for dtype in dtypes:
        wall = [v[0] for v in values[dtype]]
        cpu = statistics.median(v[1] for v in values[dtype])
        vs = "" if dtype == dtypes[0] else \
            f", {gen_load.ratio(statistics.median(wall) / statistics.median(v[0] for v in values[dtypes[0]]))} {dtypes[0]}"
        print(f"  {dtype}: {statistics.median(wall):6.1f} images/s wall (runs: {', '.join(f'{v:.1f}' for v in wall)}{vs});"
              f" {cpu:6.1f} images per CPU-second -> {cpu * threads:6.1f} images/s on {threads} idle core(s)")
    print(f"  {gen_load.report()}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
