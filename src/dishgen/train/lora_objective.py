"""The LoRA trainer's objective, as pure functions over tensors: noising the latents, the target the
UNet learns to predict, and the per-sample loss with min-SNR weighting.
"""

from __future__ import annotations

import torch


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


def add_noise(latents: torch.Tensor, noise_scheduler, noise_offset: float):
    """Draw noise (with the offset) and a timestep per sample, and noise the latents (forward process).

    Returns:
        ``(noise, timesteps, noisy_latents)``: (B, C, h, w), (B,) and (B, C, h, w).
    """
    noise = offset_noise(torch.randn_like(latents), noise_offset)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              device=latents.device)
    return noise, timesteps, noise_scheduler.add_noise(latents, noise, timesteps)


def denoising_target(noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                     prediction_type: str) -> torch.Tensor:
    """What the UNet learns to predict: the noise (epsilon) or the velocity (v-prediction)."""
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    return noise


def denoising_loss(pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, noise_scheduler, *,
                   snr_gamma: float | None, prediction_type: str) -> torch.Tensor:
    """Mean squared error per sample, in fp32, weighted by min-SNR-gamma when ``snr_gamma`` is set; the batch mean."""
    from diffusers.training_utils import compute_snr

    per_sample = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
    per_sample = per_sample.mean(dim=(1, 2, 3))  # (B,)
    if snr_gamma:
        weights = min_snr_weights(compute_snr(noise_scheduler, timesteps), snr_gamma, prediction_type)
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()
