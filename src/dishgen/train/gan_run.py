"""What the GAN trainers (cGAN, FastGAN) share around their training step, written once.

A GAN trainer's story: :func:`start_run` (accelerator, device, run directory, trackers) ->
:func:`load_data` (images in memory as uint8, cached caption embeddings) -> :func:`build_networks`
(G, D, G_ema, optimizers, one gradient scaler per network) -> :func:`resume` -> the loop (the
family's own step, then :meth:`GanOutputs.after_step`: log, samples, checkpoint, stop) ->
:meth:`GanOutputs.export`. The step itself (the objective) stays in each family's trainer; the
random streams and gradient plumbing of a step are in :mod:`dishgen.train.gan_steps`, the
checkpoint files in :mod:`dishgen.train.gan_checkpoint`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dishgen.config import config_to_dict
from dishgen.errors import DishgenError
from dishgen.train.common import (
    RunDir,
    StopControl,
    log_to_trackers,
    plot_log,
    progress_bar,
    resume_command,
    save_image_grid,
    start_trackers,
    tracker_kwargs,
)
from dishgen.train.gan_checkpoint import CheckpointWriteError, load_checkpoint, save_checkpoint
from dishgen.train.gan_steps import adam, check_in_sync

logger = logging.getLogger(__name__)


@dataclass
class GanRun:
    """Where a run happens: the accelerator, this process's device and rank, the run directory."""

    accelerator: Any
    device: torch.device
    device_arg: str | None  # as the user gave it, for the resume command
    rank: int
    world: int
    run: RunDir
    start_step: int | None  # the checkpoint to resume from

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


def start_run(config, out: str | Path, *, family: str, resume: bool, device: str | None) -> GanRun:
    """Start the accelerator (one device per process under a launcher) and prepare the run directory."""
    from accelerate import Accelerator

    from dishgen.devices import resolve_device

    asked = resolve_device(device)
    accelerator = Accelerator(cpu=asked.type == "cpu", **tracker_kwargs(config.log_with, out))
    torch_device = accelerator.device if accelerator.num_processes > 1 else asked
    if config.mixed_precision == "fp16" and torch_device.type != "cuda":
        raise DishgenError("mixed_precision=fp16 needs a CUDA device; use mixed_precision=bf16 or no on the CPU")
    run = RunDir(out, family)
    if accelerator.is_main_process:
        run.prepare(config_to_dict(config), resume=resume)
    accelerator.wait_for_everyone()
    start_trackers(accelerator, family, config_to_dict(config))
    return GanRun(accelerator, torch_device, device, accelerator.process_index, accelerator.num_processes, run,
                  run.latest_checkpoint() if resume else None)


@dataclass
class GanData:
    """The training set in memory and the fixed inputs of the sample grids."""

    images: torch.Tensor  # (N, 3, R, R) uint8, on the device
    c_all: torch.Tensor  # (N, c_dim) caption embeddings, on the device
    prompts: list[str]  # the sample grids' captions
    sample_c: torch.Tensor  # (len(prompts) * sample_per_prompt, c_dim)
    encoder_info: dict[str, Any]  # {"id", "dim"} of the text encoder


