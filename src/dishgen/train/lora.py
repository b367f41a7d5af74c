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
Nothing in it needs pickle (:mod:`dishgen.train.lora_checkpoint`).

Beside this file: the config (``lora_config.py``), the data and its caches (``lora_data.py``), the
base model and adapters (``lora_model.py``), the objective (``lora_objective.py``), checkpoint I/O
(``lora_checkpoint.py``) and the LoRA file and model card (``lora_io.py``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dishgen.config import config_to_dict
from dishgen.diffusion import LORA_WEIGHTS_NAME, DiffusionError  # noqa: F401  (importable here, as before)
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
from dishgen.train.lora_checkpoint import load_checkpoint, save_checkpoint
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
from dishgen.train.lora_model import BaseModel, add_lora, load_base_model, make_optimizer
from dishgen.train.lora_model import check_base as _check_base
from dishgen.train.lora_objective import (
    add_noise,
    denoising_loss,
    denoising_target,
    min_snr_weights,
    offset_noise,
)

__all__ = [
    "FAMILY", "PRESETS", "TEXT_ENCODER_TARGETS", "UNET_TARGETS", "LoraTrainConfig", "crop_flip",
    "load_lora_into", "micro_batch_indices", "min_snr_weights", "offset_noise",
    "resize_shorter_side", "resolve_train_config", "save_lora", "train", "write_model_card",
]

FAMILY = "lora"


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


# -- the training script: the story, then its chapters in order --------------------------------------


def _train(config: LoraTrainConfig, data, out, resume: bool, accelerator, log_with, device_arg) -> Path:
    from accelerate.utils import set_seed

    _refuse_sharding(accelerator)
    base, xl = _check_base(config.base, config.revision)  # before anything is written or decoded
    run, start_step = _prepare_run(config, out, resume, accelerator)
    dataset = _load_dataset(config, data, accelerator.process_index, accelerator.num_processes,
                            run.path if accelerator.is_main_process else None)
    parts = load_base_model(config, base, xl, accelerator.device)
    set_seed(config.seed)  # the same LoRA init on every rank (DDP would broadcast rank 0's anyway)
    add_lora(config, parts, accelerator.device)
    optimizer, lr_scheduler = make_optimizer(config, parts, accelerator.device, accelerator.num_processes)
    optimizer, lr_scheduler, trained = _prepare(config, parts, optimizer, lr_scheduler, accelerator)
    outputs = _Outputs(config, run, parts, optimizer, lr_scheduler, accelerator, trained, log_with, start_step)
    _resume_or_seed(config, run, start_step, outputs, accelerator)
    start_trackers(accelerator, FAMILY, config_to_dict(config))
    _attach_encoders(dataset, config, parts, accelerator.device)  # latents and caption embeddings, cached

    step = start_step or 0
    for model in trained:
        model.train()
    outputs.progress = progress_bar("lora", step=step, max_steps=config.max_steps,
                                    images_per_step=outputs.images_per_step, enabled=accelerator.is_main_process)
    outputs.control = control = StopControl(
        accelerator, max_minutes=config.max_minutes, checkpoint_every_minutes=config.checkpoint_every_minutes,
        resume_command=resume_command(FAMILY, data, out, device_arg))
    with control:
        while step < config.max_steps:
            started = time.perf_counter()
            loss_sum, grad_norm, epoch = _train_step(step, config, parts, dataset, trained, optimizer, lr_scheduler,
                                                     accelerator)
            step += 1
            loss_value = accelerator.reduce(loss_sum / config.gradient_accumulation_steps, "mean").item()
            check_finite(step, {"loss": loss_value}, run)
            outputs.log(step, epoch, loss_value, grad_norm, time.perf_counter() - started)
            if outputs.after_step(step):  # samples, checkpoint, stop requests; True: stop
                break
    outputs.progress.close()
    control.finish(step, run.checkpoint_path(step))  # after Ctrl-C: raises, no final LoRA
    return outputs.finish(step, data)


def _refuse_sharding(accelerator) -> None:
    from accelerate import DistributedType

    from dishgen.errors import DishgenError

    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise DishgenError("LoRA training runs data-parallel (DDP): its trainable weights are a few MB, so "
                           "sharding them gains nothing; choose 'multi-GPU' (no DeepSpeed/FSDP) in accelerate config")


def _prepare_run(config, out, resume: bool, accelerator) -> tuple[RunDir, int | None]:
    """The run directory (rank 0 writes it) and the checkpoint step to resume from, if any."""
    run = RunDir(out, FAMILY)
    if accelerator.is_main_process:
        run.prepare(config_to_dict(config), resume=resume)
    accelerator.wait_for_everyone()
    return run, run.latest_checkpoint() if resume else None


@dataclass
class _Dataset:
    """The train split in memory, the batch order, and (once the models are loaded) the cached encoders."""

    images: list[torch.Tensor]  # uint8 (3, h, w), shorter side = resolution (or the bucket's size)
    original_sizes: list[tuple[int, int]]  # (h, w) before ``data build`` resized the photo
    targets: list[tuple[int, int]] | None  # each image's bucket, (h, w); None without buckets
    captions: list[str]
    batch_indices: Callable  # micro_step -> (indices of this rank's micro-batch, epoch)
    sample_latents: Callable | None = None  # indices -> (latents (B, 4, h/8, w/8), SDXL time ids (B, 6))
    text_embeddings: Callable | None = None  # captions -> hidden states (SDXL: and the pooled embedding)


def _load_dataset(config, data, rank: int, world: int, run_dir=None) -> _Dataset:
    """Decode the train split once (shorter side = resolution, uint8) and fix the batch order
    (seeded; per aspect-ratio bucket with ``aspect_buckets``). Unreadable images are skipped and,
    with ``run_dir`` (the main process), listed in ``RUN/skipped-images.jsonl``."""
    from dishgen.data.dataset import DatasetError, load_split
    from dishgen.images_tensor import check_readable, record_skipped

    rows = load_split(data, "train", require_files=False)
    buckets = (bucket_sizes(config.resolution, config.bucket_step, config.max_bucket_aspect)
               if config.aspect_buckets else None)
    images, decoded_sizes, targets, kept, skipped = _load_images([r.path for r in rows], config.resolution, buckets)
    check_readable(kept, skipped)
    if run_dir is not None:
        record_skipped(skipped, len(rows), run_dir)
    rows = [rows[i] for i in kept]
    original_sizes = [_original_size(r.extra.get("original_size"), size) for r, size in zip(rows, decoded_sizes, strict=True)]
    if buckets:
        bucket_numbers = {size: n for n, size in enumerate(sorted(set(targets)))}
        buckets_of = [bucket_numbers[t] for t in targets]

        def batch_indices(micro_step):
            return bucket_batch_indices(buckets_of, config.batch_size, micro_step, rank, world, config.seed)
    else:
        def batch_indices(micro_step):
            return micro_batch_indices(len(rows), config.batch_size, micro_step, rank, world, config.seed)
    if len(rows) < config.batch_size * world:
        raise DatasetError(f"the train split has {len(rows)} images; batch_size={config.batch_size} x "
                           f"{world} processes needs at least {config.batch_size * world}")
    return _Dataset(images, original_sizes, targets, [r.text for r in rows], batch_indices)


def _prepare(config, parts: BaseModel, optimizer, lr_scheduler, accelerator):
    """Hand the trained models, optimizer and schedule to accelerate (DDP under a launcher); ``parts``
    then holds the prepared models. Returns the prepared optimizer and schedule, and the trained models."""
    if config.train_text_encoder and parts.xl:
        parts.unet, parts.text_encoder, parts.text_encoder_2, optimizer, lr_scheduler = accelerator.prepare(
            parts.unet, parts.text_encoder, parts.text_encoder_2, optimizer, lr_scheduler)
    elif config.train_text_encoder:
        parts.unet, parts.text_encoder, optimizer, lr_scheduler = accelerator.prepare(
            parts.unet, parts.text_encoder, optimizer, lr_scheduler)
    else:
        parts.unet, optimizer, lr_scheduler = accelerator.prepare(parts.unet, optimizer, lr_scheduler)
    # the prepared (DDP-wrapped) models: `no_sync` on a bare module would do nothing
    trained = [parts.unet, *parts.text_encoders] if config.train_text_encoder else [parts.unet]
    return optimizer, lr_scheduler, trained


def _resume_or_seed(config, run: RunDir, start_step: int | None, outputs: _Outputs, accelerator) -> None:
    """Restore the checkpoint to resume from (LoRA, optimizer, schedule, this rank's random state),
    or give each rank its own random stream for a new run."""
    from accelerate.utils import set_seed

    if start_step is None:
        set_seed(config.seed, device_specific=True)  # each rank its own noise
        return
    rank = accelerator.process_index
    unet, text_encoder, text_encoder_2 = outputs.bare_models()
    load_checkpoint(run.checkpoint_path(start_step), unet=unet, text_encoder=text_encoder,
                    text_encoder_2=text_encoder_2, optimizer=outputs.optimizer, lr_scheduler=outputs.lr_scheduler,
                    scaler=accelerator.scaler, rank=rank,
                    reseed=lambda: set_seed(config.seed * 1_000 + start_step * 10 + rank))


def _attach_encoders(dataset: _Dataset, config, parts: BaseModel, device) -> None:
    """Each image goes through the VAE and each caption through the text encoder(s) once, where caching is on."""
    dataset.sample_latents = latent_sampler(parts.vae, dataset.images, config, device, parts.vae_dtype,
                                            dataset.original_sizes, dataset.targets)
    cache_text = config.cache_text_embeddings and not config.train_text_encoder
    if parts.xl:
        dataset.text_embeddings = sdxl_text_embedder([parts.tokenizer, parts.tokenizer_2], parts.text_encoders,
                                                     device, cache_text)
    else:
        dataset.text_embeddings = text_embedder(parts.tokenizer, parts.text_encoder, device, cache_text=cache_text)


def _train_step(step: int, config, parts: BaseModel, dataset: _Dataset, trained, optimizer, lr_scheduler,
                accelerator):
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches, clipped.

    Returns:
        ``(loss_sum, grad_norm, epoch)``: this rank's summed micro-batch losses (a tensor), the
        gradient norm before clipping and the epoch of the last micro-batch.
    """
    accum = config.gradient_accumulation_steps
    loss_sum = torch.zeros((), device=accelerator.device)
    for micro in range(accum):
        indices, epoch = dataset.batch_indices(step * accum + micro)
        texts = ["" if config.caption_dropout and torch.rand(()) < config.caption_dropout else dataset.captions[i]
                 for i in indices]
        # Gradients are all-reduced only on the last micro-step of an accumulation: the
        # others skip DDP's all-reduce and only add to the local .grad.
        with contextlib.ExitStack() as stack:
            if micro < accum - 1:
                for model in trained:
                    stack.enter_context(accelerator.no_sync(model))
            loss = _micro_batch_loss(indices, texts, config, parts, dataset, accelerator)
            accelerator.backward(loss / accum)
        loss_sum += loss.detach()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm if config.max_grad_norm > 0 else math.inf)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm, epoch


def _micro_batch_loss(indices, texts: list[str], config, parts: BaseModel, dataset: _Dataset, accelerator):
    """The denoising loss of one micro-batch: latents, noise and timesteps, caption embeddings, UNet."""
    scheduler, prediction_type = parts.noise_scheduler, parts.prediction_type
    with accelerator.autocast():
        latents, time_ids = dataset.sample_latents(indices)  # (B, 4, R/8, R/8), (B, 6)
        latents = latents.to(parts.weight_dtype)
        noise, timesteps, noisy_latents = add_noise(latents, scheduler, config.noise_offset)
        if parts.xl:  # the pooled embedding and size/crop ids enter through `text_time`
            hidden, pooled = dataset.text_embeddings(texts)
            added = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
        else:
            hidden, added = dataset.text_embeddings(texts), {}
        target = denoising_target(scheduler, latents, noise, timesteps, prediction_type)
        pred = parts.unet(noisy_latents, timesteps, hidden, return_dict=False, **added)[0]
    return denoising_loss(pred, target, timesteps, scheduler, snr_gamma=config.snr_gamma,
                          prediction_type=prediction_type)


class _Outputs:
    """What the run writes: log rows (buffered, flushed every few seconds), plots, validation grids,
    checkpoints, and at the end the LoRA file and its model card. ``progress`` and ``control`` are
    set by the loop."""

    def __init__(self, config, run: RunDir, parts: BaseModel, optimizer, lr_scheduler, accelerator, trained,
                 log_with, start_step: int | None):
        self.config, self.run, self.parts, self.accelerator, self.trained = config, run, parts, accelerator, trained
        self.optimizer, self.lr_scheduler, self.log_with = optimizer, lr_scheduler, log_with
        self.main = accelerator.is_main_process
        self.images_per_step = config.batch_size * config.gradient_accumulation_steps * accelerator.num_processes
        self.pending_log: list[dict] = []
        self.last_flush = time.monotonic()
        self.saved_step = start_step  # the newest checkpoint's step, the same on every rank
        self.progress = self.control = None

    def bare_models(self) -> tuple:
        """The unwrapped UNet and the unwrapped text encoders that train a LoRA (else ``None``)."""
        bare, parts, with_te = self.accelerator.unwrap_model, self.parts, self.config.train_text_encoder
        return (bare(parts.unet), bare(parts.text_encoder) if with_te else None,
                bare(parts.text_encoder_2) if with_te and parts.xl else None)

    def save_lora_to(self, folder: Path, weight_name: str = LORA_WEIGHTS_NAME) -> None:
        unet, text_encoder, text_encoder_2 = self.bare_models()
        save_lora(folder, unet, text_encoder, weight_name, text_encoder_2=text_encoder_2, xl=self.parts.xl)

    def log(self, step: int, epoch: int, loss: float, grad_norm, seconds: float) -> None:
        """One ``log.jsonl`` row per step (rank 0), to the trackers and the progress bar too."""
        row = {"step": step, "epoch": epoch, "loss": loss, "grad_norm": float(grad_norm),
               "lr_unet": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 4),
               "images_per_s": round(self.images_per_step / seconds, 2)}
        if self.config.train_text_encoder:
            row["lr_text_encoder"] = self.optimizer.param_groups[1]["lr"]
        if self.main:
            self.pending_log.append(row)
            log_to_trackers(self.accelerator, row)
            self.progress.update(self.images_per_step)
            self.progress.set_postfix({"step": step, "loss": f"{loss:.4f}"}, refresh=False)
            if time.monotonic() - self.last_flush > 5:
                self.flush_log()

    def after_step(self, step: int) -> bool:
        """Validation grid and checkpoint when due, and stop requests; True when the loop must end."""
        config = self.config
        if config.sample_every and step % config.sample_every == 0:
            self.write_samples(step)
        if step == config.max_steps or (config.checkpoint_every and step % config.checkpoint_every == 0):
            self.write_checkpoint(step)
        stop = self.control.poll(step)  # Ctrl-C / SIGTERM, max_minutes, checkpoint_every_minutes
        if stop.checkpoint:
            self.write_checkpoint(step)
        return bool(stop.reason)

    def flush_log(self) -> None:
        if self.main and self.pending_log:
            from dishgen.fileio import append_jsonl

            append_jsonl(self.run.path / "log.jsonl", self.pending_log)
            self.pending_log.clear()
        self.last_flush = time.monotonic()

    def write_plots(self) -> None:
        rows = self.run.read_log()
        means = rolling_mean([r["loss"] for r in rows], 100)
        rows = [{**r, "loss_mean100": m} for r, m in zip(rows, means, strict=True)]
        plot_log(rows, self.run.path / "plots", {"loss": ["loss", "loss_mean100"], "grad_norm": ["grad_norm"],
                                                 "learning_rate": ["lr_unet", "lr_text_encoder"]})

    def write_checkpoint(self, step: int) -> None:
        """Every rank calls it (the gather of the random states needs all of them); rank 0 writes."""
        from accelerate.utils import gather_object

        from dishgen.train.state import rng_state

        states = gather_object([rng_state()])  # every rank's random state, written by rank 0
        self.control.saved(step)
        self.saved_step = step
        if self.main:
            self.flush_log()
            self.run.write_checkpoint(step, lambda folder: save_checkpoint(
                folder, save_lora_to=self.save_lora_to, optimizer=self.optimizer, lr_scheduler=self.lr_scheduler,
                scaler=self.accelerator.scaler, rng_states=states, config=config_to_dict(self.config), step=step,
                processes=self.accelerator.num_processes, prediction_type=self.parts.prediction_type),
                keep=self.config.keep_checkpoints or None)
            self.write_plots()
        self.accelerator.wait_for_everyone()

    def write_samples(self, step: int) -> None:
        """The validation prompts at fixed seeds through the current LoRA, as one grid (rank 0)."""
        if self.main:
            grid = _validation_grid(self.config, self.parts, self.trained, self.accelerator)
            save_image_grid(grid, self.run.path / "samples" / f"step-{step}.png", nrow=1,
                            labels=self.config.validation_prompts)
            if self.log_with == "tensorboard":
                writer = self.accelerator.get_tracker("tensorboard", unwrap=True)  # a SummaryWriter
                writer.add_images("validation", grid.add(1).div(2), step)
        self.accelerator.wait_for_everyone()

    def finish(self, step: int, data) -> Path:
        """The last checkpoint if the loop did not write it, then the LoRA file, plots and model card."""
        from dishgen.fileio import atomic_path

        if self.saved_step != step:  # (the loop checkpoints its last step; kept so the end never lacks one)
            self.write_checkpoint(step)
        if self.main:
            self.flush_log()
            with atomic_path(self.run.path / LORA_WEIGHTS_NAME) as tmp:
                self.save_lora_to(self.run.path, weight_name=tmp.name)
            self.write_plots()
            write_model_card(self.run.path / "README.md", self.config, data, step,
                             prediction_type=self.parts.prediction_type, xl=self.parts.xl)
        self.accelerator.wait_for_everyone()
        return self.run.path


def _validation_grid(config, parts: BaseModel, trained, accelerator) -> torch.Tensor:
    """Images of the validation prompts (fixed seeds) from a pipeline over the training models, (P, 3, R, R) in [-1, 1]."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from dishgen.diffusion import set_scheduler

    bare = accelerator.unwrap_model
    scheduler = DDPMScheduler.from_config(parts.noise_scheduler.config)
    if parts.xl:
        pipe = StableDiffusionXLPipeline(
            vae=parts.vae, text_encoder=bare(parts.text_encoder), text_encoder_2=bare(parts.text_encoder_2),
            tokenizer=parts.tokenizer, tokenizer_2=parts.tokenizer_2, unet=bare(parts.unet), scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(
            vae=parts.vae, text_encoder=bare(parts.text_encoder), tokenizer=parts.tokenizer, unet=bare(parts.unet),
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
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
    return torch.stack(pictures).float().mul(2).sub(1)  # (P, 3, R, R) in [-1, 1]


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
