"""Train the conditional VAE: one linear story, config -> data -> model -> loop -> export.

    dishgen train cvae --data DATASET --out RUN --preset cpu
    dishgen train cvae --data DATASET --out RUN --resume

The run directory gets the resolved config, ``log.jsonl`` (step, recon = mean per-pixel error,
kl = nats per image, total = the minimised loss per pixel, active_units, images_per_s, lr,
grad_norm; and once per epoch val_recon / train_eval_recon / val_kl on the test split), loss
curves in ``plots/``, reconstruction grids (original | reconstruction) and generation grids for
fixed prompts in ``samples/``, ``checkpoint-<step>/`` folders with every state needed to resume
bit-exactly, and the final ``model/`` export.

Exact resume: the data order of epoch ``e`` is a permutation seeded by ``(seed, e)`` and the
augmentation and reparameterisation noise of step ``s`` come from a generator seeded by
``(seed, s, rank)``, so a resumed run draws exactly what an uninterrupted one would.
It runs under ``accelerate launch`` / ``torchrun`` too: each process takes its share of every
global batch (``batch_size`` is per process) and only the main process writes files.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from dishgen.config import MAX_SEED, MINUTES, checked, validate_config
from dishgen.models.cvae import RESOLUTIONS, CVAEModelConfig
from dishgen.train.common import TRACKERS
from dishgen.train.cvae_objective import (  # noqa: F401  (perceptual_distance: importable from here, as before)
    CVAETrainingError,
    cvae_loss,
    kl_weight_at,
    load_perceptual_backbone,
    lr_factor,
    perceptual_distance,
)
from dishgen.train.cvae_run import CVAEOutputs, CVAERun, start_run

logger = logging.getLogger(__name__)

DEFAULT_PROMPTS = [
    "A photo of sarma, cabbage rolls stuffed with minced meat and rice, on a white plate.",
    "A photo of ćevapi-style grilled minced-meat rolls, served on a wooden board.",
    "A photo of baklava, layered filo pastry with nuts soaked in syrup, in a close-up food photograph.",
    "A photo of assorted salad, plated as a home-cooked meal.",
]


@dataclass
class CVAETrainConfig:
    """Everything a cvae run needs; saved as the run's ``config.json``.

    Attributes are grouped as model, text, objective, optimisation, augmentation and bookkeeping.
    ``text_encoder`` is ``minilm`` (default, offline), ``clip:<hub id or folder>`` or ``lstm``
    (a word tokenizer + bidirectional LSTM trained with the model).
    """

    # model
    resolution: int = checked(64, choices=RESOLUTIONS)
    z_dim: int = checked(128, min=1)
    base_channels: int = checked(32, min=1)
    max_channels: int = checked(256, min=1)
    cond_dim: int = checked(256, min=1)
    res_blocks: int = checked(1, min=0)
    res_block_resolution: int = checked(16, min=0)
    # text
    text_encoder: str = checked("minilm", non_empty=True)
    lstm_embed_dim: int = checked(128, min=1)
    lstm_hidden_dim: int = checked(128, min=1)
    lstm_out_dim: int = checked(256, min=1)
    lstm_max_length: int = checked(32, min=1)
    lstm_min_freq: int = checked(1, min=1)
    # objective: recon + kl_weight * KL (+ perceptual_weight * feature distance)
    recon_loss: Literal["mse", "l1"] = "mse"
    beta: float = checked(1.0, min=0)
    kl_warmup_epochs: float = checked(10.0, min=0)
    free_bits: float = checked(0.0, min=0)
    perceptual_weight: float = checked(0.0, min=0)
    perceptual_backbone: str = checked("vgg16", choices=("vgg16",))
    # optimisation
    batch_size: int = checked(32, min=1)
    max_steps: int = checked(3000, min=1)
    lr: float = checked(2e-4, min=0, min_open=True)
    weight_decay: float = checked(1e-5, min=0)
    adam_beta1: float = checked(0.9, min=0, max=1, max_open=True)
    adam_beta2: float = checked(0.999, min=0, max=1, max_open=True)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    lr_warmup_steps: int = checked(100, min=0)
    min_lr_ratio: float = checked(0.1, min=0, max=1)
    grad_clip: float = checked(1.0, min=0, text="at least 0 (0 turns clipping off)")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    channels_last: bool = True
    # augmentation, applied to training images only
    augment: bool = True
    hflip: bool = True
    translate: float = checked(0.0625, min=0, max=0.5)
    # bookkeeping
    seed: int = checked(0, min=0, max=MAX_SEED)
    log_every: int = checked(10, min=1)
    log_with: str = checked("none", choices=TRACKERS)  # also log the scalars to tensorboard or wandb
    validate_every_epochs: int = checked(1, min=1)
    sample_every: int = checked(500, min=1)
    checkpoint_every: int = checked(500, min=1)
    keep_checkpoints: int = checked(3, min=0, text="at least 0 (0 keeps all)")
    # wall-clock limit per invocation: checkpoint, export and stop; 0 = none
    max_minutes: float = checked(0.0, min=0, text=MINUTES)
    # also checkpoint after this much time; 0 = off
    checkpoint_every_minutes: float = checked(30.0, min=0, text=MINUTES)
    sample_prompts: list[str] = checked(default_factory=lambda: list(DEFAULT_PROMPTS), non_empty=True)
    samples_per_prompt: int = checked(6, min=1)
    num_recon_images: int = checked(8, min=1)


    def model_config(self, c_dim: int) -> CVAEModelConfig:
        """The network shape (saved under ``"model"`` in every model folder) for ``c_dim``-d caption vectors."""
        return CVAEModelConfig(resolution=self.resolution, z_dim=self.z_dim, c_dim=c_dim, cond_dim=self.cond_dim,
                               base_channels=self.base_channels, max_channels=self.max_channels,
                               res_blocks=self.res_blocks, res_block_resolution=self.res_block_resolution)


# The old name of CVAETrainConfig (it was always the training config; the network's is CVAEModelConfig).
# Kept for imports until dishgen 0.2.0.
CVAEConfig = CVAETrainConfig


PRESETS: dict[str, dict[str, Any]] = {
    # The original project's setting: 64 px, latent 128, beta 0.5 warmed up over 10 epochs,
    # AdamW lr 2e-4 / wd 1e-5, batch 64, CLIP ViT-B/32 text vectors (512-d).
    "paper": {
        "resolution": 64, "z_dim": 128, "beta": 0.5, "kl_warmup_epochs": 10, "lr": 2e-4,
        "weight_decay": 1e-5, "batch_size": 64, "text_encoder": "clip:openai/clip-vit-base-patch32",
        "lr_schedule": "constant", "lr_warmup_steps": 0, "max_steps": 5000,
    },
    # Trains a useful 64 px model on the full FFML set in well under an hour on 2 CPU cores.
    "cpu": {
        "resolution": 64, "z_dim": 128, "base_channels": 32, "res_blocks": 1, "res_block_resolution": 8,
        "text_encoder": "minilm", "beta": 0.2, "kl_warmup_epochs": 10, "free_bits": 0.0,
        "batch_size": 32, "max_steps": 4000, "lr": 1e-3, "lr_schedule": "cosine", "lr_warmup_steps": 200,
        "weight_decay": 1e-5, "grad_clip": 1.0, "sample_every": 500, "checkpoint_every": 500,
    },
}


# -- per-step random streams and augmentation (the objective and schedules: cvae_objective.py) -----


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The random stream of one step on one process, a function of (seed, step, rank) only."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of the training images in ``epoch``."""
    state = np.random.SeedSequence([seed, epoch, 7]).generate_state(2, dtype=np.uint32)
    return torch.randperm(num_items, generator=torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1])))