def load_data(config, data: str | Path, session: GanRun, *,
              default_prompts: Callable[[list], list[str]]) -> GanData:
    """Decode the training images once and encode their captions (cached in ``DATASET/.cache``).

    Args:
        config: the training config (``text_encoder``, ``text_cache``, ``resolution``, sample prompts).
        data: the dataset folder.
        session: the run.
        default_prompts: test rows (or train rows without a test split) -> the sample captions,
            used when ``config.sample_prompts`` is empty.
    """
    from dishgen.caption_bank import CAPTION_BANK_FILE, CaptionBank
    from dishgen.data.dataset import DatasetError, exclude_dishes, load_split
    from dishgen.images_tensor import check_readable, load_images_uint8_skipping, record_skipped
    from dishgen.text import load_text_encoder
    from dishgen.text.cache import encode_cached

    rows, excluded = exclude_dishes(load_split(data, "train", require_files=False), getattr(config, "exclude", ""))
    if excluded and session.is_main:
        print(f"exclude={config.exclude!r} leaves out {len(excluded)} training images of "
              f"{len({r.dish for r in excluded})} dishes; {len(rows)} remain")
    if not rows:
        raise DatasetError(f"exclude={config.exclude!r} leaves no training image in {data}")
    # One unreadable image is skipped with its reason (RUN/skipped-images.jsonl), not fatal.
    images, kept, skipped = load_images_uint8_skipping([r.path for r in rows], config.resolution)
    check_readable(kept, skipped)
    if session.is_main:
        record_skipped(skipped, len(rows), session.run.path)
    rows = [rows[i] for i in kept]
    try:
        sample_rows = load_split(data, "test")
    except DatasetError:
        sample_rows = rows
    encoder = load_text_encoder(config.text_encoder)
    cache_dir = Path(data) / ".cache" if config.text_cache else None
    with session.accelerator.main_process_first():
        try:
            c_all = encode_cached(encoder, [r.text for r in rows], cache_dir)
        except OSError as err:  # a read-only dataset: encode in memory
            logger.warning("text cache in %s not writable (%s); encoding without a cache", cache_dir, err)
            c_all = encode_cached(encoder, [r.text for r in rows], None)
    images = images.to(session.device)
    prompts = list(config.sample_prompts) or default_prompts(sample_rows)
    sample_c = encoder.encode(prompts).to(session.device).repeat_interleave(config.sample_per_prompt, 0)
    if session.is_main:  # the captions it trains on, for anchoring unseen ones at generation (dishgen.caption_bank)
        CaptionBank.from_rows(rows, c_all).save(session.run.path / CAPTION_BANK_FILE)
    # The text model is not needed during training: only its vectors are kept.
    return GanData(images, c_all.to(session.device), prompts, sample_c, {"id": encoder.id, "dim": encoder.dim})


@dataclass
class GanNetworks:
    """G, D and the EMA generator with their optimizers and gradient scalers."""

    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    scaler_G: torch.amp.GradScaler
    scaler_D: torch.amp.GradScaler
    memory_format: torch.memory_format
    device_type: str
    amp_dtype: torch.dtype | None
    compiled: bool = False  # G and D's image path run through torch.compile (the cGAN's compile=true)

    def autocast(self):
        """Mixed precision as configured (a no-op context at ``mixed_precision=no``)."""
        return torch.autocast(self.device_type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    @property
    def state(self) -> tuple:
        """What a checkpoint holds, in :func:`~dishgen.train.gan_checkpoint.save_checkpoint`'s order."""
        return self.G, self.D, self.G_ema, self.opt_G, self.opt_D, self.scaler_G, self.scaler_D


def build_networks(config, make_G: Callable[[], torch.nn.Module], make_D: Callable[[], torch.nn.Module],
                   device: torch.device) -> GanNetworks:
    """Seeded initial weights (identical on every rank), an EMA copy of G, fused Adam, scalers for fp16."""
    torch.manual_seed(config.seed)
    G, D = make_G().to(device), make_D().to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    for net in (G, D, G_ema):
        net.to(memory_format=memory_format)
    opt_G = adam(G.parameters(), config.g_lr, config.g_betas)
    opt_D = adam(D.parameters(), config.d_lr, config.d_betas)
    use_scaler = config.mixed_precision == "fp16"
    scaler_G = torch.amp.GradScaler(device.type, enabled=use_scaler)
    scaler_D = torch.amp.GradScaler(device.type, enabled=use_scaler)
    amp_dtype = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.mixed_precision]
    return GanNetworks(G, D, G_ema, opt_G, opt_D, scaler_G, scaler_D, memory_format, device.type, amp_dtype)


def resume(session: GanRun, nets: GanNetworks, check_resumable: Callable[[Path], None]) -> int:
    """Restore the latest checkpoint when resuming (after ``check_resumable`` accepts it); the step to go on from."""
    if session.start_step is None:
        return 0
    folder = session.run.checkpoint_path(session.start_step)
    check_resumable(folder)
    step = load_checkpoint(folder, *nets.state)
    if session.is_main:
        print(f"resumed from {folder} at step {step}")
    return step


