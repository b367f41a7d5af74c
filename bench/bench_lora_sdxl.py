"""SDXL LoRA training step time and peak memory: dishgen's trainer beside a plain diffusers SDXL step.

``plain``: a training step written here as diffusers' example ``train_text_to_image_lora_sdxl.py``
does it: a ``datasets`` imagefolder decoded and transformed when a batch is drawn (Resize, CenterCrop,
flip, normalise, with its ``original_sizes`` and ``crop_top_lefts``), both text encoders run on every
batch (``encode_prompt``), VAE encode, ``add_time_ids``, UNet forward/backward, clipping, AdamW.
``dishgen (cache)`` / ``dishgen (no cache)``: ``dishgen.train.lora.train`` with and without latent
and text-embedding caching; the per-step ``seconds`` of its ``log.jsonl`` after a warm-up.
Each variant runs in its own process, so that its peak resident memory (``ru_maxrss``) is its own.

Tiny (default): the tests' tiny SDXL pipeline at 64 px, batch 4. ``--full``: the real-size SDXL
base 1.0 architecture with random weights (:func:`dishgen.diffusion.build_shape_only_sdxl`, no
download; ~14 GB of fp32 weights, so about 20 GB of free memory) at ``--resolutions`` (256 512),
batch 1. The issue's target: dishgen's step at most 0.8x the plain step's time.

dishgen's caches fill on first use, one entry per (image, flip) and per caption, so a cached step is
only timed once the warm-up has met every image. ``--full`` therefore trains on ``--images`` (default:
one batch) and turns dishgen's ``random_flip`` off (its one cached latent is then hit from the second
step on; the plain step keeps the example's flip, a PIL transpose that costs well under a
millisecond). With the whole 35-image sample, 1 warm-up and 2 timed steps, nearly every "cached" step
was a cache miss.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_lora_sdxl.py
    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_lora_sdxl.py --full --steps 2 --warmup 1 --workdir /tmp/sdxl

Timings are noisy on a shared machine: compare the ratios more than the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import LoadWatch, keep_first_images, reset_accelerate_state, warmup_warning

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders and the sample dataset writer


def plain_sdxl_steps(base: Path, data: Path, steps: int, warmup: int, batch_size: int, resolution: int,
                     device: str = "cpu", mixed_precision: str = "no") -> list[float]:
    """diffusers' SDXL LoRA example step (UNet LoRA, frozen text encoders); seconds per step.

    Precision as the example: frozen UNet and text encoders in the ``mixed_precision`` dtype, the
    VAE in fp32 (SDXL's VAE overflows in fp16), LoRA weights fp32."""
    import numpy as np
    from accelerate import Accelerator
    from datasets import load_dataset
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    reset_accelerate_state()  # another run in this process may have asked for another precision
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]
    torch.manual_seed(0)
    tokenizers = [CLIPTokenizer.from_pretrained(base, subfolder=s) for s in ("tokenizer", "tokenizer_2")]
    text_encoders = [CLIPTextModel.from_pretrained(base, subfolder="text_encoder").requires_grad_(False),
                     CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2").requires_grad_(False)]
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    for model in (unet, *text_encoders):
        model.to(accelerator.device, **({} if weight_dtype == torch.float32 else {"dtype": weight_dtype}))
    vae.to(accelerator.device, dtype=torch.float32)  # as the example keeps SDXL's VAE (fp16 overflows)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    cast_training_params(unet, dtype=torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def preprocess(examples):
        pixels, originals, crops = [], [], []
        for image in examples["image"]:
            image = image.convert("RGB")
            originals.append((image.height, image.width))
            scale = resolution / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
            top, left = (image.height - resolution) // 2, (image.width - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
            if torch.rand(()) < 0.5:
                left = image.width - left
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crops.append((top, left))
            array = np.asarray(image, dtype=np.float32) / 255.0
            pixels.append((torch.from_numpy(array).permute(2, 0, 1) - 0.5) / 0.5)
        examples.update(pixel_values=pixels, original_sizes=originals, crop_top_lefts=crops)
        return examples

    def collate(examples):
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
                "original_sizes": [e["original_sizes"] for e in examples],
                "crop_top_lefts": [e["crop_top_lefts"] for e in examples], "text": [e["text"] for e in examples]}

    dataset = load_dataset("imagefolder", data_dir=str(data))["train"].with_transform(preprocess)
    loader = torch.utils.data.DataLoader(dataset, shuffle=True, collate_fn=collate, batch_size=batch_size,
                                         num_workers=0, drop_last=True)
    unet, optimizer, loader = accelerator.prepare(unet, optimizer, loader)

    def encode_prompt(texts):
        hidden = []
        for tokenizer, encoder in zip(tokenizers, text_encoders, strict=True):
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(accelerator.device)
            out = encoder(ids, output_hidden_states=True)
            pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1), pooled

    times: list[float] = []
    step = 0
    while step < warmup + steps:
        for batch in loader:
            if step >= warmup + steps:
                break
            started = time.perf_counter()
            pixel_values = batch["pixel_values"].to(accelerator.device, dtype=torch.float32)
            latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
            latents = latents.to(weight_dtype)
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      device=latents.device).long()
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            time_ids = torch.tensor([[*o, *c, resolution, resolution]
                                     for o, c in zip(batch["original_sizes"], batch["crop_top_lefts"], strict=True)],
                                    dtype=weight_dtype, device=accelerator.device)
            with torch.no_grad():
                hidden, pooled = encode_prompt(batch["text"])
            pred = unet(noisy, timesteps, hidden, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
                        return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad()
            loss.item()
            if step >= warmup:
                times.append(time.perf_counter() - started)
            step += 1
    return times


def dishgen_steps(base: Path, data: Path, out: Path, steps: int, warmup: int, overrides: list[str],
                  device: str = "cpu") -> list[float]:
    from dishgen.train.lora import resolve_train_config, train

    config = resolve_train_config(out, base=str(base), overrides=[
        f"max_steps={warmup + steps}", "sample_every=0", "checkpoint_every=0", "lora_rank=4", "lora_alpha=4",
        "log_with=none", *overrides])
    train(config, data, out, device=device)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["seconds"] for r in rows[warmup:]]