def augment(x: torch.Tensor, generator: torch.Generator, *, hflip: bool, translate: float) -> torch.Tensor:
    """Random horizontal flips and small shifts (edge pixels repeated) of a (B, 3, H, W) batch."""
    b, _, h, w = x.shape
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = int(round(translate * h))
    if pad > 0:
        shifts = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        x = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(shifts.tolist())])
    return x


# -- the training script ------------------------------------------------------------------------


def train(config: CVAETrainConfig, data: str | Path, out: str | Path, *, resume: bool = False,
          device: str | None = None) -> Path:
    """Train a conditional VAE.

    Args:
        config: the resolved config.
        data: dataset folder (imagefolder with ``train/`` and ``test/``).
        out: run directory to create, or to continue with ``resume``.
        resume: continue from the run directory's latest checkpoint.
        device: ``cpu`` (default), ``cuda``, ``auto``.

    Returns:
        The exported model folder (``RUN/model``).
    """
    from dishgen.train.common import run_lock

    validate_config(config)  # before anything is loaded or written
    with run_lock(out):  # one writer per run directory (rank 0 under a launcher)
        return _train(config, data, out, resume=resume, device=device)


def _train(config, data, out, *, resume: bool, device: str | None) -> Path:
    session = start_run(config, out, resume, device)
    split = _load_data(config, data, session.is_main, session.run.path)
    checkpoint = session.run.checkpoint_path(session.start_step) if session.start_step else None
    text = _encode_captions(config, data, split, checkpoint)  # token ids (LSTM) or frozen caption vectors
    model, optimizer, scheduler = _build_model(config, text, checkpoint, session)
    perceptual = load_perceptual_backbone(config.perceptual_backbone) if config.perceptual_weight > 0 else None
    if config.channels_last:  # ~15% faster convolutions on CPU (oneDNN), same values
        model.to(memory_format=torch.channels_last)
    # The scheduler is stepped by hand once per step (accelerate would step it once per process).
    model, optimizer = session.accelerator.prepare(model, optimizer)
    if perceptual is not None:
        perceptual.to(session.accelerator.device)
    outputs = CVAEOutputs(config, session, model, optimizer, scheduler, split, text, data, out, device)

    model.train()
    step = session.start_step
    with outputs.control:
        while step < config.max_steps:
            tic = time.perf_counter()
            metrics, grad_norm, kl_weight = _train_step(step, config, session, model, optimizer, scheduler, split,
                                                        text, perceptual, outputs)
            step += 1
            outputs.window_add(metrics, grad_norm, time.perf_counter() - tic, step)
            if outputs.after_step(step, kl_weight):  # log, validation, grids, checkpoint; True: stop
                break
    return outputs.export(step)


