"""Stable Diffusion LoRA fine-tuning: one linear training script on accelerate.

The story: config -> dataset (decoded once, in memory) -> base model (SD 1.x/2.x-class, or SDXL with
its two text encoders, pooled embedding and size/crop conditioning) -> peft LoRA on the UNet
attention projections (and optionally the CLIP text encoder(s)) -> optimizer, LR
schedule -> accelerator -> loop (latents and caption embeddings cached on first use, noise, loss
with min-SNR weighting, accumulation, clipping; log, validation images, checkpoints) -> the final
``pytorch_lora_weights.safetensors`` in diffusers format and a model card.

Run directory::

    RUN/config.json                          {"family": "lora", "base": ..., every training setting}
    RUN/log.jsonl, RUN/plots/*.png           loss (raw, EMA, 100-step mean), grad norm, learning rates
    RUN/samples/step-<N>.png                 validation prompts, fixed seeds
    RUN/checkpoint-<N>/                      the LoRA, optimizer, LR schedule, random states (below)
    RUN/pytorch_lora_weights.safetensors     the LoRA (diffusers format), loadable by any diffusers tool
    RUN/README.md                            model card with YAML metadata

The run directory and every checkpoint are model references (``dishgen generate --model RUN``).
Nothing in it needs pickle: a checkpoint holds ``pytorch_lora_weights.safetensors`` and the
optimizer, LR-schedule, gradient-scaler (fp16) and per-rank random states as safetensors + JSON
(:mod:`dishgen.train.state`), rather than accelerate's ``save_state`` files (``optimizer.bin``,
``random_states_0.pkl``), which are pickles.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from dishgen.config import config_to_dict
from dishgen.diffusion import LORA_WEIGHTS_NAME, DiffusionError
from dishgen.train.common import (
    RunDir,
    StopControl,
    check_finite,
    log_to_trackers,
    plot_log,
    progress_bar,
    resume_command,
    rolling_mean,
    save_image_grid,
    start_trackers,
    tracker_kwargs,
)
from dishgen.train.lora_config import (
    PRESETS,
    TEXT_ENCODER_TARGETS,
    UNET_TARGETS,
    LoraTrainConfig,
    resolve_train_config,
)
from dishgen.train.lora_data import (
    _load_images,
    bucket_batch_indices,
    bucket_sizes,
    crop_flip,
    latent_sampler,
    micro_batch_indices,
    resize_shorter_side,
    sdxl_text_embedder,
    text_embedder,
)
from dishgen.train.lora_io import load_lora_into, save_lora, write_model_card

__all__ = [
    "FAMILY", "PRESETS", "TEXT_ENCODER_TARGETS", "UNET_TARGETS", "LoraTrainConfig", "crop_flip",
    "load_lora_into", "micro_batch_indices", "min_snr_weights", "offset_noise",
    "resize_shorter_side", "resolve_train_config", "save_lora", "train", "write_model_card",
]

FAMILY = "lora"


# -- pure functions of the objective ---------------------------------------------------------------


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma (Hang et al., 2023), shape (B,).

    For epsilon prediction ``min(SNR, gamma) / SNR``; for v-prediction ``min(SNR, gamma) / (SNR + 1)``.
    """
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def offset_noise(noise: torch.Tensor, offset: float) -> torch.Tensor:
    """Add a per-channel constant (Guttenberg's noise offset) to (B, C, H, W) noise."""
    if offset <= 0:
        return noise
    return noise + offset * torch.randn(noise.shape[0], noise.shape[1], 1, 1, device=noise.device, dtype=noise.dtype)


# -- the training script ---------------------------------------------------------------------------


