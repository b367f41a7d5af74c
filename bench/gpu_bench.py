"""One GPU benchmark, offline: LoRA at real shapes (ours vs diffusers' examples), cGAN, cVAE, bundled model.

Run through ``bench/gpu.sh`` (which sets the offline environment), or directly:

    python bench/gpu_bench.py --out OUT                 # on a CUDA GPU, about 8 minutes
    python bench/gpu_bench.py --out OUT --smoke         # tiny shapes on the CPU, well under a minute

Parts, each under its own time cap (``--caps`` scales them) so the whole run ends in under 8 minutes;
a part that runs out of time or fails is recorded as such and the next one starts:

- ``lora-sd15``: the real-size SD 1.5 architecture with random weights (built from its published
  config, no download) at 512 px, batch 4, fp16 and bf16: dishgen's trainer (latent and text
  caches) beside a step written as diffusers' ``train_text_to_image_lora.py`` does it, interleaved
  per precision; seconds per step, images/s and peak GPU memory.
- ``lora-sdxl``: the same for SDXL base 1.0 shapes at 1024 px, batch 1, against the step of
  diffusers' ``train_text_to_image_lora_sdxl.py``.
- ``gan``: the real ``train()`` loops of the cGAN (our widths and the original project's widths)
  and of the cVAE (``cpu`` preset shapes), fp32 and bf16: images/s.
- ``bundled``: the bundled model's batched generation: images/s.

Writes ``OUT/gpu_bench.json`` (every figure, the machine, the load) and ``OUT/gpu_bench.md`` (one
table). In ``--smoke`` every part uses the tests' tiny models at 64 px on the CPU, to prove the
script end to end; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny model builders, the sample dataset writer
sys.path.insert(0, str(ROOT / "bench"))

from _common import LoadWatch, keep_first_images, reset_accelerate_state, warmup_warning  # noqa: E402

# Seconds per part on a GPU (the sum stays under 8 minutes with the set-up around them).
CAPS = {"lora-sd15": 150, "lora-sdxl": 190, "gan": 75, "bundled": 30}
SMOKE_CAPS = {"lora-sd15": 25, "lora-sdxl": 25, "gan": 25, "bundled": 15}


class PartTimeout(Exception):
    """A part used up its time cap."""


@contextlib.contextmanager
def time_cap(seconds: int):
    """Raise :class:`PartTimeout` in the main thread after ``seconds`` (SIGALRM)."""
    def expire(signum, frame):
        raise PartTimeout(f"time cap of {seconds} s reached")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(max(1, int(seconds)))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class Bench:
    """Shared state: the device, the rows of the table, the work folder."""

    def __init__(self, out: Path, smoke: bool, work: Path, caps_scale: float):
        import torch

        self.torch = torch
        self.out, self.smoke, self.work = out, smoke, work
        self.cuda = torch.cuda.is_available() and not smoke
        self.device = "cuda" if self.cuda else "cpu"
        self.caps = {k: v * caps_scale for k, v in (SMOKE_CAPS if smoke else CAPS).items()}
        self.rows: list[dict] = []
        self.parts: dict[str, dict] = {}
        self.data_cache: dict[int, Path] = {}

    # -- helpers --------------------------------------------------------------------------------
    def dataset(self, size: int, train_images: int | None = None) -> Path:
        """The tests' sample photos at ``size`` px; ``train_images`` keeps only that many in the
        train split, so that a short warm-up fills dishgen's latent cache."""
        from conftest import write_tiny_dataset

        key = (size, train_images)
        if key not in self.data_cache:
            folder = write_tiny_dataset(self.work / f"data{size}_{train_images}", size=size)
            if train_images:
                keep_first_images(folder, train_images)
            self.data_cache[key] = folder
        return self.data_cache[key]

    def precisions(self) -> list[str]:
        if not self.cuda:
            return ["no"]
        return ["fp16", "bf16"] if self.torch.cuda.is_bf16_supported() else ["fp16"]

    def reset_memory(self) -> None:
        """Between variants: free GPU memory, restart the peak count, forget accelerate's state."""
        reset_accelerate_state()
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        if not self.cuda:
            return None
        return self.torch.cuda.max_memory_allocated() / 2**30

    def add(self, part: str, name: str, **figures) -> dict:
        row = {"part": part, "name": name, **figures}
        self.rows.append(row)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}
        print(f"  [{part}] {name}: {json.dumps(shown)}", flush=True)
        return row

    def run_part(self, part: str, fn) -> None:
        cap = self.caps[part]
        print(f"\n== {part} (cap {cap:.0f} s)", flush=True)
        started = time.perf_counter()
        status = "ok"
        try:
            with time_cap(cap):
                fn()
        except PartTimeout as err:
            status = f"timed out: {err}"
        except Exception as err:  # noqa: BLE001 (record and go on to the next part)
            status = f"failed: {type(err).__name__}: {str(err)[:300]}"
            traceback.print_exc()
        self.parts[part] = {"status": status, "seconds": round(time.perf_counter() - started, 1)}
        print(f"== {part}: {status} in {self.parts[part]['seconds']} s", flush=True)
        self.reset_memory()

    # -- LoRA -----------------------------------------------------------------------------------
    def build_base(self, kind: str) -> Path:
        """The pipeline folder: tiny (smoke) or shape-only real size, built on the device, fp16."""
        from tiny_models import build_tiny_sd, build_tiny_sdxl, write_clip_tokenizer

        folder = self.work / f"{kind}_base"
        if (folder / "model_index.json").is_file():
            return folder
        started = time.perf_counter()
        if self.smoke:
            (build_tiny_sd if kind == "sd15" else build_tiny_sdxl)(folder)
        else:
            from dishgen.diffusion import build_shape_only_sd15, build_shape_only_sdxl

            build = build_shape_only_sd15 if kind == "sd15" else build_shape_only_sdxl
            tokenizer = write_clip_tokenizer(self.work / "clip_tokenizer")
            with self.torch.device(self.device):  # random init on the GPU: seconds, not minutes
                build(folder, tokenizer, dtype=self.torch.float16)
        self.add(f"lora-{kind}", "build shape-only pipeline" if not self.smoke else "build tiny pipeline",
                 seconds=time.perf_counter() - started)
        return folder

    def lora(self, kind: str) -> None:
        import bench_lora
        import bench_lora_sdxl

        part = f"lora-{kind}"
        base = self.build_base(kind)
        # 8 training images and dishgen's random_flip off (one cached latent per image): the warm-up
        # (2 epochs) fills dishgen's latent and text caches. With flips on, an image met twice has an
        # even chance of one flip never seen, so timed "cached" steps would still run the VAE.
        if self.smoke:
            resolution, batch, steps, warmup = 64, 2, 2, 4
        elif kind == "sd15":
            resolution, batch, steps, warmup = 512, 4, 8, 4
        else:
            resolution, batch, steps, warmup = 1024, 1, 5, 16
        data = self.dataset(resolution, train_images=8)
        if warning := warmup_warning(warmup, batch, 8):
            print(f"{part}: {warning}")
        plain = bench_lora.plain_diffusers_steps if kind == "sd15" else bench_lora_sdxl.plain_sdxl_steps
        ours = bench_lora.dishgen_steps if kind == "sd15" else bench_lora_sdxl.dishgen_steps
        for precision in self.precisions():
            medians = {}
            with LoadWatch() as load:
                for variant in ("plain", "ours"):
                    self.reset_memory()
                    if variant == "plain":
                        seconds = plain(base, data, steps, warmup, batch_size=batch, resolution=resolution,
                                        device=self.device, mixed_precision=precision)
                    else:
                        overrides = [f"resolution={resolution}", f"batch_size={batch}",
                                     f"mixed_precision={precision}", "gradient_checkpointing=false", "random_flip=false"]
                        seconds = ours(base, data, self.work / f"run_{kind}_{precision}_{time.time_ns()}", steps,
                                       warmup, overrides, device=self.device)
                    medians[variant] = statistics.median(seconds)
                    self.add(part, f"{'dishgen trainer (cached)' if variant == 'ours' else 'diffusers example step'}"
                             f" {resolution} px {precision}", variant=variant, precision=precision,
                             resolution=resolution, batch=batch, steps=len(seconds),
                             s_per_step=medians[variant], images_per_s=batch / medians[variant],
                             peak_gpu_gib=self.peak_gib())
            self.rows[-1]["ratio_vs_plain"] = medians["ours"] / medians["plain"]
            self.rows[-1]["ratio_note"] = load.ratio(medians["ours"] / medians["plain"])
            self.rows[-1]["load"] = load.as_dict()

    # -- GAN, VAE, bundled ----------------------------------------------------------------------
    def gan(self) -> None:
        import bench_cgan

        data = self.dataset(64)
        precisions = ["fp32", "bf16"] if self.cuda else ["fp32"]
        steps = 7 if self.smoke else 40  # log rows every 5 steps: the first window is left out
        shapes = {"our widths": {}, "original widths": {"cond_dim": 512, "max_channel_mult": 16,
                                                        "d_extra_blocks": 1}}
        small = {"base_channels": 8, "batch_size": 4, "resolution": 32} if self.smoke else {}
        for precision in precisions:
            for label, shape in shapes.items():
                self.reset_memory()
                ips, _ = bench_cgan.time_our_loop(data, steps, device=self.device, precision=precision,
                                                  text_cache=False, **shape, **small)
                self.add("gan", f"cGAN train() {small.get('resolution', 64)} px {label} {precision}", precision=precision, images_per_s=ips,
                         batch=small.get("batch_size", 16), peak_gpu_gib=self.peak_gib())
            self.reset_memory()
            ips = self.cvae_loop(data, steps, precision)
            self.add("gan", f"cVAE train() 64 px cpu preset{' (base 8)' if self.smoke else ''} {precision}", precision=precision, images_per_s=ips,
                     peak_gpu_gib=self.peak_gib())

    def cvae_loop(self, data: Path, steps: int, precision: str) -> float:
        from dishgen.config import resolve_config
        from dishgen.train.cvae import PRESETS, CVAETrainConfig, train

        out = Path(tempfile.mkdtemp(prefix="gpu-bench-cvae-", dir=self.work))
        overrides = {"max_steps": steps, "log_every": 5, "sample_every": 10**6, "checkpoint_every": 10**6}
        if precision != "fp32":
            overrides["mixed_precision"] = precision
        if self.smoke:
            overrides.update(base_channels=8, batch_size=8)
        config = resolve_config(CVAETrainConfig, preset="cpu", presets=PRESETS, overrides=overrides)
        train(config, data, out, device=self.device)
        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()
                if "images_per_s" in line]
        return statistics.median(r["images_per_s"] for r in rows[1:] or rows)

    def bundled(self) -> None:
        from dishgen.generation import load_generator

        generator = load_generator("default", device=self.device)
        captions = ["Sarma, cabbage rolls in a clay pot", "Ćevapi with onions", "Baklava", "Goulash in a bowl"]
        per_prompt = 4 if self.smoke else 256
        generator.generate(captions, num_images=2, seed=0)  # warm-up
        rates = []
        for repeat in range(3):
            if self.cuda:
                self.torch.cuda.synchronize()
            started = time.perf_counter()
            images = generator.generate(captions, num_images=per_prompt, seed=repeat)
            rates.append(len(images) / (time.perf_counter() - started))
        self.add("bundled", f"bundled model generation, {len(images)} images per call",
                 images_per_s=statistics.median(rates), runs=[round(r, 1) for r in rates])

    # -- report ---------------------------------------------------------------------------------
    def write(self, load: LoadWatch, total: float) -> None:
        torch = self.torch
        machine = {"torch": torch.__version__, "python": platform.python_version(), "device": self.device,
                   "gpu": torch.cuda.get_device_name(0) if self.cuda else None, "smoke": self.smoke,
                   "cpu_threads": torch.get_num_threads(), "seconds": round(total, 1), "load": load.as_dict()}
        report = {"machine": machine, "parts": self.parts, "rows": self.rows}
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_bench.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        lines = [f"# dishgen GPU bench{' (smoke: tiny shapes, CPU; the figures mean nothing)' if self.smoke else ''}",
                 "", f"{machine['gpu'] or 'CPU'}, torch {machine['torch']}, {machine['seconds']} s in all. "
                 f"{load.report()}", "",
                 "| part | what | precision | s/step | images/s | peak GPU GiB | ours / diffusers example |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        def cell(row, key, fmt):
            value = row.get(key)
            return fmt.format(value) if isinstance(value, (int, float)) else ""

        for row in self.rows:
            lines.append(f"| {row['part']} | {row['name']} | {row.get('precision', '')} | {cell(row, 's_per_step', '{:.3f}')} | "
                         f"{cell(row, 'images_per_s', '{:.1f}')} | {cell(row, 'peak_gpu_gib', '{:.1f}')} | "
                         f"{row.get('ratio_note', '')} |")
        lines += ["", "| part | status | seconds |", "| --- | --- | --- |"]
        lines += [f"| {name} | {p['status']} | {p['seconds']} |" for name, p in self.parts.items()]
        (self.out / "gpu_bench.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print("\n" + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_bench.json and gpu_bench.md")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: proves the script works")
    parser.add_argument("--parts", default="lora-sd15,lora-sdxl,gan,bundled", help="comma-separated parts to run")
    parser.add_argument("--caps", type=float, default=1.0, help="scale every part's time cap by this")
    parser.add_argument("--workdir", type=Path, default=None, help="keep built models here (default: a temp dir)")
    args = parser.parse_args()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --smoke to check the script on the CPU")
    if args.smoke:
        # One thread: on a shared CPU two threads wait on each other (seen 10x slower under load).
        torch.set_num_threads(1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.out, args.smoke, work, args.caps)
    parts = {"lora-sd15": lambda: bench.lora("sd15"), "lora-sdxl": lambda: bench.lora("sdxl"),
             "gan": bench.gan, "bundled": bench.bundled}
    unknown = set(args.parts.split(",")) - set(parts)
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from {sorted(parts)}")
    started = time.perf_counter()
    with LoadWatch() as load:
        for name in args.parts.split(","):
            bench.run_part(name, parts[name])
    bench.write(load, time.perf_counter() - started)


if __name__ == "__main__":
    main()
