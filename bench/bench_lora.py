"""LoRA training step time: dishgen's trainer against a plain diffusers training step.

Part 1 (tiny pipeline of the tests, 64 px, batch 4, CPU, from a dataset of 512 px PNGs as
``dishgen data build`` writes them): three loops on the same data, model and LoRA, each timed per
optimizer step (median after a warm-up):

- ``plain``: a plain diffusers training step written here, as diffusers' example
  ``train_text_to_image_lora.py`` does it: a ``datasets`` imagefolder whose images are decoded and
  transformed (resize, crop, flip, normalise) when a batch is drawn, tokenisation, VAE encode, text
  encoder, UNet forward/backward, clipping, AdamW.
- ``dishgen (cache)``: ``dishgen.train.lora.train`` with latent and text-embedding caching (the
  default); the per-step ``seconds`` column of its ``log.jsonl``, after the caches have filled.
- ``dishgen (no cache)``: the same with ``cache_latents=false cache_text_embeddings=false``.

The issue's target: dishgen with caching takes at most 0.7x the plain step's time.

Part 2 (``--sd15``): the real-size SD 1.5 architecture with random weights
(:func:`dishgen.diffusion.build_shape_only_sd15`, no download), saved once; on that same folder,
dishgen's trainer with caches (the default) and without (a control) beside the plain diffusers step
above, each variant in its own process (so that its peak resident memory is its own), the order
alternating over ``--sd15-rounds``: seconds per step, peak RSS and the ratio (the issue's target on
a CPU: at most 0.8x the plain step).

dishgen's caches fill on first use, one entry per (image, flip) and per caption, so a cached step is
only timed once the warm-up has met every image. Part 2 therefore trains on ``--sd15-train-images``
(default: one batch) with dishgen's ``random_flip`` off (one cached latent per image, hit from the
second step on; the plain step keeps the example's flip, a PIL transpose that costs well under a
millisecond), warms up one epoch, and warns if the warm-up cannot meet every image. Before that fix
(four images, flips on, one epoch of warm-up) each timed "cached" step had an even chance of a
(image, flip) never seen, i.e. of running the VAE.
On a CPU by default 256 px, batch 1; with ``--device cuda`` 512 px, fp16, batch 4 (the original
project took 7.85 s per step of batch 4 x 4 accumulation on a T4).

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_lora.py
    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_lora.py --skip-tiny --sd15 --sd15-steps 3 --batch-size 2
    .venv/bin/python bench/bench_lora.py --skip-tiny --sd15 --device cuda --resolution 512 --batch-size 4 \\
        --mixed-precision fp16

Timings are noisy on a shared machine: compare the ratios more than the absolute figures.
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
from _common import LoadWatch, keep_first_images, reset_accelerate_state, warmup_warning

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders and the sample dataset writer


def plain_diffusers_steps(base: Path, data: Path, steps: int, warmup: int, batch_size: int, resolution: int,
                          seed: int = 0, device: str = "cpu", mixed_precision: str = "no") -> list[float]:
    """A plain diffusers LoRA training step, as diffusers' example script; seconds per step.

    Data as the example reads it: ``datasets`` imagefolder with ``with_transform`` (each image is
    decoded and transformed when the DataLoader asks for it), transforms equal to its torchvision
    ones (Resize, CenterCrop, RandomHorizontalFlip, ToTensor, Normalize), ``num_workers=0``.
    Precision as the example: frozen models in the ``mixed_precision`` dtype, LoRA weights fp32.
    """
    import numpy as np
    from accelerate import Accelerator
    from datasets import load_dataset
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    reset_accelerate_state()  # another run in this process may have asked for another precision
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").requires_grad_(False)
    for model in (text_encoder, vae, unet):
        model.to(accelerator.device, **({} if weight_dtype == torch.float32 else {"dtype": weight_dtype}))
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    cast_training_params(unet, dtype=torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    lr_scheduler = get_scheduler("constant", optimizer)

    def train_transform(image: Image.Image) -> torch.Tensor:
        w, h = image.size  # Resize(resolution) on the shorter side, bilinear
        scale = resolution / min(w, h)
        image = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
        w, h = image.size  # CenterCrop(resolution)
        left, top = (w - resolution) // 2, (h - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        if torch.rand(()) < 0.5:  # RandomHorizontalFlip
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32) / 255.0  # ToTensor, Normalize([0.5], [0.5])
        return (torch.from_numpy(array).permute(2, 0, 1) - 0.5) / 0.5

    def preprocess_train(examples):
        examples["pixel_values"] = [train_transform(image.convert("RGB")) for image in examples["image"]]
        examples["input_ids"] = tokenizer(examples["text"], max_length=tokenizer.model_max_length,
                                          padding="max_length", truncation=True, return_tensors="pt").input_ids
        return examples

    def collate_fn(examples):
        pixel_values = torch.stack([example["pixel_values"] for example in examples]).float()
        return {"pixel_values": pixel_values, "input_ids": torch.stack([example["input_ids"] for example in examples])}

    train_dataset = load_dataset("imagefolder", data_dir=str(data))["train"].with_transform(preprocess_train)
    loader = torch.utils.data.DataLoader(train_dataset, shuffle=True, collate_fn=collate_fn,
                                         batch_size=batch_size, num_workers=0, drop_last=True)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)

    times: list[float] = []
    step = 0
    while step < warmup + steps:
        batches = iter(loader)
        while step < warmup + steps:
            started = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            pixel_values = batch["pixel_values"].to(accelerator.device, dtype=weight_dtype)
            latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      device=latents.device).long()
            noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(batch["input_ids"].to(accelerator.device), return_dict=False)[0]
            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(model_pred.float(), noise.float(), reduction="mean")
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            loss.item()
            if step >= warmup:
                times.append(time.perf_counter() - started)
            step += 1
    return times


def dishgen_steps(base: Path, data: Path, out: Path, steps: int, warmup: int, overrides: list[str],
                  device: str | None = None) -> list[float]:
    """Run dishgen's trainer; the ``seconds`` of each step after the warm-up."""
    from dishgen.train.lora import resolve_train_config, train

    config = resolve_train_config(out, base=str(base), overrides=[
        f"max_steps={warmup + steps}", "sample_every=0", "checkpoint_every=0", "lora_rank=4", "lora_alpha=4",
        "log_with=none", *overrides])
    train(config, data, out, device=device)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["seconds"] for r in rows[warmup:]]