class LogWindow:
    """Sums of the logged values since the last ``log.jsonl`` row, and the time they took."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.tick = time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1

    def row(self, step: int, extra: dict[str, Any], images_per_step: int) -> dict[str, Any]:
        """The means since the last row, ``extra`` and images/s; starts a new window."""
        elapsed = time.perf_counter() - self.tick
        row = {"step": step, **{k: v / self.steps for k, v in self.sums.items()}, **extra,
               "images_per_s": self.steps * images_per_step / elapsed}
        self.sums, self.steps, self.tick = {}, 0, time.perf_counter()
        return row


class GanOutputs:
    """Everything a GAN run writes during and after the loop: log rows, sample grids, checkpoints, the export.

    Args:
        config: the training config.
        session: the run.
        nets: the networks.
        data: the dataset (its sample captions and embeddings).
        metadata: ``(kind, step) -> config.json`` of a checkpoint (``kind="checkpoint"``).
        plot_groups: plot name -> logged keys, drawn with every sample grid.
        images_per_step: real images D judges per step (for images/s and the progress bar).
        data_path: the dataset folder and ``out`` the run directory as given (for the resume command).
        step: the step the loop starts from.
        family: the family's name (progress bar, resume command).
        progress_postfix: logged values -> the progress bar's postfix.
    """

    def __init__(self, config, session: GanRun, nets: GanNetworks, data: GanData, *,
                 metadata: Callable[[str, int], dict], plot_groups: dict[str, list[str]], images_per_step: int,
                 data_path: str | Path, out: str | Path, step: int, family: str,
                 progress_postfix: Callable[[dict[str, float]], dict[str, str]]):
        self.config, self.session, self.nets, self.data = config, session, nets, data
        self.metadata, self.plot_groups, self.images_per_step = metadata, plot_groups, images_per_step
        self.progress_postfix = progress_postfix
        self.window = LogWindow()
        self.sample_z = torch.randn(len(data.sample_c), config.z_dim,
                                    generator=torch.Generator().manual_seed(config.seed)).to(session.device)
        self.progress = progress_bar(family, step=step, max_steps=config.max_steps, images_per_step=images_per_step,
                                     enabled=session.is_main)
        self.control = StopControl(session.accelerator, max_minutes=config.max_minutes,
                                   checkpoint_every_minutes=config.checkpoint_every_minutes,
                                   resume_command=resume_command(family, data_path, out, session.device_arg))

    def after_step(self, step: int, values: dict[str, float], extra: dict[str, Any]) -> bool:
        """Log (every ``log_every``), sample, checkpoint, and poll for a stop; True when the loop must end."""
        config, session = self.config, self.session
        self.window.add(values)
        self.progress.update(self.images_per_step)
        self.progress.set_postfix({"step": step, **self.progress_postfix(values)}, refresh=False)
        if step % config.log_every == 0 or step == config.max_steps:
            row = self.window.row(step, extra, self.images_per_step)
            if session.is_main:
                session.run.log(row)
                log_to_trackers(session.accelerator, row)
        if step % config.sample_every == 0:
            self.write_samples(step)
        return self.control.end_of_step(step, config, self.write_checkpoint)

    def write_checkpoint(self, step: int) -> None:
        """Called on every process: checks the ranks agree, then rank 0 writes ``checkpoint-<step>/``."""
        session = self.session
        check_in_sync(session.accelerator, step, self.nets.G, self.nets.D)
        self.control.saved(step)
        if not session.is_main:
            return
        meta = self.metadata("checkpoint", step)
        run = session.run
        try:
            run.write_checkpoint(step, lambda folder: save_checkpoint(folder, meta, *self.nets.state),
                                 keep=self.config.keep_checkpoints or None)
        except OSError as err:
            latest = run.latest_checkpoint()
            kept = f"{run.checkpoint_path(latest)} is intact" if latest is not None else "no earlier checkpoint exists"
            raise CheckpointWriteError(
                f"could not write checkpoint-{step} in {run.path} ({err.strerror or err}); {kept}. "
                "Free disk space, then --resume"
            ) from err

    def write_samples(self, step: int) -> None:
        """The EMA generator's grid for the fixed prompts and noise, and the plots (rank 0)."""
        if self.session.is_main:
            with torch.no_grad(), self.nets.autocast():
                pics = self.nets.G_ema(self.sample_z, self.data.sample_c).float()
            save_image_grid(pics, self.session.run.path / "samples" / f"step-{step:07d}.png",
                            nrow=self.config.sample_per_prompt, labels=self.data.prompts)
            plot_log(self.session.run.read_log(), self.session.run.path / "plots", self.plot_groups)

    def export(self, step: int, save: Callable[[Path], None]) -> Path:
        """After the loop: raise if interrupted, else the last checkpoint and grid, then ``save(RUN/model)``."""
        session = self.session
        self.progress.close()
        self.control.finish(step, session.run.checkpoint_path(step))  # after Ctrl-C: raises, no export
        if session.is_main:
            if session.run.latest_checkpoint() != step:
                self.write_checkpoint(step)
            if step % self.config.sample_every != 0 or session.start_step == step:
                self.write_samples(step)
            save(session.run.path / "model")
        session.accelerator.wait_for_everyone()
        session.accelerator.end_training()
        return session.run.path
