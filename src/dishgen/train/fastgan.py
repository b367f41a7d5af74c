"""Train the caption-conditional FastGAN, as one linear story.

config -> data (images in memory, cached caption embeddings) -> G, D, G_ema -> optimizers ->
accelerator -> loop (D step: hinge + reconstruction of the real images + optional mismatched
captions and lazy R1; G step; EMA; log, samples, checkpoints) -> export of the EMA generator.

Every random draw of a step (batch order, flips, noise, augmentation, the quarter D rebuilds)
comes from a generator seeded with ``(seed, step, rank)``, so a resumed run repeats an
uninterrupted one exactly. The run directory, checkpoint files, gradient averaging across
processes and the batch order are the cGAN trainer's (:mod:`dishgen.train.gan_run`,
:mod:`dishgen.train.gan_steps`, :mod:`dishgen.train.gan_checkpoint`); what differs is the network
and D's self-supervised reconstruction loss, in this file's step.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
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
from dishgen.data.dataset import check_dish_pattern
from dishgen.errors import DishgenError
from dishgen.models import cgan, fastgan
from dishgen.models.augment import apply_params, parse_policy, sample_params
from dishgen.models.layers import ema_update
from dishgen.runs import RunDir
from dishgen.train.common import TRACKERS, check_finite, run_lock
from dishgen.train.gan_checkpoint import CheckpointWriteError, load_checkpoint, save_checkpoint  # noqa: F401  (importable here, as before)
from dishgen.train.gan_run import (
    GanData,
    GanNetworks,
    GanOutputs,
    GanRun,
    build_networks,
    load_data,
    start_run,
)
from dishgen.train.gan_run import resume as resume_run
from dishgen.train.gan_steps import (
    batch_indices,
    generator_step,
    lazy_r1,
    real_batch,
    step_generator,
    update,
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
    # leave out training images whose dish name matches this regular expression (case-insensitive),
    # as `data build --exclude` does, but the dataset's train/test split stays as built; "" keeps all
    exclude: str = ""
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
    # must have this run's shape, except for layers this run adds that start as the identity (noise)
    # and the upsampling filter (the same weights, interpolated instead of copied). An exported model
    # (a run's model/, or a bundled name such as fastgan-ffml128) gives G and G_ema only: D starts fresh.
    init_from: str = ""
    # train D alone for this many first steps (G and G_ema frozen), so a fresh D learns to tell the
    # inherited G's fakes before G follows it; for init_from an exported model. 0 = off
    d_warmup: int = checked(0, min=0)
    # objective
    augment: str = "color,translation,cutout"  # DiffAugment policy, "" for none
    recon_weight: float = checked(1.0, min=0, text="at least 0 (0 turns D's reconstruction off)")
    # share of the fake side given to real images with another caption; 0 = off
    mismatch_weight: float = checked(0.0, min=0, max=1, max_open=True)
    # mode seeking (MSGAN, Mao et al. 2019): half the fakes repeat the other half's captions with other
    # noise, and G is pushed to make such pairs differ (weight of 1 / (image distance / z distance));
    # counters one look per caption, which a strong caption term (mismatch_weight) brings on. 0 = off
    diversity_weight: float = checked(0.0, min=0)
    # caption colour: G's loss adds this weight times the mean absolute difference between the dish
    # colour statistics (mean and spread of R, G, B over the non-white pixels, and the dish's share
    # of the image) of each fake and of the real photo whose caption it was drawn for. A direct
    # signal that the caption sets the dish's colours and size; 0 = off
    colour_weight: float = checked(0.0, min=0)
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
        check_dish_pattern(self.exclude)

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
    # R1 follows StyleGAN2-ADA's 2e-4 * R^2 / batch: 0.1 at 128 px and batch 32. The caption terms
    # are those of the bundled model's last runs (18, 19: docs/fastgan.md), which drew captions apart.
    "gpu": dict(resolution=128, g_channels=32, d_channels=32, max_channels=512, decoder_channels=128, batch_size=32,
                noise=True, upsample="bilinear", r1_gamma=0.1, text_encoder="minilm", max_steps=50000, sample_every=1000,
                checkpoint_every=2000, mismatch_weight=0.2, colour_weight=5.0),
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
    from dishgen.exports import fastgan_metadata, save_fastgan_model

    session = start_run(config, out, family=FAMILY, resume=resume, device=device)
    batches = load_data(config, data, session, default_prompts=lambda rows: _sample_captions(rows, 8))
    model_config = config.model_config(c_dim=batches.encoder_info["dim"])
    nets = build_networks(config, lambda: fastgan.Generator(model_config), lambda: fastgan.Discriminator(model_config),
                          session.device)
    step = resume_run(session, nets, lambda folder: _check_resumable(folder, model_config, batches.encoder_info))
    if session.start_step is None and config.init_from:
        source, with_D = _init_weights(config.init_from, model_config, batches.encoder_info, nets.G, nets.D, nets.G_ema)
        if session.is_main:
            print(f"networks initialised from {source}" + ("" if with_D else " (G and G_ema; D starts fresh)"))
            if not with_D and config.d_warmup == 0:
                print("note: D starts fresh while G is trained; d_warmup=200 lets D learn G's fakes first "
                      "(docs/fastgan.md)")
            if config.ema_rampup:
                print("note: ema_rampup=true lets G_ema follow the raw generator for the first few hundred steps, "
                      "replacing the EMA inherited from init_from; ema_rampup=false keeps it (docs/fastgan.md)")
    images_per_step = config.batch_size * session.world  # real images D judges per step
    outputs = GanOutputs(
        config, session, nets, batches, plot_groups=PLOT_GROUPS, images_per_step=images_per_step,
        metadata=lambda kind, at: fastgan_metadata(model_config, batches.encoder_info, kind=kind, step=at,
                                                   train_config=config_to_dict(config)),
        data_path=data, out=out, step=step, family=FAMILY,
        progress_postfix=lambda v: {"loss_D": f"{v['loss_D']:.3f}", "loss_G": f"{v['loss_G']:.3f}",
                                    "recon": f"{v['loss_recon']:.3f}"})
    r1_value = None  # logged as null until the first lazy R1 step
    with outputs.control:
        while step < config.max_steps:
            step += 1
            values, r1, decay = _train_step(step, config, session, nets, batches)
            r1_value = r1 if r1 is not None else r1_value
            extra = {"lr_G": nets.opt_G.param_groups[0]["lr"], "lr_D": nets.opt_D.param_groups[0]["lr"],
                     "r1": r1_value, "ema_decay": decay, "images_seen": step * images_per_step}
            if outputs.after_step(step, values, extra):  # log, samples, checkpoint; True: stop
                break
    return outputs.export(step, lambda folder: save_fastgan_model(
        folder, nets.G_ema, model_config, batches.encoder_info, step=step, train_config=config_to_dict(config),
        run_dir=session.run.path, data=data))


def _train_step(step: int, config, session: GanRun, nets: GanNetworks, batches: GanData):
    """One D update and one G update on the same fakes, then the EMA. Returns the logged values,
    R1 (``None`` on steps without it) and the EMA decay (``None`` on D warm-up steps). Every random draw of the step (batch,
    flips, noise, the quarter D rebuilds, augmentation) comes from the (seed, step, rank) stream."""
    device, world = session.device, session.world
    rng = step_generator(config.seed, step, session.rank, device)
    idx = batch_indices(len(batches.images), config.batch_size * world, step - 1, config.seed)[session.rank::world].to(device)
    real = real_batch(batches.images[idx], config.flip, rng, nets.memory_format)  # (B, 3, R, R) in [-1, 1]
    c = batches.c_all[idx]  # (B, c_dim)
    z = torch.randn(real.shape[0], config.z_dim, generator=rng, device=device)
    part = int(torch.randint(4, (1,), generator=rng, device=device))  # the quarter D rebuilds
    c_fake, real_of_fake = c, real  # each fake's caption, and the real photo it was drawn for
    if config.diversity_weight > 0 and len(c) >= 2:  # pairs (i, i + h) share a caption, not a z
        h = len(c) // 2
        c_fake = torch.cat([c[:h], c[:h], c[2 * h:]])
        real_of_fake = torch.cat([real[:h], real[:h], real[2 * h:]])
    warmup = step <= config.d_warmup  # D alone: G and G_ema stay as they are
    d = _discriminator_step(step, real, z, c, part, config, session, nets, rng, c_fake=c_fake, fixed_G=warmup)
    if warmup:
        check_finite(step, {"loss_D": float(d["loss_D"].detach())}, session.run)
        return _logged(d, torch.zeros(()), None, None, 0.0), d["r1"], None  # no EMA update: decay logged as null
    loss_div = loss_colour = None
    if c_fake is not c:
        loss_div = config.diversity_weight * fastgan.mode_seeking_loss(d["fake"][:h], d["fake"][h:2 * h], z[:h], z[h:2 * h])
    if config.colour_weight > 0:
        loss_colour = config.colour_weight * fastgan.colour_loss(d["fake"], real_of_fake)
    extra = [loss for loss in (loss_div, loss_colour) if loss is not None]
    loss_G, grad_norm_G = generator_step(d["fake"], c_fake, config, nets, session.accelerator, session.device, rng,
                                         extra_loss=sum(extra) if extra else None)
    decay = min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_rampup else config.ema_decay
    ema_update(nets.G_ema, nets.G, decay)
    check_finite(step, {"loss_D": float(d["loss_D"].detach()), "loss_G": float(loss_G.detach())}, session.run)
    return _logged(d, loss_G, loss_div, loss_colour, grad_norm_G), d["r1"], decay


def _logged(d: dict, loss_G, loss_div, loss_colour, grad_norm_G: float) -> dict[str, float]:
    """The step's values for the log (G's are 0 on the D warm-up steps)."""
    return {"loss_D": float(d["loss_D_adv"]), "loss_G": float(loss_G.detach()),
            "loss_D_real": float(d["loss_real"].detach()), "loss_D_fake": float(d["loss_fake"].detach()),
            "loss_recon": float(d["loss_recon"].detach()), "loss_D_mismatch": float(d["loss_mismatch"].detach()),
            "loss_G_diversity": float(loss_div.detach()) if loss_div is not None else 0.0,
            "loss_G_colour": float(loss_colour.detach()) if loss_colour is not None else 0.0,
            "logits_real": float(d["real_logits"].detach().mean()),
            "logits_fake": float(d["fake_logits"].detach().mean()),
            "grad_norm_D": d["grad_norm_D"], "grad_norm_G": grad_norm_G}


def _discriminator_step(step: int, real, z, c, part: int, config, session: GanRun, nets: GanNetworks, rng,
                        c_fake=None, fixed_G: bool = False):
    """D's update: hinge on real vs fake, D's reconstruction of the augmented real images it judged,
    optional mismatched captions and lazy R1. The fakes keep their graph for the G step (not with
    ``fixed_G``, the D warm-up, where G is not updated). The fakes are drawn for ``c_fake``
    (default ``c``, the real images' captions).

    Returns the fakes and the losses, logits and gradient norm to log (``r1``: ``None`` without R1).
    """
    G, D, device, policy, R, B = nets.G, nets.D, session.device, config.augment, config.resolution, real.shape[0]
    with nets.autocast():
        c_fake = c if c_fake is None else c_fake
        with torch.no_grad() if fixed_G else nullcontext():
            fake = G(z, c_fake, G.draw_noise(B, rng, device) if G.config.noise else None)
        pair = apply_params(torch.cat([real, fake.detach().to(real.dtype)]),
                            sample_params(2 * B, R, R, policy, rng, device))
        # Real and fake in separate batches: D's batch-norms never mix their statistics.
        h_real, maps = D.features(pair[:B])  # (B, C, 8, 8)
        h_fake, _ = D.features(pair[B:])
        real_logits, fake_logits = D.logits(h_real, c), D.logits(h_fake, c_fake)
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
    r1_value = None
    if config.r1_gamma > 0 and step % config.r1_every == 0:
        r1_term, r1_value = lazy_r1(D, real, c, config, rng, device)  # on the augmented real images, fp32
        loss_D = loss_D + r1_term
    grad_norm_D = update(D, nets.opt_D, nets.scaler_D, loss_D, session.accelerator, config.grad_clip)
    return {"fake": fake, "loss_D": loss_D, "loss_D_adv": loss_D_adv, "loss_real": loss_real, "loss_fake": loss_fake,
            "loss_recon": loss_recon, "loss_mismatch": loss_mismatch, "real_logits": real_logits,
            "fake_logits": fake_logits, "grad_norm_D": grad_norm_D, "r1": r1_value}


PLOT_GROUPS = {
    "losses": ["loss_D", "loss_G", "loss_D_real", "loss_D_fake", "loss_D_mismatch", "loss_G_diversity",
               "loss_G_colour"],
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


def _init_weights(source: str, model_config: fastgan.FastGANConfig, encoder_info: dict, G, D, G_ema) -> tuple[Path, bool]:
    """Load the networks for ``init_from=``: G, D and G_ema from a run's latest checkpoint or a
    checkpoint folder; G and G_ema from an exported model (a run's ``model/``, or a bundled name),
    which carries only the EMA generator, so D keeps its fresh start. Only noise injection may be
    new here (its weights start at zero, so the loaded networks compute what they computed before),
    and the upsampling may change (the same weights then draw the same dishes without the
    nearest-neighbour tiles).

    Returns:
        ``(folder, with_D)``: the folder loaded and whether D came from it.
    """
    from dishgen.fileio import read_safetensors

    path = _init_folder(source)
    try:
        saved = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DishgenError(f"init_from={source!r}: {path / 'config.json'} could not be read ({err})") from None
    if saved.get("family") != FAMILY:
        raise DishgenError(f"init_from={source!r} holds a {saved.get('family')!r} model, not a fastgan one")
    if saved["text_encoder"]["id"] != encoder_info["id"]:
        raise DishgenError(f"init_from={source!r} was trained with text_encoder={saved['text_encoder']['id']!r}, "
                           f"not {encoder_info['id']!r}")
    changed = _shape_changes(saved["model"], model_config, ignore=("noise", "upsample"))
    if changed:
        raise DishgenError(f"init_from={source!r} holds a network with {', '.join(changed)}; "
                           "set the same shape to start from it")
    with_D = (path / "trainer_state.json").is_file()
    if with_D:
        states = {name: read_safetensors(path / f"{name}.safetensors") for name in ("G", "D", "G_ema")}
    else:  # an export: its EMA generator (float16 in the bundled model) is both G and G_ema
        weights = {k: v.float() if v.is_floating_point() else v
                   for k, v in read_safetensors(path / "model.safetensors").items()}
        states = {"G": weights, "G_ema": weights}
    for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
        if name not in states:
            continue
        missing, unexpected = net.load_state_dict(states[name], strict=False)
        new = [k for k in missing if ".noise" not in k]
        if new or unexpected:
            raise DishgenError(f"init_from={source!r}: {name} does not fit this network "
                               f"(missing {new[:3]}, unexpected {unexpected[:3]})")
    return path, with_D


def _init_folder(source: str) -> Path:
    """The folder ``init_from=`` names: a checkpoint, a run's latest checkpoint, an exported model
    folder or a bundled model's name."""
    from dishgen.bundled import WEIGHTS_DIR, bundled_models

    path = Path(source).expanduser()
    if not path.exists() and source in bundled_models():
        path = WEIGHTS_DIR / source
    if (path / "trainer_state.json").is_file() or (path / "model.safetensors").is_file():
        return path
    latest = RunDir(path, FAMILY).latest_checkpoint() if path.is_dir() else None
    if latest is None:
        raise DishgenError(f"init_from={source!r} is neither a fastgan run, a checkpoint folder, an exported model "
                           f"nor a bundled model ({', '.join(bundled_models()) or 'none installed'})")
    return RunDir(path, FAMILY).checkpoint_path(latest)