def one_variant(args) -> None:
    """Child process: run one variant, print its step times and peak memory as JSON."""
    base, data, out = Path(args.base), Path(args.data), Path(args.out)
    common = [f"resolution={args.resolution}", f"batch_size={args.batch_size}", *args.dishgen_overrides]
    if args.variant == "plain":
        seconds = plain_sdxl_steps(base, data, args.steps, args.warmup, args.batch_size, args.resolution)
    elif args.variant == "cache":
        seconds = dishgen_steps(base, data, out, args.steps, args.warmup, common)
    else:
        seconds = dishgen_steps(base, data, out, args.steps, args.warmup,
                                [*common, "cache_latents=false", "cache_text_embeddings=false"])
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print("RESULT " + json.dumps({"seconds": seconds, "peak_gib": peak_gib}))


def run_variant(variant, base, data, out, resolution, batch_size, steps, warmup, overrides=()) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--base", str(base), "--data", str(data),
               "--out", str(out), "--resolution", str(resolution), "--batch-size", str(batch_size),
               "--steps", str(steps), "--warmup", str(warmup), *[f"--dishgen-override={o}" for o in overrides]]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the real-size SDXL architecture (random weights)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=None, help="default 64 (tiny), 256 512 (full)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 20 tiny, 2 full)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 30 tiny, 1 full)")
    parser.add_argument("--workdir", default=None, help="keep the built models here (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=1, help="run the three variants this many times, interleaved")
    parser.add_argument("--images", type=int, default=None,
                        help="training images (default: all 35 tiny, one batch full, so the warm-up fills the caches)")
    # one variant in a child process
    parser.add_argument("--variant", choices=["plain", "cache", "nocache"], help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dishgen-override", dest="dishgen_overrides", action="append", default=[],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return one_variant(args)
    from conftest import write_tiny_dataset
    from tiny_models import build_tiny_sdxl, write_clip_tokenizer

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_lora_sdxl_"))
    work.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (2 if args.full else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.full else 30)
    batch_size = 1 if args.full else 4
    images = args.images or (batch_size if args.full else None)
    overrides = ["random_flip=false"] if args.full else []  # one cached latent per image (see the docstring)
    if images is not None and (warning := warmup_warning(warmup, batch_size, images)):
        print(warning)
    if args.full:
        base = work / "sdxl_shape_only"
        if not (base / "model_index.json").is_file():
            from dishgen.diffusion import build_shape_only_sdxl

            build_shape_only_sdxl(base, write_clip_tokenizer(work / "clip_tokenizer"))
    else:
        base = build_tiny_sdxl(work / "tiny_sdxl")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {'shape-only SDXL' if args.full else 'tiny SDXL'}, "
          f"batch {batch_size}, {steps} timed steps after {warmup} warm-up, {images or 'all'} training images, "
          f"dishgen overrides {overrides or 'none'}, work dir {work}")
    for resolution in args.resolutions or ([256, 512] if args.full else [64]):
        data = write_tiny_dataset(work / (f"data{resolution}" + (f"_{images}" if images else "")),
                                  size=max(resolution, 128))
        if images is not None:
            keep_first_images(data, images)
        variants = ("plain", "cache", "nocache")
        results = {v: {"seconds": [], "peak_gib": 0.0} for v in variants}
        with LoadWatch() as load:
            for round_ in range(args.rounds):  # each variant in its own process, the order alternating
                for v in variants if round_ % 2 == 0 else variants[::-1]:
                    result = run_variant(v, base, data, work / f"run_{v}_{resolution}_{time.time_ns()}", resolution,
                                         batch_size, steps, warmup, overrides)
                    results[v]["seconds"] += result["seconds"]
                    results[v]["peak_gib"] = max(results[v]["peak_gib"], result["peak_gib"])
        reference = statistics.median(results["plain"]["seconds"])
        for name, result in results.items():
            median = statistics.median(result["seconds"])
            print(f"{resolution:>4} px  {name:<8} median {median:8.3f} s/step  ratio {load.ratio(median / reference)} "
                  f"plain  peak RSS {result['peak_gib']:.2f} GiB")
        print(f"{resolution:>4} px  {load.report()}")


if __name__ == "__main__":
    main()