def train(config: LoraTrainConfig, data: str | Path, out: str | Path, *, resume: bool = False,
          device: str | None = None) -> Path:
    """Fine-tune a LoRA on a dataset's train split; write the run directory.

    Args:
        config: the resolved config.
        data: dataset folder (``train/metadata.jsonl`` with ``text`` captions).
        out: run directory.
        resume: continue from the run's latest checkpoint.
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto``. Under ``accelerate launch`` or
            ``torchrun`` with no device given, each process takes its own GPU when there is one.

    Returns:
        The run directory.
    """
    from accelerate import Accelerator

    from dishgen.config import validate_config
    from dishgen.errors import DishgenError
    from dishgen.train.common import run_lock

    validate_config(config)  # before anything is loaded or written
    # -- accelerator and run dir -----------------------------------------------------------------
    asked = _training_device(device)
    if config.mixed_precision == "fp16" and asked.type != "cuda":
        raise DishgenError("mixed_precision=fp16 needs a CUDA GPU; on the CPU use mixed_precision=bf16 or no")
    log_with = None if config.log_with == "none" else config.log_with
    tracking = tracker_kwargs(config.log_with, out)  # before the accelerator: a missing package is an error
    _reset_accelerate_state()  # a second run in the same process may ask for other precision/device
    accelerator = Accelerator(cpu=asked.type == "cpu", mixed_precision=config.mixed_precision, **tracking)
    try:
        with run_lock(out):  # one writer per run directory (rank 0 under a launcher)
            return _train(config, data, out, resume, accelerator, log_with, device)
    finally:
        accelerator.end_training()
        _reset_accelerate_state()