SD15_OURS_OVERRIDES = ["random_flip=false"]  # one cached latent per image (see the module docstring)
SD15_VARIANTS = ("plain", "ours", "nocache")


def sd15_variant(args) -> None:
    """Child process: one SD 1.5 variant; prints its step times and peak memory as JSON."""
    import resource

    base, data, out = Path(args.base), Path(args.data), Path(args.out)
    if args.variant == "plain":
        seconds = plain_diffusers_steps(base, data, args.sd15_steps, args.sd15_warmup, args.batch_size,
                                        args.resolution, device=args.device or "cpu",
                                        mixed_precision=args.mixed_precision)
    else:
        cuda = (args.device or "cpu").startswith("cuda")
        overrides = [f"resolution={args.resolution}", f"batch_size={args.batch_size}",
                     f"mixed_precision={args.mixed_precision}",
                     "gradient_checkpointing=" + ("true" if cuda else "false"), *SD15_OURS_OVERRIDES]
        if args.variant == "nocache":
            overrides += ["cache_latents=false", "cache_text_embeddings=false"]
        seconds = dishgen_steps(base, data, out, args.sd15_steps, args.sd15_warmup, overrides,
                                device=args.device or "cpu")
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print("RESULT " + json.dumps({"seconds": seconds, "peak_gib": peak_gib}))