@dataclass
class _Split:
    """Every image decoded once and kept in memory as uint8, with its caption."""

    train_images: torch.Tensor  # (N, 3, R, R) uint8
    test_images: torch.Tensor  # (M, 3, R, R) uint8; M = 0 without a test split
    train_captions: list[str]
    test_captions: list[str]

    @property
    def has_test(self) -> bool:
        return bool(self.test_captions)


def _load_data(config, data, is_main: bool, run_dir) -> _Split:
    from dishgen.data.dataset import list_splits, load_split
    from dishgen.images_tensor import check_readable, load_images_uint8_skipping, record_skipped

    train_rows = load_split(data, "train", require_files=False)
    test_rows = load_split(data, "test", require_files=False) if "test" in list_splits(data) else []
    if not test_rows and is_main:
        logger.warning("dataset %s has no test split: held-out validation is skipped", data)
    # One unreadable image is skipped with its reason (RUN/skipped-images.jsonl), not fatal.
    train, train_kept, train_skipped = load_images_uint8_skipping([r.path for r in train_rows], config.resolution)
    test, test_kept, test_skipped = load_images_uint8_skipping([r.path for r in test_rows], config.resolution)
    check_readable(train_kept, train_skipped)
    if is_main:
        skipped = [dict(s, split="train") for s in train_skipped] + [dict(s, split="test") for s in test_skipped]
        record_skipped(skipped, len(train_rows) + len(test_rows), run_dir, what="images (train and test)")
    return _Split(train, test, [train_rows[i].text for i in train_kept], [test_rows[i].text for i in test_kept])


@dataclass
class _Text:
    """The model's ``text`` inputs, computed once: token ids (LSTM) or frozen-encoder caption vectors."""

    train: torch.Tensor  # (N, T) or (N, c_dim)
    test: torch.Tensor | None
    prompts: torch.Tensor  # the sample grids' captions
    c_dim: int
    lstm: Any = None  # (LSTMConfig, WordTokenizer) when the model trains its own LSTM


def _encode_captions(config, data, split: _Split, checkpoint: Path | None) -> _Text:
    """A frozen encoder's vectors (cached per dataset), or LSTM token ids (the vocabulary is built
    from the training captions, or read back from the checkpoint on resume)."""
    if config.text_encoder == "lstm":
        from dishgen.text.lstm import LSTMConfig, WordTokenizer

        if checkpoint is not None:
            try:
                tokenizer = WordTokenizer.load(checkpoint)
            except ValueError as err:
                raise CVAETrainingError(f"cannot resume: {err}") from err
        else:
            tokenizer = WordTokenizer.build(split.train_captions, min_freq=config.lstm_min_freq)
        lstm_config = LSTMConfig(vocab_size=len(tokenizer), embed_dim=config.lstm_embed_dim,
                                 hidden_dim=config.lstm_hidden_dim, out_dim=config.lstm_out_dim,
                                 max_length=config.lstm_max_length)
        c_dim, lstm = lstm_config.out_dim, (lstm_config, tokenizer)

        def text_inputs(captions: list[str]) -> torch.Tensor:
            return tokenizer.encode(captions, config.lstm_max_length)  # (B, T) ids, padded per call
    else:
        from dishgen.text import load_text_encoder
        from dishgen.text.cache import encode_cached

        encoder = load_text_encoder(config.text_encoder)
        c_dim, lstm = encoder.dim, None
        cache_dir = Path(data) / ".cache"
        if not os.access(Path(data), os.W_OK):
            logger.warning("dataset %s is read-only: caption vectors are not cached", data)
            cache_dir = None

        def text_inputs(captions: list[str]) -> torch.Tensor:
            return encode_cached(encoder, captions, cache_dir)  # (B, c_dim)
    # LSTM ids are padded to the longest caption of the whole split, so any batch can be indexed.
    return _Text(text_inputs(split.train_captions), text_inputs(split.test_captions) if split.has_test else None,
                 text_inputs(list(config.sample_prompts)), c_dim, lstm)