def _train(config: LoraTrainConfig, data, out, resume: bool, accelerator, log_with, device_arg) -> Path:
    from accelerate import DistributedType
    from accelerate.utils import gather_object, set_seed
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params, compute_snr
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from dishgen.data.dataset import DatasetError, load_split
    from dishgen.diffusion import explain_load_error, set_scheduler
    from dishgen.errors import DishgenError
    from dishgen.fileio import append_jsonl, atomic_path, atomic_write_json
    from dishgen.train.state import load_state, rng_state, save_state, set_rng_state

    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise DishgenError("LoRA training runs data-parallel (DDP): its trainable weights are a few MB, so "
                           "sharding them gains nothing; choose 'multi-GPU' (no DeepSpeed/FSDP) in accelerate config")
    base, xl = _check_base(config.base, config.revision)  # before anything is written or decoded
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    run = RunDir(out, FAMILY)
    config_dict = config_to_dict(config)
    if main:
        run.prepare(config_dict, resume=resume)
    accelerator.wait_for_everyone()
    start_step = run.latest_checkpoint() if resume else None

    # -- data: decoded once, shorter side = resolution, uint8 in memory ----------------------------
    rows = load_split(data, "train")
    buckets = (bucket_sizes(config.resolution, config.bucket_step, config.max_bucket_aspect)
               if config.aspect_buckets else None)
    images, decoded_sizes, targets = _load_images([r.path for r in rows], config.resolution, buckets)
    original_sizes = [_original_size(r.extra.get("original_size"), size) for r, size in zip(rows, decoded_sizes, strict=True)]
    if buckets:
        bucket_numbers = {size: n for n, size in enumerate(sorted(set(targets)))}
        buckets_of = [bucket_numbers[t] for t in targets]

        def batch_indices(micro_step):
            return bucket_batch_indices(buckets_of, config.batch_size, micro_step, rank, world, config.seed)
    else:
        def batch_indices(micro_step):
            return micro_batch_indices(len(rows), config.batch_size, micro_step, rank, world, config.seed)
    captions = [r.text for r in rows]
    if len(rows) < config.batch_size * world:
        raise DatasetError(f"the train split has {len(rows)} images; batch_size={config.batch_size} x "
                           f"{world} processes needs at least {config.batch_size * world}")

    # -- base model ------------------------------------------------------------------------------
    load = {"revision": config.revision}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **load)
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", variant=config.variant, **load)
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", variant=config.variant, **load)
        noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler", **load)
        tokenizer_2 = text_encoder_2 = None
        if xl:
            tokenizer_2 = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2", **load)
            text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2",
                                                                         variant=config.variant, **load)
        if not config.vae:
            vae = AutoencoderKL.from_pretrained(base, subfolder="vae", variant=config.variant, **load)
    except Exception as err:
        raise DiffusionError(explain_load_error(config.base, err)) from err
    if config.vae:
        try:
            vae = AutoencoderKL.from_pretrained(_hub_or_folder(config.vae, "vae"))
        except DishgenError:
            raise
        except Exception as err:
            raise DiffusionError(explain_load_error(config.vae, err)) from err
    if config.prediction_type:
        noise_scheduler.register_to_config(prediction_type=config.prediction_type)
    prediction_type = noise_scheduler.config.prediction_type
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
    text_encoders = [text_encoder, text_encoder_2] if xl else [text_encoder]
    # SDXL's own VAE overflows in fp16 (NaN latents): keep it in fp32 unless a fixed one was given
    vae_dtype = torch.float32 if xl and weight_dtype == torch.float16 and not config.vae else weight_dtype
    for model, dtype in ((unet, weight_dtype), (vae, vae_dtype), *((m, weight_dtype) for m in text_encoders)):
        model.requires_grad_(False)
        if dtype == torch.float32:
            model.to(device)
        else:  # frozen weights in half precision; the LoRA weights are cast back to fp32 below
            model.to(device, dtype=dtype)
    vae.eval()
    for model in text_encoders:
        model.eval()

    # -- LoRA adapters (same init on every rank; DDP would broadcast rank 0's anyway) -------------
    set_seed(config.seed)
    lora = {"r": config.lora_rank, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
            "init_lora_weights": "gaussian"}
    unet.add_adapter(LoraConfig(target_modules=list(config.unet_target_modules), **lora))
    with_lora = [unet]
    if config.train_text_encoder:
        # peft directly, not transformers' `add_adapter`: that refuses whole peft releases by version
        # (transformers 5.24 asks for peft >= 0.22 before any was published), for no change here.
        for model in text_encoders:  # SDXL: both
            inject_adapter_in_model(LoraConfig(target_modules=list(config.text_encoder_target_modules), **lora),
                                    model)
        with_lora.extend(text_encoders)
    cast_training_params(with_lora, dtype=torch.float32)  # LoRA weights train in fp32 under autocast
    _set_attention(unet, config.attention, device)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            for model in text_encoders:
                model.gradient_checkpointing_enable()
                model.enable_input_require_grads()  # what add_adapter would have switched on

    # -- optimizer and LR schedule ---------------------------------------------------------------
    unet_params = [p for p in unet.parameters() if p.requires_grad]
    groups = [{"params": unet_params, "lr": config.learning_rate}]
    if config.train_text_encoder:
        groups.append({"params": [p for model in text_encoders for p in model.parameters() if p.requires_grad],
                       "lr": config.text_encoder_lr})
    optimizer = _optimizer_class(config.optimizer, device)(
        groups, betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon)
    schedule = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[config.lr_scheduler]
    # accelerate steps a prepared scheduler once per process per step, hence the factor `world`.
    lr_scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=config.lr_warmup_steps * world,
                                 num_training_steps=config.max_steps * world)
    if config.train_text_encoder and xl:
        unet, text_encoder, text_encoder_2, optimizer, lr_scheduler = accelerator.prepare(
            unet, text_encoder, text_encoder_2, optimizer, lr_scheduler)
    elif config.train_text_encoder:
        unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, lr_scheduler)
    else:
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    text_encoders = [text_encoder, text_encoder_2] if xl else [text_encoder]
    # the prepared (DDP-wrapped) models: `no_sync` on a bare module would do nothing
    trained = [unet, *text_encoders] if config.train_text_encoder else [unet]
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def bare(model):
        return accelerator.unwrap_model(model)

    bare_text_encoder = bare(text_encoder) if config.train_text_encoder else None
    bare_text_encoder_2 = bare(text_encoder_2) if config.train_text_encoder and xl else None

    def save_lora_to(folder: Path, weight_name: str = LORA_WEIGHTS_NAME):
        save_lora(folder, bare(unet), bare_text_encoder, weight_name, text_encoder_2=bare_text_encoder_2, xl=xl)

    if start_step is not None:
        # Not accelerate's load_state: its optimizer.bin / random_states_0.pkl are pickles.
        folder = run.checkpoint_path(start_step)
        if (folder / "optimizer.bin").is_file() and not (folder / "optimizer.json").is_file():
            raise DishgenError(f"{folder} was written by an older dishgen in accelerate's pickle format, "
                               "which this version does not load; resume it with the dishgen that wrote it, "
                               "or start a new run")
        try:
            load_lora_into(folder, bare(unet), bare_text_encoder, bare_text_encoder_2)
            optimizer.load_state_dict(load_state(folder / "optimizer"))
            lr_scheduler.load_state_dict(load_state(folder / "scheduler"))
            if accelerator.scaler is not None and (folder / "scaler.json").is_file():
                accelerator.scaler.load_state_dict(load_state(folder / "scaler"))
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise DishgenError(f"cannot resume from {folder}: {err}. Resume with the config it was trained "
                               "with, or remove that checkpoint folder to resume from the one before it") from err
        rng_file = folder / f"rng_state_{rank}"
        if Path(str(rng_file) + ".json").is_file():
            set_rng_state(load_state(rng_file))
        else:  # resumed with more processes than the checkpoint had: new ranks draw fresh noise
            set_seed(config.seed * 1_000 + start_step * 10 + rank)
    else:
        set_seed(config.seed, device_specific=True)  # each rank its own noise
    start_trackers(accelerator, FAMILY, config_dict)

    # -- encoders with caches: each image and caption goes through the VAE / text encoder once ----
    sample_latents = latent_sampler(vae, images, config, device, vae_dtype, original_sizes, targets)
    cache_text = config.cache_text_embeddings and not config.train_text_encoder
    if xl:
        text_embeddings = sdxl_text_embedder([tokenizer, tokenizer_2], text_encoders, device, cache_text)
    else:
        text_embeddings = text_embedder(tokenizer, text_encoder, device, cache_text=cache_text)

    # -- checkpoints, samples, logs ----------------------------------------------------------------
    pending_log: list[dict] = []
    last_flush = time.monotonic()

    def flush_log():
        nonlocal last_flush
        if main and pending_log:
            append_jsonl(run.path / "log.jsonl", pending_log)
            pending_log.clear()
        last_flush = time.monotonic()

    def write_plots():
        rows_ = run.read_log()
        means = rolling_mean([r["loss"] for r in rows_], 100)
        rows_ = [{**r, "loss_mean100": m} for r, m in zip(rows_, means, strict=True)]
        plot_log(rows_, run.path / "plots", {"loss": ["loss", "loss_mean100"], "grad_norm": ["grad_norm"],
                                             "learning_rate": ["lr_unet", "lr_text_encoder"]})

    saved_step = start_step  # the newest checkpoint's step, the same on every rank

    def write_checkpoint(at_step: int):  # every rank calls it: the gather needs all of them
        nonlocal saved_step
        states = gather_object([rng_state()])  # every rank's random state, written by rank 0
        control.saved(at_step)
        saved_step = at_step
        if main:
            flush_log()

            def writer(folder: Path):
                save_lora_to(folder)
                save_state(folder / "optimizer", optimizer.state_dict())
                save_state(folder / "scheduler", lr_scheduler.state_dict())
                if accelerator.scaler is not None:  # fp16
                    save_state(folder / "scaler", accelerator.scaler.state_dict())
                for r, state in enumerate(states):
                    save_state(folder / f"rng_state_{r}", state)
                atomic_write_json(folder / "config.json", {"family": FAMILY, **config_dict})
                atomic_write_json(folder / "training_state.json", {"step": at_step, "processes": world,
                                                                   "prediction_type": prediction_type})

            run.write_checkpoint(at_step, writer, keep=config.keep_checkpoints or None)
            write_plots()
        accelerator.wait_for_everyone()

    def write_samples(at_step: int):
        if main:
            if xl:
                pipe = StableDiffusionXLPipeline(
                    vae=vae, text_encoder=bare(text_encoder), text_encoder_2=bare(text_encoder_2), tokenizer=tokenizer,
                    tokenizer_2=tokenizer_2, unet=bare(unet), scheduler=DDPMScheduler.from_config(noise_scheduler.config))
            else:
                pipe = StableDiffusionPipeline(
                    vae=vae, text_encoder=bare(text_encoder), tokenizer=tokenizer, unet=bare(unet),
                    scheduler=DDPMScheduler.from_config(noise_scheduler.config), safety_checker=None,
                    feature_extractor=None, requires_safety_checker=False)
            set_scheduler(pipe, config.validation_scheduler)
            pipe.set_progress_bar_config(disable=True)
            for model in trained:
                model.eval()
            pictures = []
            with torch.no_grad(), accelerator.autocast():
                for i, prompt in enumerate(config.validation_prompts):
                    pictures.append(pipe(
                        prompt, num_inference_steps=config.validation_steps, height=config.resolution,
                        width=config.resolution, guidance_scale=config.validation_guidance_scale, output_type="pt",
                        generator=torch.Generator("cpu").manual_seed(config.validation_seed + i)).images[0])
            for model in trained:
                model.train()
            grid = torch.stack(pictures).float().mul(2).sub(1)  # (P, 3, R, R) in [-1, 1]
            save_image_grid(grid, run.path / "samples" / f"step-{at_step}.png", nrow=1, labels=config.validation_prompts)
            if log_with == "tensorboard":
                writer = accelerator.get_tracker("tensorboard", unwrap=True)  # a SummaryWriter
                writer.add_images("validation", grid.add(1).div(2), at_step)
        accelerator.wait_for_everyone()

    # -- the loop ------------------------------------------------------------------------------------
    step = start_step or 0
    accum = config.gradient_accumulation_steps
    for model in trained:
        model.train()
    images_per_step = config.batch_size * accum * world
    progress = progress_bar("lora", step=step, max_steps=config.max_steps, images_per_step=images_per_step,
                            enabled=main)
    control = StopControl(accelerator, max_minutes=config.max_minutes,
                          checkpoint_every_minutes=config.checkpoint_every_minutes,
                          resume_command=resume_command(FAMILY, data, out, device_arg))
    with control:
        while step < config.max_steps:
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            for micro in range(accum):
                indices, epoch = batch_indices(step * accum + micro)
                texts = ["" if config.caption_dropout and torch.rand(()) < config.caption_dropout else captions[i]
                         for i in indices]
                # Gradients are all-reduced only on the last micro-step of an accumulation: the
                # others skip DDP's all-reduce and only add to the local .grad.
                with contextlib.ExitStack() as stack:
                    if micro < accum - 1:
                        for model in trained:
                            stack.enter_context(accelerator.no_sync(model))
                    with accelerator.autocast():
                        latents, time_ids = sample_latents(indices)  # (B, 4, R/8, R/8), (B, 6)
                        latents = latents.to(weight_dtype)
                        noise = offset_noise(torch.randn_like(latents), config.noise_offset)
                        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                                  device=device)
                        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                        if xl:  # the pooled embedding and size/crop ids enter through `text_time`
                            hidden, pooled = text_embeddings(texts)
                            added = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
                        else:
                            hidden, added = text_embeddings(texts), {}
                        if prediction_type == "v_prediction":
                            target = noise_scheduler.get_velocity(latents, noise, timesteps)
                        else:
                            target = noise
                        pred = unet(noisy_latents, timesteps, hidden, return_dict=False, **added)[0]
                    per_sample = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
                    per_sample = per_sample.mean(dim=(1, 2, 3))  # (B,)
                    if config.snr_gamma:
                        weights = min_snr_weights(compute_snr(noise_scheduler, timesteps), config.snr_gamma, prediction_type)
                        per_sample = per_sample * weights.to(per_sample)
                    loss = per_sample.mean()
                    accelerator.backward(loss / accum)
                loss_sum += loss.detach()
            grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm if config.max_grad_norm > 0 else math.inf)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            loss_value = accelerator.reduce(loss_sum / accum, "mean").item()
            check_finite(step, {"loss": loss_value}, run)
            seconds = time.perf_counter() - started
            row = {"step": step, "epoch": epoch, "loss": loss_value, "grad_norm": float(grad_norm),
                   "lr_unet": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 4),
                   "images_per_s": round(config.batch_size * accum * world / seconds, 2)}
            if config.train_text_encoder:
                row["lr_text_encoder"] = optimizer.param_groups[1]["lr"]
            if main:
                pending_log.append(row)
                log_to_trackers(accelerator, row)
                progress.update(images_per_step)
                progress.set_postfix({"step": step, "loss": f"{loss_value:.4f}"}, refresh=False)
                if time.monotonic() - last_flush > 5:
                    flush_log()
            if config.sample_every and step % config.sample_every == 0:
                write_samples(step)
            if step == config.max_steps or (config.checkpoint_every and step % config.checkpoint_every == 0):
                write_checkpoint(step)
            stop = control.poll(step)  # Ctrl-C / SIGTERM, max_minutes, checkpoint_every_minutes
            if stop.checkpoint:
                write_checkpoint(step)
            if stop.reason:
                break
    progress.close()
    control.finish(step, run.checkpoint_path(step))  # after Ctrl-C: raises, no final LoRA

    # -- the final LoRA and its model card -------------------------------------------------------
    if saved_step != step:  # (the loop checkpoints its last step; kept so the end never lacks one)
        write_checkpoint(step)
    if main:
        flush_log()
        with atomic_path(run.path / LORA_WEIGHTS_NAME) as tmp:
            save_lora_to(run.path, weight_name=tmp.name)
        write_plots()
        write_model_card(run.path / "README.md", config, data, step, prediction_type=prediction_type, xl=xl)
    accelerator.wait_for_everyone()
    return run.path


