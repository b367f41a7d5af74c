"""The cVAE trainer's frame around its step: starting the run (accelerator, run directory,
trackers) and everything the run measures and writes (log window, held-out validation,
reconstruction and generation grids for fixed inputs, checkpoints, plots, the final export).
The step itself stays in :mod:`dishgen.train.cvae`; losses and schedules are in
:mod:`dishgen.train.cvae_objective`, checkpoint files in :mod:`dishgen.train.cvae_checkpoint`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dishgen.config import config_to_dict


@dataclass
class CVAERun:
    """The accelerator, this process's place in it and the run directory."""

    accelerator: Any
    rank: int
    world: int
    is_main: bool
    run: Any  # RunDir
    config_dict: dict[str, Any]
    start_step: int  # 0 for a new run


def start_run(config, out, resume: bool, device: str | None) -> CVAERun:
    """Start the accelerator and prepare the run directory (rank 0); the step to resume from."""
    from accelerate import Accelerator

    from dishgen.devices import resolve_device
    from dishgen.train.common import RunDir, start_trackers, tracker_kwargs

    torch_device = resolve_device(device)
    accelerator = Accelerator(cpu=torch_device.type == "cpu", mixed_precision=config.mixed_precision,
                              **tracker_kwargs(config.log_with, out))
    is_main = accelerator.is_main_process
    run = RunDir(out, "cvae")
    config_dict = config_to_dict(config)
    if is_main:
        start_step = run.prepare(config_dict, resume=resume) or 0
    accelerator.wait_for_everyone()
    start_trackers(accelerator, run.family, config_dict)
    if not is_main:
        start_step = (run.latest_checkpoint() or 0) if resume else 0
    return CVAERun(accelerator, accelerator.process_index, accelerator.num_processes, is_main, run, config_dict,
                   start_step)


