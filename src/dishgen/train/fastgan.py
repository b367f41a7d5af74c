"""Train the caption-conditional FastGAN, as one linear story.

config -> data (images in memory, cached caption embeddings) -> G, D, G_ema -> optimizers ->
accelerator -> loop (D step: hinge + reconstruction of the real images + optional mismatched
captions and lazy R1; G step; EMA; log, samples, checkpoints) -> export of the EMA generator.

Every random draw of a step (batch order, flips, noise, augmentation, the quarter D rebuilds)
comes from a generator seeded with ``(seed, step, rank)``, so a resumed run repeats an
uninterrupted one exactly. The run directory, checkpoint files, gradient averaging across
processes and the batch order are the cGAN trainer's (imported from :mod:`dishgen.train.cgan`);
what differs is the network and D's self-supervised reconstruction loss.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch

from dishgen.config import (
    MAX_SEED,
    MINUTES,
    ConfigError,
    checked,
    config_to_dict,
    resolve_run_config,
    validate_config,
)
from dishgen.errors import DishgenError
from dishgen.models import cgan, fastgan
from dishgen.models.augment import apply_params, parse_policy, sample_params
from dishgen.models.layers import ema_update
from dishgen.train.cgan import (
    CheckpointWriteError,
    _adam,
    _check_in_sync,
    _real_batch,
    _reduce_and_clip,
    batch_indices,
    load_checkpoint,
    save_checkpoint,
    step_generator,
)
from dishgen.train.common import (
    TRACKERS,
    RunDir,
    StopControl,
    check_finite,
    log_to_trackers,
    plot_log,
    progress_bar,
    resume_command,
    run_lock,
    save_image_grid,
    start_trackers,
    tracker_kwargs,
)

FAMILY = "fastgan"


@dataclass
class FastGANTrainConfig:
    """Everything a FastGAN run needs; saved as the run's ``config.json``.

    ``batch_size`` is per process: the global batch is ``batch_size * num_processes``.
    """

    # Old spellings (accepted until dishgen.deprecation.REMOVED_IN): precision=fp32|bf16|fp16.
    RENAMED_KEYS: ClassVar[dict] = {"precision": ("mixed_precision", {"fp32": "no"})}

    # data and text
    resolution: int = checked(128, power_of_two=True, min=32, max=512)
    text_encoder: str = checked("minilm", non_empty=True)
    text_cache: bool = True  # cache caption embeddings in DATASET/.cache
    flip: bool = True  # random horizontal flips of training images
    # networks
    z_dim: int = checked(128, min=1)
    cond_dim: int = checked(128, min=1)
    g_channels: int = checked(16, min=1)
    d_channels: int = checked(16, min=1)
    max_channels: int = checked(256, min=1)
    decoder_channels: int = checked(64, min=1)
    # per-pixel noise injection in G (off by default so runs saved before it resume; on in the presets)
    noise: bool = False
    # G's 2x upsampling: "nearest" (the paper's; runs saved before this key) or "bilinear" (no plaid of
    # tile edges along the pixel grid; the presets' choice)
    upsample: str = checked("nearest", choices=fastgan.UPSAMPLE_MODES)
    # start G, D and G_ema from another run's latest checkpoint (or a checkpoint folder); its network
    # must have this run's shape, except for layers this run adds that start as the identity (noise).
    init_from: str = ""
    # objective
    augment: str = "color,translation,cutout"  # DiffAugment policy, "" for none
    recon_weight: float = checked(1.0, min=0, text="at least 0 (0 turns D's reconstruction off)")
    # share of the fake side given to real images with another caption; 0 = off
    mismatch_weight: float = checked(0.0, min=0, max=1, max_open=True)
    # R1 weight (gamma / 2 * ||grad||^2), StyleGAN2-ADA's 2e-4 * R^2 / batch at 128 px, batch 8. Without
    # it every setting tried collapsed to one template with 1-3 px stripes by step 500 (docs/fastgan.md).
    r1_gamma: float = checked(0.5, min=0, text="at least 0 (0 turns R1 off)")
    r1_every: int = checked(16, min=1)  # lazy R1: every k steps, scaled by k
    # optimisation: FastGAN's Adam betas (0.5, 0.999) with D four times faster than G. With equal
    # rates (FastGAN's 2e-4 for both) G outran D on FFML at 128 px with the cpu preset's widths:
    # every seed and caption collapsed to one template by step 250-500 while D sat near chance,
    # although a fresh D told that G's fakes from photos within 60 steps. The faster D alone only
    # delayed the collapse; R1 (above) stopped it (docs/fastgan.md).
    batch_size: int = checked(8, min=1)
    g_lr: float = checked(5e-5, min=0, min_open=True)
    d_lr: float = checked(2e-4, min=0, min_open=True)
    g_betas: tuple[float, float] = checked((0.5, 0.999), min=0, max=1, max_open=True,
                                           text="two numbers in [0, 1), such as 0.5,0.999")
    d_betas: tuple[float, float] = checked((0.5, 0.999), min=0, max=1, max_open=True,
                                           text="two numbers in [0, 1), such as 0.5,0.999")
    grad_clip: float = checked(0.0, min=0, text="at least 0 (0 turns clipping off)")  # max gradient norm per network
    ema_decay: float = checked(0.999, min=0, max=1, max_open=True)
    ema_rampup: bool = True  # decay min(ema_decay, (1 + step) / (10 + step)) early on
    # speed
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast dtype (accelerate's name); fp16 needs CUDA
    channels_last: bool = True
    # schedule and outputs
    max_steps: int = checked(50000, min=1)
    seed: int = checked(0, min=0, max=MAX_SEED)
    log_every: int = checked(10, min=1)
    log_with: str = checked("none", choices=TRACKERS)  # also log the scalars to tensorboard or wandb
    sample_every: int = checked(500, min=1)
    checkpoint_every: int = checked(1000, min=1)
    keep_checkpoints: int = checked(3, min=0, text="at least 0 (0 keeps all)")
    # wall-clock limit per invocation: checkpoint, export and stop; 0 = none
    max_minutes: float = checked(0.0, min=0, text=MINUTES)
    # also checkpoint after this much time; 0 = off
    checkpoint_every_minutes: float = checked(30.0, min=0, text=MINUTES)
    sample_prompts: list[str] = field(default_factory=list)  # default: captions from the test split
    sample_per_prompt: int = checked(4, min=1)

    def validate(self) -> None:
        """The checks no single field declares (called by :func:`~dishgen.config.validate_config`)."""
        try:
            parse_policy(self.augment)
        except ValueError as err:
            raise ConfigError(f"augment={self.augment!r}: {err}") from None

    def model_config(self, c_dim: int) -> fastgan.FastGANConfig:
        return fastgan.FastGANConfig(resolution=self.resolution, z_dim=self.z_dim, c_dim=c_dim, cond_dim=self.cond_dim,
                                     g_channels=self.g_channels, d_channels=self.d_channels,
                                     max_channels=self.max_channels, decoder_channels=self.decoder_channels,
                                     noise=self.noise, upsample=self.upsample)


PRESETS = {
    # This 2-core CPU: 128 px, MiniLM (offline), narrow networks, batch 8.
    "cpu": dict(resolution=128, g_channels=16, d_channels=16, max_channels=256, decoder_channels=64, batch_size=8,
                noise=True, upsample="bilinear", text_encoder="minilm", max_steps=100000, sample_every=250, checkpoint_every=500),
    # One GPU: the paper's widths at 128 px (ngf = ndf = 64 at 256 px), batch 32.
    # R1 follows StyleGAN2-ADA's 2e-4 * R^2 / batch: 0.1 at 128 px and batch 32.
    "gpu": dict(resolution=128, g_channels=32, d_channels=32, max_channels=512, decoder_channels=128, batch_size=32,
                noise=True, upsample="bilinear", r1_gamma=0.1, text_encoder="minilm", max_steps=50000, sample_every=1000, checkpoint_every=2000),
}


def resolve_train_config(out: str | Path, *, preset=None, config_file=None, overrides=(), resume=False):
    """The run's config: on ``--resume`` the saved one, else defaults -> preset; then file, overrides."""
    return resolve_run_config(FastGANTrainConfig, out, family=FAMILY, presets=PRESETS, preset=preset,
                              config_file=config_file, overrides=overrides, resume=resume)