# -- helpers -----------------------------------------------------------------------------------------


def _reset_accelerate_state() -> None:
    """Forget accelerate's process-wide state between runs in one process (never under a launcher)."""
    import torch.distributed as dist
    from accelerate.state import AcceleratorState, GradientState

    if not (dist.is_available() and dist.is_initialized()):
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def _training_device(device: str | None):
    import os

    from dishgen.devices import resolve_device
    from dishgen.errors import DishgenError

    if device is None and "LOCAL_RANK" in os.environ:
        device = "auto"  # under a launcher: one GPU per process when there are GPUs
    try:
        resolved = resolve_device(device)
    except ValueError as err:
        raise DishgenError(str(err)) from None
    if resolved.type == "cuda" and resolved.index is not None:
        torch.cuda.set_device(resolved.index)
    return resolved


def _original_size(recorded, decoded: tuple[int, int]) -> tuple[int, int]:
    """The photo's size before ``data build`` resized it, (h, w), from the dataset's ``original_size``
    ([w, h]) when that has the file's aspect ratio (it was resized, not cropped); else the file's size."""
    if (isinstance(recorded, list) and len(recorded) == 2 and all(isinstance(v, int) and v > 0 for v in recorded)
            and abs(recorded[0] / recorded[1] - decoded[1] / decoded[0]) <= 0.01 * decoded[1] / decoded[0]):
        return recorded[1], recorded[0]
    return decoded


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _check_base(base: str, revision: str | None) -> tuple[str, bool]:
    """Fail early, with the fix, when the base model is neither an SD 1.x/2.x-class nor an SDXL pipeline.

    Returns where to load it from (the folder, the cached hub snapshot, or the hub id) and whether
    it is SDXL (a second text encoder and tokenizer in its ``model_index.json``).
    """
    from diffusers import DiffusionPipeline

    from dishgen.diffusion import explain_load_error
    from dishgen.hub import resolve_hub_model

    if not Path(base).expanduser().is_dir() and (base.count("/") != 1 or base.startswith((".", "/", "~"))):
        raise DiffusionError(f"base model {base!r} not found: no such folder, and not a hub id of the form owner/name")
    source = resolve_hub_model(base, what="base model", option="--base PATH", revision=revision,
                               marker="model_index.json", error=DiffusionError)
    try:
        index = DiffusionPipeline.load_config(source, revision=revision)
    except Exception as err:
        raise DiffusionError(explain_load_error(base, err)) from err
    needed = {"unet", "vae", "text_encoder", "tokenizer"}
    xl = {"text_encoder_2", "tokenizer_2"} <= set(index)
    if not needed <= set(index) or ("text_encoder_2" in index and not xl) or "transformer" in index:
        raise DiffusionError(
            f"{base!r} is a {index.get('_class_name', 'pipeline')}; this trainer fine-tunes SD 1.x/2.x-class models "
            "(UNet + one CLIP text encoder) and SDXL (UNet + two CLIP text encoders), e.g. "
            "stable-diffusion-v1-5/stable-diffusion-v1-5 or stabilityai/stable-diffusion-xl-base-1.0"
        )
    return source, xl


