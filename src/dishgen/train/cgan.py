"""Train the text-conditional GAN, as one linear story.

config -> data (images in memory, cached caption embeddings) -> G, D, G_ema -> optimizers and
one gradient scaler per network -> accelerator -> loop (D step: hinge + mismatched text + lazy R1;
G step; EMA; log, samples, checkpoints) -> export of the EMA generator.

Every random draw of a step (batch order, flips, noise, augmentation, caption shuffle) comes from a
generator seeded with ``(seed, step, rank)``, so a resumed run repeats an uninterrupted one
exactly. Several processes (``torchrun``/``accelerate launch``) each take a slice of the global
batch; gradients are averaged by hand (an all-reduce per network) rather than with DDP, because
DDP cannot follow R1's double backward nor a network that is frozen for half of each step.
Only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
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
from dishgen.models import cgan
from dishgen.models.augment import apply_params, parse_policy, sample_params
from dishgen.models.layers import ema_update
from dishgen.train.common import TRACKERS, check_finite, run_lock
from dishgen.train.gan_checkpoint import (  # noqa: F401  (importable here, as before)
    CheckpointWriteError,
    load_checkpoint,
    match_param_layout,
    save_checkpoint,
)
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

logger = logging.getLogger(__name__)
FAMILY = "cgan"
# The names the FastGAN trainer imports from here (the shared GAN helpers live in gan_steps/gan_checkpoint).


@dataclass
class CGANTrainConfig:
    """Everything a cGAN run needs; saved as the run's ``config.json``.

    ``batch_size`` is per process: the global batch is ``batch_size * num_processes``.
    """

    # Old spellings (accepted until dishgen.deprecation.REMOVED_IN): precision=fp32|bf16|fp16.
    RENAMED_KEYS: ClassVar[dict] = {"precision": ("mixed_precision", {"fp32": "no"})}

    # data and text
    resolution: int = checked(64, power_of_two=True, min=16, max=512)
    text_encoder: str = checked("minilm", non_empty=True)
    text_cache: bool = True  # cache caption embeddings in DATASET/.cache
    flip: bool = True  # random horizontal flips of training images
    # leave out training images whose dish name matches this regular expression (case-insensitive),
    # as `data build --exclude` does, but the dataset's train/test split stays as built; "" keeps all
    exclude: str = ""
    # networks
    z_dim: int = checked(128, min=1)
    cond_dim: int = checked(128, min=1)
    base_channels: int = checked(32, min=1)
    max_channel_mult: int = checked(8, min=1)
    d_extra_blocks: int = checked(0, min=0)  # D blocks at 4x4 without downsampling (the original had 1)
    # objective
    augment: str = "color,translation,cutout"  # DiffAugment policy, "" for none
    # share of the fake side given to real images with another caption; 0 = off
    mismatch_weight: float = checked(0.0, min=0, max=1, max_open=True)
    r1_gamma: float = checked(0.1, min=0, text="at least 0 (0 turns R1 off)")  # R1 weight (gamma / 2 * ||grad||^2)
    r1_every: int = checked(16, min=1)  # lazy R1: every k steps, scaled by k
    # optimisation
    batch_size: int = checked(16, min=1)
    n_disc: int = checked(1, min=1)  # D steps per G step
    g_lr: float = checked(1e-4, min=0, min_open=True)  # two time-scale update rule (BigGAN/SAGAN): D learns 4x faster
    d_lr: float = checked(4e-4, min=0, min_open=True)
    g_betas: tuple[float, float] = checked((0.0, 0.9), min=0, max=1, max_open=True,
                                           text="two numbers in [0, 1), such as 0,0.9")
    d_betas: tuple[float, float] = checked((0.0, 0.9), min=0, max=1, max_open=True,
                                           text="two numbers in [0, 1), such as 0,0.9")
    grad_clip: float = checked(0.0, min=0, text="at least 0 (0 turns clipping off)")  # max gradient norm per network
    ema_decay: float = checked(0.999, min=0, max=1, max_open=True)
    ema_rampup: bool = True  # decay min(ema_decay, (1 + step) / (10 + step)) early on
    # speed
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast dtype (accelerate's name); fp16 needs CUDA
    channels_last: bool = True
    # torch.compile G and D's image path (fuses batch-norm, ReLU and the folded kernels); the first
    # steps pay the build, seconds to a minute or two on a CPU; eager with a warning where torch cannot
    compile: bool = False
    # schedule and outputs
    max_steps: int = checked(10000, min=1)
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

    def model_config(self, c_dim: int) -> cgan.CGANConfig:
        return cgan.CGANConfig(resolution=self.resolution, z_dim=self.z_dim, c_dim=c_dim, cond_dim=self.cond_dim,
                               base_channels=self.base_channels, max_channel_mult=self.max_channel_mult,
                               d_extra_blocks=self.d_extra_blocks)


PRESETS = {
    # The original project's reported setting.
    "paper": dict(resolution=128, base_channels=32, batch_size=4, g_lr=5e-5, d_lr=1.5e-4, g_betas=(0.0, 0.9),
                  d_betas=(0.0, 0.9), r1_gamma=2.0, grad_clip=1.0, ema_decay=0.999,
                  text_encoder="clip:laion/CLIP-ViT-L-14-laion2B-s32B-b82K"),
    # Sized for a laptop CPU: 64 px, MiniLM (offline), the bundled default model's recipe.
    # TTUR rates and no mismatch term: on FFML with MiniLM captions both left D flat early on.
    # compile: 1.11x per step (one thread); its one-minute build is paid back after ~1,700 of the
    # 20,000 steps (docs/cgan.md, "Like for like"); eager with a warning where torch cannot compile.
    "cpu": dict(resolution=64, base_channels=32, batch_size=16, text_encoder="minilm", g_lr=1e-4, d_lr=4e-4,
                g_betas=(0.0, 0.9), d_betas=(0.0, 0.9), r1_gamma=0.1, r1_every=16, mismatch_weight=0.0,
                ema_decay=0.999, max_steps=20000, sample_every=500, checkpoint_every=1000, compile=True),
}


def resolve_train_config(out: str | Path, *, preset=None, config_file=None, overrides=(), resume=False):
    """The run's config: on ``--resume`` the saved one, else defaults -> preset; then file, overrides."""
    return resolve_run_config(CGANTrainConfig, out, family=FAMILY, presets=PRESETS, preset=preset,
                              config_file=config_file, overrides=overrides, resume=resume)