def train(config: FastGANTrainConfig, data: str | Path, out: str | Path, *, resume: bool = False,
          device: str | None = None) -> Path:
    """Train a FastGAN on a dataset and export its EMA generator to ``OUT/model``.

    Args:
        config: the resolved config.
        data: dataset folder (``train/metadata.jsonl`` with ``text`` captions).
        out: run directory.
        resume: continue from the run's latest checkpoint.
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto``; under ``torchrun`` or
            ``accelerate launch`` each process takes its own device.

    Returns:
        The run directory.
    """
    validate_config(config)  # before anything is loaded or written
    with run_lock(out):  # one writer per run directory (rank 0 under a launcher)
        return _train(config, data, out, resume=resume, device=device)


def _train(config, data, out, *, resume: bool, device: str | None) -> Path:
    from accelerate import Accelerator

    from dishgen.data.dataset import DatasetError, load_split
    from dishgen.devices import resolve_device
    from dishgen.exports import fastgan_metadata as model_metadata
    from dishgen.exports import save_fastgan_model as save_model
    from dishgen.images_tensor import load_images_uint8
    from dishgen.text import load_text_encoder
    from dishgen.text.cache import encode_cached

    # -- accelerator and run dir ---------------------------------------------------------------------
    device_arg, asked = device, resolve_device(device)
    accelerator = Accelerator(cpu=asked.type == "cpu", **tracker_kwargs(config.log_with, out))
    device = accelerator.device if accelerator.num_processes > 1 else asked
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.mixed_precision == "fp16" and device.type != "cuda":
        raise DishgenError("mixed_precision=fp16 needs a CUDA device; use mixed_precision=bf16 or no on the CPU")
    run = RunDir(out, FAMILY)
    if accelerator.is_main_process:
        run.prepare(config_to_dict(config), resume=resume)
    accelerator.wait_for_everyone()
    start_trackers(accelerator, FAMILY, config_to_dict(config))
    start_step = run.latest_checkpoint() if resume else None

    # -- data: images in memory as uint8, caption embeddings from the cache ---------------------------
    rows = load_split(data, "train")
    try:
        sample_rows = load_split(data, "test")
    except DatasetError:
        sample_rows = rows
    encoder = load_text_encoder(config.text_encoder)
    encoder_info = {"id": encoder.id, "dim": encoder.dim}
    cache_dir = Path(data) / ".cache" if config.text_cache else None
    with accelerator.main_process_first():
        try:
            c_all = encode_cached(encoder, [r.text for r in rows], cache_dir)
        except OSError:  # a read-only dataset: encode in memory
            c_all = encode_cached(encoder, [r.text for r in rows], None)
    images = load_images_uint8([r.path for r in rows], config.resolution).to(device)  # (N, 3, R, R)
    c_all = c_all.to(device)  # (N, c_dim)
    prompts = list(config.sample_prompts) or _sample_captions(sample_rows, 8)
    sample_c = encoder.encode(prompts).to(device).repeat_interleave(config.sample_per_prompt, 0)
    del encoder  # the text model is not needed during training

    # -- networks, optimizers, scalers ------------------------------------------------------------------
    model_config = config.model_config(c_dim=encoder_info["dim"])
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    G, D = fastgan.Generator(model_config).to(device), fastgan.Discriminator(model_config).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    for net in (G, D, G_ema):
        net.to(memory_format=memory_format)
    opt_G = _adam(G.parameters(), config.g_lr, config.g_betas)
    opt_D = _adam(D.parameters(), config.d_lr, config.d_betas)
    use_scaler = config.mixed_precision == "fp16"
    scaler_G = torch.amp.GradScaler(device.type, enabled=use_scaler)
    scaler_D = torch.amp.GradScaler(device.type, enabled=use_scaler)
    amp_dtype = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.mixed_precision]

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

    sample_z = torch.randn(len(sample_c), config.z_dim, generator=torch.Generator().manual_seed(config.seed))
    sample_z = sample_z.to(device)

    step = 0
    if start_step is not None:
        _check_resumable(run.checkpoint_path(start_step), model_config, encoder_info)
        step = load_checkpoint(run.checkpoint_path(start_step), G, D, G_ema, opt_G, opt_D, scaler_G, scaler_D)
        if accelerator.is_main_process:
            print(f"resumed from {run.checkpoint_path(start_step)} at step {step}")
    elif config.init_from:
        source = _init_weights(config.init_from, model_config, encoder_info, G, D, G_ema)
        if accelerator.is_main_process:
            print(f"networks initialised from {source}")

    def write_checkpoint(at_step: int) -> None:
        _check_in_sync(accelerator, at_step, G, D)
        control.saved(at_step)
        if not accelerator.is_main_process:
            return
        meta = model_metadata(model_config, encoder_info, kind="checkpoint", step=at_step,
                              train_config=config_to_dict(config))
        try:
            run.write_checkpoint(at_step, lambda folder: save_checkpoint(
                folder, meta, G, D, G_ema, opt_G, opt_D, scaler_G, scaler_D), keep=config.keep_checkpoints or None)
        except OSError as err:
            latest = run.latest_checkpoint()
            kept = f"{run.checkpoint_path(latest)} is intact" if latest is not None else "no earlier checkpoint exists"
            raise CheckpointWriteError(
                f"could not write checkpoint-{at_step} in {run.path} ({err.strerror or err}); {kept}. "
                "Free disk space, then --resume"
            ) from err

    def write_samples(at_step: int) -> None:
        if accelerator.is_main_process:
            with torch.no_grad(), autocast():
                pics = G_ema(sample_z, sample_c).float()
            save_image_grid(pics, run.path / "samples" / f"step-{at_step:07d}.png", nrow=config.sample_per_prompt,
                            labels=prompts)
            plot_log(run.read_log(), run.path / "plots", PLOT_GROUPS)

    # -- the loop ---------------------------------------------------------------------------------------
    num_items, policy, R = len(images), config.augment, config.resolution
    log_sums: dict[str, float] = {}
    r1_value = None  # logged as null until the first lazy R1 step
    tick = time.perf_counter()
    steps_since_log = 0
    images_per_step = config.batch_size * world  # real images D judges per step
    progress = progress_bar(FAMILY, step=step, max_steps=config.max_steps, images_per_step=images_per_step,
                            enabled=accelerator.is_main_process)
    control = StopControl(accelerator, max_minutes=config.max_minutes,
                          checkpoint_every_minutes=config.checkpoint_every_minutes,
                          resume_command=resume_command(FAMILY, data, out, device_arg))
    with control:
        while step < config.max_steps:
            step += 1
            rng = step_generator(config.seed, step, rank, device)
            idx = batch_indices(num_items, config.batch_size * world, step - 1, config.seed)[rank::world].to(device)
            real = _real_batch(images[idx], config.flip, rng, memory_format)  # (B, 3, R, R) in [-1, 1]
            c = c_all[idx]  # (B, c_dim)
            B = real.shape[0]
            z = torch.randn(B, config.z_dim, generator=rng, device=device)
            part = int(torch.randint(4, (1,), generator=rng, device=device))  # the quarter D rebuilds

            # Discriminator: hinge on real vs fake, D's reconstruction of the augmented real images it
            # judged, optional mismatched captions and lazy R1. The fakes keep their graph for the G step.
            with autocast():
                fake = G(z, c, G.draw_noise(B, rng, device) if model_config.noise else None)
                pair = apply_params(torch.cat([real, fake.detach().to(real.dtype)]),
                                    sample_params(2 * B, R, R, policy, rng, device))
                # Real and fake in separate batches: D's batch-norms never mix their statistics.
                h_real, maps = D.features(pair[:B])  # (B, C, 8, 8)
                h_fake, _ = D.features(pair[B:])
                real_logits, fake_logits = D.logits(h_real, c), D.logits(h_fake, c)
                loss_real, loss_fake = cgan.d_hinge_loss(real_logits, fake_logits)
                loss_recon = torch.zeros((), device=device)
                if config.recon_weight > 0:
                    whole, quarter = D.reconstruct(maps, part)
                    loss_recon = fastgan.reconstruction_loss(whole, quarter, pair[:B], part)
                w = config.mismatch_weight
                loss_D = loss_real + (1 - w) * loss_fake + config.recon_weight * loss_recon
                loss_mismatch = torch.zeros((), device=device)
                if w > 0:
                    perm = torch.randperm(B, generator=rng, device=device)
                    differs = (c[perm] - c).abs().amax(dim=1) > 1e-6
                    mismatch_logits = D.logits(h_real, c[perm])  # (B, P)
                    loss_mismatch = cgan.mismatch_loss(mismatch_logits.flatten(),
                                                       differs[:, None].expand_as(mismatch_logits).flatten())
                    loss_D = loss_D + w * loss_mismatch
            loss_D_adv = (loss_real + (1 - w) * loss_fake).detach()
            if config.r1_gamma > 0 and step % config.r1_every == 0:
                real_aug = apply_params(real, sample_params(B, R, R, policy, rng, device)).detach().requires_grad_(True)
                r1 = cgan.r1_penalty(D(real_aug, c), real_aug)
                r1_value = float(r1.detach())
                loss_D = loss_D + (config.r1_gamma / 2) * config.r1_every * r1
            opt_D.zero_grad(set_to_none=True)
            scaler_D.scale(loss_D).backward()
            grad_norm_D = _reduce_and_clip(D, opt_D, scaler_D, accelerator, config.grad_clip)
            scaler_D.step(opt_D)
            scaler_D.update()

            # Generator: fool the updated D with the same fakes, freshly augmented.
            D.requires_grad_(False)
            with autocast():
                loss_G = cgan.g_hinge_loss(D(apply_params(fake, sample_params(B, R, R, policy, rng, device)), c))
            opt_G.zero_grad(set_to_none=True)
            scaler_G.scale(loss_G).backward()
            grad_norm_G = _reduce_and_clip(G, opt_G, scaler_G, accelerator, config.grad_clip)
            scaler_G.step(opt_G)
            scaler_G.update()
            D.requires_grad_(True)

            decay = min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_rampup else config.ema_decay
            ema_update(G_ema, G, decay)

            # -- bookkeeping ----------------------------------------------------------------------------------
            check_finite(step, {"loss_D": float(loss_D.detach()), "loss_G": float(loss_G.detach())}, run)
            values = {"loss_D": float(loss_D_adv), "loss_G": float(loss_G.detach()),
                      "loss_D_real": float(loss_real.detach()), "loss_D_fake": float(loss_fake.detach()),
                      "loss_recon": float(loss_recon.detach()), "loss_D_mismatch": float(loss_mismatch.detach()),
                      "logits_real": float(real_logits.detach().mean()),
                      "logits_fake": float(fake_logits.detach().mean()),
                      "grad_norm_D": grad_norm_D, "grad_norm_G": grad_norm_G}
            for key, value in values.items():
                log_sums[key] = log_sums.get(key, 0.0) + value
            steps_since_log += 1
            progress.update(images_per_step)
            progress.set_postfix({"step": step, "loss_D": f"{values['loss_D']:.3f}", "loss_G": f"{values['loss_G']:.3f}",
                                  "recon": f"{values['loss_recon']:.3f}"}, refresh=False)
            if step % config.log_every == 0 or step == config.max_steps:
                elapsed = time.perf_counter() - tick
                row = {"step": step, **{k: v / steps_since_log for k, v in log_sums.items()},
                       "lr_G": opt_G.param_groups[0]["lr"], "lr_D": opt_D.param_groups[0]["lr"],
                       "r1": r1_value, "ema_decay": decay, "images_seen": step * images_per_step,
                       "images_per_s": steps_since_log * images_per_step / elapsed}
                if accelerator.is_main_process:
                    run.log(row)
                    log_to_trackers(accelerator, row)
                log_sums, steps_since_log, tick = {}, 0, time.perf_counter()
            if step % config.sample_every == 0:
                write_samples(step)
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                write_checkpoint(step)
            stop = control.poll(step)  # Ctrl-C / SIGTERM, max_minutes, checkpoint_every_minutes
            if stop.checkpoint:
                write_checkpoint(step)
            if stop.reason:
                break
    progress.close()
    control.finish(step, run.checkpoint_path(step))  # after Ctrl-C: raises, no export

    # -- export ------------------------------------------------------------------------------------------
    if accelerator.is_main_process:
        if run.latest_checkpoint() != step:
            write_checkpoint(step)
        if step % config.sample_every != 0 or start_step == step:
            write_samples(step)
        save_model(run.path / "model", G_ema, model_config, encoder_info, step=step, train_config=config_to_dict(config),
                   run_dir=run.path, data=data)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run.path