def _hub_or_folder(location: str, what: str) -> str:
    """A local folder as it is; a hub id through the cache check (offline and not cached: a clear error)."""
    from dishgen.hub import resolve_hub_model

    if Path(location).expanduser().is_dir():
        return str(Path(location).expanduser())
    return resolve_hub_model(location, what=what, option=f"{what}=PATH", marker="config.json", error=DiffusionError)


def _set_attention(unet, choice: str, device) -> None:
    from dishgen.errors import DishgenError

    has_xformers = _installed("xformers")
    if choice == "xformers" and not has_xformers:
        raise DishgenError("attention=xformers but xformers is not installed; pip install xformers, "
                           "or use attention=sdpa")
    if choice == "xformers" or (choice == "auto" and has_xformers and device.type == "cuda"):
        unet.enable_xformers_memory_efficient_attention()
    # otherwise diffusers' default processor, torch's scaled_dot_product_attention (SDPA)


def _optimizer_class(name: str, device):
    if name == "adamw8bit" or (name == "auto" and _installed("bitsandbytes") and device.type == "cuda"):
        try:
            import bitsandbytes as bnb
        except ImportError:
            from dishgen.errors import DishgenError

            raise DishgenError("optimizer=adamw8bit needs bitsandbytes (pip install bitsandbytes, on a CUDA "
                               "machine); or use optimizer=adamw") from None
        return bnb.optim.AdamW8bit
    return torch.optim.AdamW