def _build_model(config, text: _Text, checkpoint: Path | None, session: CVAERun):
    """The seeded CVAE (with its LSTM), AdamW and the LR schedule, restored from ``checkpoint`` on resume."""
    from dishgen.models.cvae import CVAE
    from dishgen.train.cvae_checkpoint import load_checkpoint

    torch.manual_seed(config.seed)  # the initial weights depend on the seed only
    text_model = None
    if text.lstm is not None:
        from dishgen.text.lstm import LSTMTextEncoder

        text_model = LSTMTextEncoder(*text.lstm)
    model = CVAE(config.model_config(text.c_dim), text_model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(config.adam_beta1, config.adam_beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
        step, warmup_steps=config.lr_warmup_steps, max_steps=config.max_steps,
        schedule=config.lr_schedule, min_ratio=config.min_lr_ratio))
    if checkpoint is not None:
        try:
            load_checkpoint(checkpoint, model, optimizer, scheduler)
        except Exception as err:  # unreadable file, or a config that no longer matches the weights
            raise CVAETrainingError(
                f"cannot resume from {checkpoint}: {err}. Resume with the config it was trained with, "
                "or remove that checkpoint folder to resume from the one before it"
            ) from err
        if session.is_main:
            logger.info("resumed from %s", checkpoint)
    return model, optimizer, scheduler


def _train_step(step: int, config, session: CVAERun, model, optimizer, scheduler, split: _Split, text: _Text,
                perceptual, outputs: CVAEOutputs):
    """One update on this rank's share of the global batch. The data order and every random draw
    (augmentation, reparameterisation noise) are functions of (seed, step, rank).

    Returns:
        ``(metrics, grad_norm, kl_weight)``: [recon per pixel, kl per image, total, active units]
        averaged over processes, the gradient norm before clipping, and the step's KL weight.
    """
    from dishgen.models.cvae import active_units
    from dishgen.train.common import check_finite

    accelerator, world = session.accelerator, session.world
    global_batch = config.batch_size * world
    epoch, index = divmod(step, outputs.steps_per_epoch)
    order = epoch_order(len(split.train_images), config.seed, epoch)
    batch = order[index * global_batch : (index + 1) * global_batch][session.rank::world]
    generator = step_generator(config.seed, step, session.rank)
    x = split.train_images[batch].float() / 127.5 - 1  # (B, 3, R, R) in [-1, 1]
    if config.augment:
        x = augment(x, generator, hflip=config.hflip, translate=config.translate)
    eps = torch.randn(len(batch), config.z_dim, generator=generator)
    x, text_in, eps = outputs.to_device(x), outputs.to_device(text.train[batch]), outputs.to_device(eps)

    with accelerator.autocast():
        x_hat, mu, logvar = model(x, text_in, eps)
        kl_weight = kl_weight_at(step, config.beta, outputs.kl_warmup_steps)
        loss, recon, kl = cvae_loss(x, x_hat, mu, logvar, recon_loss=config.recon_loss, kl_weight=kl_weight,
                                    free_bits=config.free_bits, num_pixels=outputs.num_pixels, perceptual=perceptual,
                                    perceptual_weight=config.perceptual_weight)
    # Averaged over processes before the update, so a NaN on any one stops them all together.
    metrics = torch.tensor([recon.item() / outputs.num_pixels, kl.sum(1).mean().item(), loss.item(),
                            active_units(mu.detach())], device=accelerator.device)
    metrics = accelerator.reduce(metrics, reduction="mean").tolist()
    check_finite(step + 1, {"total": metrics[2]}, session.run)
    accelerator.backward(loss)
    if config.grad_clip > 0:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack(
            [p.grad.norm() for p in model.parameters() if p.grad is not None]))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return metrics, grad_norm, kl_weight