def run_sd15_variant(variant: str, args, base: Path, data: Path, out: Path) -> dict:
    import subprocess

    command = [sys.executable, __file__, "--variant", variant, "--base", str(base), "--data", str(data),
               "--out", str(out), "--resolution", str(args.resolution), "--batch-size", str(args.batch_size),
               "--sd15-steps", str(args.sd15_steps), "--sd15-warmup", str(args.sd15_warmup),
               "--mixed-precision", args.mixed_precision, *(["--device", args.device] if args.device else []),
               *(["--threads", str(args.threads)] if args.threads else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"SD 1.5 {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def summary(name: str, seconds: list[float], reference: float | None = None, load: LoadWatch | None = None) -> float:
    median = statistics.median(seconds)
    ratio = f"  ratio {load.ratio(median / reference) if load else f'{median / reference:.2f}x'} plain" \
        if reference else ""
    print(f"{name:<22} median {median * 1000:7.1f} ms/step  ({1 / median:5.1f} steps/s, n={len(seconds)}){ratio}")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant and round (tiny part)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first (they fill dishgen's caches)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2, help="repeat the three variants, interleaved")
    parser.add_argument("--data-size", type=int, default=512, help="pixel size of the dataset's PNGs")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--sd15", action="store_true", help="also time the real-size SD 1.5 architecture")
    parser.add_argument("--sd15-steps", type=int, default=3, help="timed steps per SD 1.5 variant and round")
    parser.add_argument("--sd15-warmup", type=int, default=None,
                        help="untimed steps first (SD 1.5 part; default: one epoch of --sd15-train-images)")
    parser.add_argument("--sd15-train-images", type=int, default=None,
                        help="training images in the SD 1.5 part (default: one batch, so the warm-up fills the caches)")
    parser.add_argument("--sd15-base", default=None,
                        help="use this saved pipeline instead of building the shape-only SD 1.5")
    parser.add_argument("--sd15-rounds", type=int, default=1, help="run the three SD 1.5 variants this many times")
    parser.add_argument("--device", default=None)
    parser.add_argument("--resolution", type=int, default=None, help="SD 1.5 part (default 256 on CPU, 512 on GPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="SD 1.5 part (default 1 on CPU, 4 on GPU)")
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--workdir", default=None, help="keep the built models here (default: a temp dir)")
    # one SD 1.5 variant in a child process
    parser.add_argument("--variant", choices=list(SD15_VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        return sd15_variant(args)
    from conftest import write_tiny_dataset
    from tiny_models import build_tiny_sd, write_clip_tokenizer

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_lora_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, work dir {work}")

    if not args.skip_tiny:
        base = build_tiny_sd(work / "tiny_sd")
        # dishgen datasets hold 512 px PNGs (`dishgen data build` size=512); the tiny model trains at 64 px.
        data = write_tiny_dataset(work / "data512", size=args.data_size)
        print(f"\nTiny pipeline, 64 px from {args.data_size} px PNGs, batch 4, {args.rounds} rounds of "
              f"{args.steps} timed steps after {args.warmup} warm-up steps, variants interleaved")
        times: dict[str, list[float]] = {"plain": [], "cache": [], "nocache": []}
        runs = {
            "plain": lambda r: plain_diffusers_steps(base, data, args.steps, args.warmup, batch_size=4, resolution=64),
            "cache": lambda r: dishgen_steps(base, data, work / f"run_cache{r}", args.steps, args.warmup,
                                             ["resolution=64", "batch_size=4"], device="cpu"),
            "nocache": lambda r: dishgen_steps(base, data, work / f"run_nocache{r}", args.steps, args.warmup,
                                               ["resolution=64", "batch_size=4", "cache_latents=false",
                                                "cache_text_embeddings=false"], device="cpu"),
        }
        with LoadWatch() as load:
            for round_ in range(args.rounds):  # the order alternates, so drift hits every variant alike
                for name in list(runs) if round_ % 2 == 0 else list(runs)[::-1]:
                    times[name] += runs[name](round_)
        reference = summary("plain diffusers", times["plain"])
        summary("dishgen (cache)", times["cache"], reference, load)
        summary("dishgen (no cache)", times["nocache"], reference, load)
        print(load.report())

    if args.sd15:
        cuda = (args.device or "cpu").startswith("cuda")
        resolution = args.resolution or (512 if cuda else 256)
        batch = args.batch_size or (4 if cuda else 1)
        folder = Path(args.sd15_base) if args.sd15_base else work / "sd15_shape_only"
        if not (folder / "model_index.json").is_file():
            from dishgen.diffusion import build_shape_only_sd15

            started = time.perf_counter()
            tokenizer = write_clip_tokenizer(work / "clip_tokenizer")
            build_shape_only_sd15(folder, tokenizer)
            print(f"\nbuilt the shape-only SD 1.5 in {time.perf_counter() - started:.0f} s")
        # Few training images, so that the warm-up (one epoch) fills dishgen's latent and text caches.
        images = args.sd15_train_images or batch
        data = keep_first_images(write_tiny_dataset(work / f"data{resolution}_{images}", size=resolution), images)
        if args.sd15_warmup is None:
            args.sd15_warmup = -(-images // batch)
        if warning := warmup_warning(args.sd15_warmup, batch, images):
            print(warning)
        args.resolution, args.batch_size = resolution, batch
        if cuda and args.mixed_precision == "no":
            args.mixed_precision = "fp16"
        print(f"\nSD 1.5 shape-only, {resolution} px, batch {batch}, {args.mixed_precision}, {args.device or 'cpu'}, "
              f"{args.sd15_steps} timed steps after {args.sd15_warmup} per variant and round, {images} training images, "
              f"dishgen overrides {SD15_OURS_OVERRIDES}, each variant in its own process:")
        results = {v: {"seconds": [], "peak_gib": 0.0} for v in SD15_VARIANTS}
        with LoadWatch() as load:
            for round_ in range(args.sd15_rounds):
                for variant in SD15_VARIANTS if round_ % 2 == 0 else SD15_VARIANTS[::-1]:
                    result = run_sd15_variant(variant, args, folder, data,
                                              work / f"run_sd15_{resolution}_{variant}_{time.time_ns()}")
                    results[variant]["seconds"] += result["seconds"]
                    results[variant]["peak_gib"] = max(results[variant]["peak_gib"], result["peak_gib"])
        reference = summary("plain diffusers", results["plain"]["seconds"])
        median = summary("dishgen (cache)", results["ours"]["seconds"], reference, load)
        summary("dishgen (no cache)", results["nocache"]["seconds"], reference, load)
        for variant in SD15_VARIANTS:
            print(f"  {variant:<8} s/step: {' '.join(f'{s:.2f}' for s in results[variant]['seconds'])}")
        print(f"peak RSS: plain {results['plain']['peak_gib']:.2f} GiB, dishgen (cache) {results['ours']['peak_gib']:.2f} "
              f"GiB, dishgen (no cache) {results['nocache']['peak_gib']:.2f} GiB "
              "(target on a CPU: dishgen's step at most 0.8x the plain step's time)")
        print(load.report())
        print(f"{'':<22} {batch / median:.2f} images/s; a step of batch 4 x 4 accumulation would take about "
              f"{median * 16 / batch:.1f} s (original project: 7.85 s on a T4)")


if __name__ == "__main__":
    main()