class CVAEOutputs:
    """What the run measures and writes: the log window, held-out validation, reconstruction and
    generation grids for fixed inputs, checkpoints, plots and the final export. Owns the progress
    bar and the stop control."""

    def __init__(self, config, session: CVAERun, model, optimizer, scheduler, split, text,
                 data, out, device):
        from dishgen.train.common import StopControl, progress_bar, resume_command

        self.config, self.session, self.model, self.optimizer, self.scheduler = config, session, model, optimizer, scheduler
        self.split, self.text, self.data = split, text, data
        self.unwrapped = session.accelerator.unwrap_model(model)
        num_train = len(split.train_images)
        self.global_batch = config.batch_size * session.world
        self.steps_per_epoch = max(1, num_train // self.global_batch)
        self.kl_warmup_steps = config.kl_warmup_epochs * self.steps_per_epoch
        self.num_pixels = 3 * config.resolution**2

        # Fixed inputs for the grids, the same at every step and after a resume.
        recon_source = split.test_images if len(split.test_images) else split.train_images
        recon_text = text.test if len(split.test_images) else text.train
        self.recon_x = recon_source[: config.num_recon_images].float() / 127.5 - 1
        self.recon_t = recon_text[: config.num_recon_images]
        self.sample_text = text.prompts.repeat_interleave(config.samples_per_prompt, dim=0)
        eval_subset = torch.randperm(num_train, generator=torch.Generator().manual_seed(config.seed))
        self.eval_subset = eval_subset[: min(len(split.test_images), num_train)]
        self.sample_z = torch.randn(len(self.sample_text), config.z_dim,
                                    generator=torch.Generator().manual_seed(config.seed))

        self.window: dict[str, float] = {}
        self.window_steps, self.window_time = 0, 0.0
        self.progress = progress_bar("cvae", step=session.start_step, max_steps=config.max_steps,
                                     images_per_step=self.global_batch, enabled=session.is_main)
        self.control = StopControl(session.accelerator, max_minutes=config.max_minutes,
                                   checkpoint_every_minutes=config.checkpoint_every_minutes,
                                   resume_command=resume_command("cvae", data, out, device))

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last and t.ndim == 4:
            return t.to(self.session.accelerator.device, memory_format=torch.channels_last)
        return t.to(self.session.accelerator.device)

    def window_add(self, metrics: list[float], grad_norm, seconds: float, step: int) -> None:
        """Add a step's metrics to the log window (``seconds``: the step alone, for images/s)."""
        for key, value in zip(("recon", "kl", "total", "active_units", "grad_norm"),
                              [*metrics, float(grad_norm)], strict=True):
            self.window[key] = self.window.get(key, 0.0) + value
        self.window_steps += 1
        self.window_time += seconds
        self.progress.update(self.global_batch)
        self.progress.set_postfix({"step": step, "recon": f"{metrics[0]:.4f}", "kl": f"{metrics[1]:.1f}"},
                                  refresh=False)

    def after_step(self, step: int, kl_weight: float) -> bool:
        """Log, validate (every ``validate_every_epochs``), grids, checkpoint, stop requests; True: stop."""
        from dishgen.train.common import log_to_trackers

        config, session = self.config, self.session
        epoch = round(step / self.steps_per_epoch, 3)
        if step % config.log_every == 0 or step == config.max_steps:
            row = {"step": step, "epoch": epoch, **{k: v / self.window_steps for k, v in self.window.items()},
                   "kl_weight": kl_weight, "lr": self.scheduler.get_last_lr()[0],
                   "images_per_s": self.window_steps * self.global_batch / self.window_time}
            if session.is_main:
                session.run.log(row)
                log_to_trackers(session.accelerator, row)
            self.window, self.window_steps, self.window_time = {}, 0, 0.0
        if step % (self.steps_per_epoch * config.validate_every_epochs) == 0 and self.split.has_test and session.is_main:
            val = self.evaluate(self.split.test_images, self.text.test)
            subset = self.eval_subset  # as many training images as test images, no augmentation
            train_eval = self.evaluate(self.split.train_images[subset], self.text.train[subset])
            row = {"step": step, "epoch": epoch, "val_recon": val["recon"], "val_kl": val["kl"],
                   "val_active_units": val["active_units"], "train_eval_recon": train_eval["recon"]}
            session.run.log(row)
            log_to_trackers(session.accelerator, row)
        if session.is_main and (step % config.sample_every == 0 or step == config.max_steps):
            self.write_grids(step)
        return self.control.end_of_step(step, config, self.write_checkpoint)

    @torch.no_grad()
    def evaluate(self, images_u8: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
        """Mean per-pixel reconstruction error (posterior mean), KL and active units over a split."""
        from dishgen.models.cvae import active_units, kl_divergence, reconstruction_error

        model, unwrapped = self.model, self.unwrapped
        model.eval()
        errors, kls, mus = [], [], []
        for start in range(0, len(images_u8), 64):
            x = self.to_device(images_u8[start : start + 64].float() / 127.5 - 1)
            with self.session.accelerator.autocast():
                cond = unwrapped.condition(self.to_device(text[start : start + 64]))
                mu, logvar = unwrapped.encoder(x, cond)
                x_hat = unwrapped.decoder(mu, cond)
            errors.append(reconstruction_error(x, x_hat, self.config.recon_loss) / self.num_pixels)
            kls.append(kl_divergence(mu, logvar).sum(1))
            mus.append(mu.float())
        model.train()
        return {"recon": float(torch.cat(errors).mean()), "kl": float(torch.cat(kls).mean()),
                "active_units": active_units(torch.cat(mus))}

    @torch.no_grad()
    def write_grids(self, step: int) -> None:
        """Reconstructions (original | reconstruction) and samples for the fixed prompts and noise."""
        from dishgen.train.common import save_image_grid

        config, unwrapped, samples_dir = self.config, self.unwrapped, self.session.run.path / "samples"
        self.model.eval()
        recon = unwrapped.reconstruct(self.to_device(self.recon_x), self.to_device(self.recon_t)).float().cpu()
        pairs = torch.stack([self.recon_x, recon], dim=1).flatten(0, 1)  # original, reconstruction, ...
        save_image_grid(pairs, samples_dir / f"recon-{step:06d}.png", nrow=8)
        with self.session.accelerator.autocast():
            cond = unwrapped.condition(self.to_device(self.sample_text))
            samples = unwrapped.decoder(self.to_device(self.sample_z), cond).clamp(-1, 1).float().cpu()
        save_image_grid(samples, samples_dir / f"step-{step:06d}.png", nrow=config.samples_per_prompt,
                        labels=list(config.sample_prompts))
        self.model.train()

    def write_checkpoint(self, step: int) -> None:
        """Called on every process: rank 0 writes, all note the time (for checkpoint_every_minutes)."""
        from dishgen.train.cvae_checkpoint import save_checkpoint

        self.control.saved(step)
        if not self.session.is_main:
            return

        def writer(folder: Path) -> None:
            save_checkpoint(folder, self.unwrapped, self.optimizer, self.scheduler, step=step,
                            epoch=step / self.steps_per_epoch, text_encoder_id=self.config.text_encoder,
                            training=self.session.config_dict)
        self.session.run.write_checkpoint(step, writer, keep=self.config.keep_checkpoints)
        self.plot()

    def plot(self) -> None:
        from dishgen.train.common import plot_log

        run = self.session.run
        plot_log(run.read_log(), run.path / "plots", {
            "reconstruction": ["recon", "train_eval_recon", "val_recon"],
            "kl": ["kl", "val_kl"], "total": ["total"], "active_units": ["active_units", "val_active_units"],
            "lr": ["lr"], "grad_norm": ["grad_norm"], "images_per_s": ["images_per_s"]})

    def export(self, step: int) -> Path:
        """After the loop: raise if interrupted, else ``RUN/model`` with its held-out metrics."""
        from dishgen.exports import save_cvae_model
        from dishgen.fileio import atomic_directory, atomic_write_json

        session, split, text = self.session, self.split, self.text
        self.progress.close()
        self.control.finish(step, session.run.checkpoint_path(step))  # after Ctrl-C: raises, no export
        export = session.run.path / "model"
        if session.is_main:
            if split.has_test:
                val, train_eval = self.evaluate(split.test_images, text.test), self.evaluate(split.train_images, text.train)
            # reconstruction error per pixel (posterior mean) on the train and held-out test splits
            metrics = ({"step": step, "train": train_eval, "test": val, "model": asdict(self.unwrapped.config)}
                       if split.has_test else None)
            with atomic_directory(export) as tmp:
                save_cvae_model(tmp, self.unwrapped, text_encoder_id=self.config.text_encoder,
                                training=session.config_dict, run_dir=session.run.path, data=self.data,
                                evaluation=metrics, step=step)
                if metrics:
                    atomic_write_json(tmp / "metrics.json", metrics)
            self.plot()
        session.accelerator.wait_for_everyone()
        session.accelerator.end_training()
        return export