def train(config: CGANTrainConfig, data: str | Path, out: str | Path, *, resume: bool = False,
          device: str | None = None) -> Path:
    """Train a cGAN on a dataset and export its EMA generator to ``OUT/model``.

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
    from dishgen.exports import save_cgan_model

    session = start_run(config, out, family=FAMILY, resume=resume, device=device)
    batches = load_data(config, data, session, default_prompts=lambda rows: list(dict.fromkeys(r.text for r in rows))[:8])
    model_config = config.model_config(c_dim=batches.encoder_info["dim"])
    nets = build_networks(config, lambda: cgan.Generator(model_config), lambda: cgan.Discriminator(model_config),
                          session.device)
    nets.compiled = config.compile and compile_networks(nets.G, nets.D, session.device, (nets.opt_G, nets.opt_D))
    if nets.compiled and session.is_main:
        print("compile=true: the first step builds the compiled graphs (about a minute on a CPU, seconds once cached)")
    step = resume_run(session, nets, lambda folder: _check_resumable(folder, model_config, batches.encoder_info))
    images_per_step = config.batch_size * session.world * config.n_disc  # real images D judges per step
    outputs = GanOutputs(config, session, nets, batches, plot_groups=PLOT_GROUPS, images_per_step=images_per_step,
                         metadata=lambda kind, at: _meta(model_config, batches.encoder_info, kind, at, config),
                         data_path=data, out=out, step=step, family=FAMILY,
                         progress_postfix=lambda v: {"loss_D": f"{v['loss_D']:.3f}", "loss_G": f"{v['loss_G']:.3f}"})
    r1_value = None  # logged as null until the first lazy R1 step
    with outputs.control:
        while step < config.max_steps:
            step += 1
            values, r1, decay = _train_step(step, config, session, nets, batches)
            r1_value = r1 if r1 is not None else r1_value
            extra = {"lr_G": nets.opt_G.param_groups[0]["lr"], "lr_D": nets.opt_D.param_groups[0]["lr"],
                     "r1": r1_value, "ema_decay": decay}
            if outputs.after_step(step, values, extra):  # log, samples, checkpoint; True: stop
                break
    return outputs.export(step, lambda folder: save_cgan_model(
        folder, nets.G_ema, model_config, batches.encoder_info, step=step, train_config=config_to_dict(config),
        run_dir=session.run.path, data=data))


def _train_step(step: int, config, session: GanRun, nets: GanNetworks, batches: GanData):
    """``n_disc`` D updates, one G update, the EMA. Returns the logged values, R1 (``None`` on
    steps without it) and the EMA decay. Every random draw comes from the (seed, step, rank) stream."""
    rng = step_generator(config.seed, step, session.rank, session.device)
    r1 = None
    for k in range(config.n_disc):
        d = _discriminator_step(step, k, config, session, nets, batches, rng)
        r1 = d["r1"] if d["r1"] is not None else r1
    loss_G, grad_norm_G = generator_step(d["fake"], d["c"], config, nets, session.accelerator, session.device, rng)
    decay = min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_rampup else config.ema_decay
    ema_update(nets.G_ema, nets.G, decay)
    check_finite(step, {"loss_D": float(d["loss_D"].detach()), "loss_G": float(loss_G.detach())}, session.run)
    values = {"loss_D": float(d["loss_D_adv"]), "loss_G": float(loss_G.detach()),
              "loss_D_real": float(d["loss_real"].detach()), "loss_D_fake": float(d["loss_fake"].detach()),
              "loss_D_mismatch": float(d["loss_mismatch"].detach()), "logits_real": float(d["real_logits"].detach().mean()),
              "logits_fake": float(d["fake_logits"].detach().mean()), "grad_norm_D": d["grad_norm_D"],
              "grad_norm_G": grad_norm_G}
    return values, r1, decay


def _discriminator_step(step: int, k: int, config, session: GanRun, nets: GanNetworks, batches: GanData, rng):
    """D's ``k``-th update of ``step``: hinge on real vs fake, mismatched captions, lazy R1 (at k = 0).

    The last D step's fakes keep their graph: the G step reuses them (as pix2pix does), saving a G forward.
    Returns the batch's captions ``c``, the fakes and the losses, logits and gradient norm to log.
    """
    G, D, device, policy, world = nets.G, nets.D, session.device, config.augment, session.world
    idx = batch_indices(len(batches.images), config.batch_size * world, (step - 1) * config.n_disc + k,
                        config.seed)[session.rank::world].to(device)
    real = real_batch(batches.images[idx], config.flip, rng, nets.memory_format)  # (B, 3, R, R) in [-1, 1]
    c = batches.c_all[idx]  # (B, c_dim)
    B = real.shape[0]
    z = torch.randn(B, config.z_dim, generator=rng, device=device)
    r1_now = config.r1_gamma > 0 and k == 0 and step % config.r1_every == 0
    # R1's double backward cannot run through compiled graphs, and its D pass advances the spectral-norm
    # vectors that this step's compiled graph would have saved: a step with R1 runs eagerly.
    with nets.autocast(), eager_if(nets.compiled and r1_now):
        with torch.set_grad_enabled(k == config.n_disc - 1):
            fake = G(z, c)
        pair = torch.cat([real, fake.detach().to(real.dtype)])
        params = sample_params(2 * B, config.resolution, config.resolution, policy, rng, device)
        h = D.features(apply_params(pair, params))  # (2B, C): real features, then fake
        real_logits, fake_logits = D.logits(h[:B], c), D.logits(h[B:], c)
        loss_real, loss_fake = cgan.d_hinge_loss(real_logits, fake_logits)
        # GAN-INT-CLS split: mismatched pairs take a share w of the "fake" side, so the
        # negatives never outweigh the positives (a heavier fake side pulls a D that cannot
        # yet tell real from fake towards a constant negative output with dead features).
        w = config.mismatch_weight
        loss_D = loss_real + (1 - w) * loss_fake
        loss_mismatch = torch.zeros((), device=device)
        if w > 0:
            perm = torch.randperm(B, generator=rng, device=device)
            c_wrong = c[perm]
            differs = (c_wrong - c).abs().amax(dim=1) > 1e-6
            loss_mismatch = cgan.mismatch_loss(D.logits(h[:B], c_wrong), differs)
            loss_D = loss_D + w * loss_mismatch
    loss_D_adv = loss_D.detach()  # logged without R1, whose lazy steps would spike the curve
    r1_value = None
    if r1_now:
        with eager_if(nets.compiled):
            r1_term, r1_value = lazy_r1(D, real, c, config, rng, device)  # on the augmented real images, fp32
        loss_D = loss_D + r1_term
    grad_norm_D = update(D, nets.opt_D, nets.scaler_D, loss_D, session.accelerator, config.grad_clip)
    return {"c": c, "fake": fake, "loss_D": loss_D, "loss_D_adv": loss_D_adv, "loss_real": loss_real,
            "loss_fake": loss_fake, "loss_mismatch": loss_mismatch, "real_logits": real_logits,
            "fake_logits": fake_logits, "grad_norm_D": grad_norm_D, "r1": r1_value}


COMPILE_BACKEND = "inductor"  # the tests use "aot_eager": the same graphs without a C++ build


def compile_networks(G: torch.nn.Module, D: torch.nn.Module, device: torch.device | str = "cpu",
                     optimizers: tuple[torch.optim.Optimizer, ...] = ()) -> bool:
    """``torch.compile`` G and D's image path (:meth:`~dishgen.models.cgan.Discriminator.features`), in place.

    The graphs fuse batch-norm, ReLU, the residual adds and the folded up/down-sampling kernels
    around the convolutions, which stay oneDNN's (cuDNN's). Shapes are static: a run's batch size
    does not change. The parameters are stored in the default (contiguous) layout; their values,
    the state dicts and checkpoints are unchanged. Steps that need a double backward (R1) must run
    inside :func:`eager_if`.

    Args:
        G: the generator being trained.
        D: the discriminator being trained.
        device: where they train (a tiny function is compiled there first, to find out whether
            compiling works at all: a C++ compiler on the CPU, Triton on CUDA).
        optimizers: optimizers of G's and D's parameters whose state must follow the parameters'
            new layout (the fused Adam kernel computes wrong updates when the two differ).

    Returns:
        True if compiled; False, after a warning naming the reason, where torch cannot compile
        here (training then runs eagerly, with the same results).
    """
    if not hasattr(torch.compiler, "set_stance"):  # torch < 2.6: R1 steps could not run eagerly
        logger.warning("compile=true needs torch 2.6 or newer (this is %s); training runs eagerly", torch.__version__)
        return False
    try:
        probe = torch.compile(_compile_probe, backend=COMPILE_BACKEND, dynamic=False)
        probe(torch.ones(8, device=device))
    except Exception as err:  # no C++ compiler, no Triton, an unsupported Python: anything that stops a build
        inner = getattr(err, "inner_exception", None) or err  # dynamo wraps a backend's own error
        reason = f"{type(inner).__name__}: {(str(inner).strip().splitlines() or [''])[0][:300]}"
        logger.warning("compile=true: torch.compile does not work on this machine (%s); training runs eagerly "
                       "(install a C++ compiler such as gcc, or set compile=false to silence this)", reason)
        return False
    # Parameters go back to the default layout (inductor picks the activations' layout itself): fused
    # Adam and the gradient accumulation copied every channels-last weight each step (1.4 % of a step).
    for net in (G, D):
        net.to(memory_format=torch.contiguous_format)
    for optimizer in optimizers:
        match_param_layout(optimizer)
    G.compile(backend=COMPILE_BACKEND, dynamic=False)
    D.features = torch.compile(D.features, backend=COMPILE_BACKEND, dynamic=False)
    return True


def _compile_probe(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x) * 2 + 1


def eager_if(condition: bool):
    """A context in which compiled functions run eagerly when ``condition`` holds (else nothing)."""
    import contextlib

    return torch.compiler.set_stance("force_eager") if condition else contextlib.nullcontext()


PLOT_GROUPS = {
    "losses": ["loss_D", "loss_G", "loss_D_real", "loss_D_fake", "loss_D_mismatch"],
    "logits": ["logits_real", "logits_fake"],
    "grad_norms": ["grad_norm_D", "grad_norm_G"],
    "r1": ["r1"],
    "throughput": ["images_per_s"],
}


def _check_resumable(folder: Path, model_config: cgan.CGANConfig, encoder_info: dict) -> None:
    """A clear error when ``--resume`` is asked with another network shape or text encoder."""
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if saved["text_encoder"]["id"] != encoder_info["id"]:
        raise DishgenError(f"{folder} was trained with text_encoder={saved['text_encoder']['id']!r}, "
                           f"not {encoder_info['id']!r}; resume with the same encoder or start a new run")
    now = config_to_dict(model_config)
    was = {**config_to_dict(cgan.CGANConfig()), **saved["model"]}  # fields added later: their defaults
    changed = [f"{k}={was.get(k)!r} (now {v!r})" for k, v in now.items() if was.get(k) != v]
    if changed:
        raise DishgenError(f"{folder} holds a network with {', '.join(changed)}; resume with the same shape")


def _meta(model_config, encoder_info, kind, step, config):
    from dishgen.exports import cgan_metadata as model_metadata

    return model_metadata(model_config, encoder_info, kind=kind, step=step, train_config=config_to_dict(config))