PLOT_GROUPS = {
    "losses": ["loss_D", "loss_G", "loss_D_real", "loss_D_fake", "loss_D_mismatch"],
    "reconstruction": ["loss_recon"],
    "logits": ["logits_real", "logits_fake"],
    "grad_norms": ["grad_norm_D", "grad_norm_G"],
    "r1": ["r1"],
    "throughput": ["images_per_s"],
}


def _sample_captions(rows, count: int) -> list[str]:
    """``count`` captions of different dishes, spread over the split (one caption per dish)."""
    per_dish = list({(r.dish or r.text): r.text for r in reversed(rows)}.values())[::-1]  # each dish's first caption
    if len(per_dish) <= count:
        return per_dish
    return [per_dish[i * len(per_dish) // count] for i in range(count)]


def _check_resumable(folder: Path, model_config: fastgan.FastGANConfig, encoder_info: dict) -> None:
    """A clear error when ``--resume`` is asked with another network shape or text encoder."""
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if saved["text_encoder"]["id"] != encoder_info["id"]:
        raise DishgenError(f"{folder} was trained with text_encoder={saved['text_encoder']['id']!r}, "
                           f"not {encoder_info['id']!r}; resume with the same encoder or start a new run")
    changed = _shape_changes(saved["model"], model_config)
    if changed:
        raise DishgenError(f"{folder} holds a network with {', '.join(changed)}; resume with the same shape")


def _shape_changes(saved: dict, model_config: fastgan.FastGANConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key=saved (now new)`` for each network setting that differs; a key missing from an older
    save counts as its default."""
    defaults = config_to_dict(fastgan.FastGANConfig())
    return [f"{k}={saved.get(k, defaults[k])!r} (now {v!r})" for k, v in config_to_dict(model_config).items()
            if k not in ignore and saved.get(k, defaults[k]) != v]


def _init_weights(source: str, model_config: fastgan.FastGANConfig, encoder_info: dict, G, D, G_ema) -> Path:
    """Load G, D and G_ema from ``source`` (a run's latest checkpoint, or a checkpoint folder) for
    ``init_from=``. Only noise injection may be new here (its weights start at zero, so the loaded
    networks compute what they computed before), and the upsampling may change (the same weights
    then draw the same dishes without the nearest-neighbour tiles). Returns the checkpoint folder."""
    from safetensors.torch import load_file

    path = Path(source).expanduser()
    if not (path / "trainer_state.json").is_file():
        latest = RunDir(path, FAMILY).latest_checkpoint() if path.is_dir() else None
        if latest is None:
            raise DishgenError(f"init_from={source!r} is neither a fastgan checkpoint folder nor a run with one")
        path = RunDir(path, FAMILY).checkpoint_path(latest)
    saved = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if saved.get("family") != FAMILY:
        raise DishgenError(f"init_from={source!r} holds a {saved.get('family')!r} model, not a fastgan one")
    if saved["text_encoder"]["id"] != encoder_info["id"]:
        raise DishgenError(f"init_from={source!r} was trained with text_encoder={saved['text_encoder']['id']!r}, "
                           f"not {encoder_info['id']!r}")
    changed = _shape_changes(saved["model"], model_config, ignore=("noise", "upsample"))
    if changed:
        raise DishgenError(f"init_from={source!r} holds a network with {', '.join(changed)}; "
                           "set the same shape to start from it")
    for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
        missing, unexpected = net.load_state_dict(load_file(str(path / f"{name}.safetensors")), strict=False)
        new = [k for k in missing if ".noise" not in k]
        if new or unexpected:
            raise DishgenError(f"init_from={source!r}: {name} does not fit this network "
                               f"(missing {new[:3]}, unexpected {unexpected[:3]})")
    return path
