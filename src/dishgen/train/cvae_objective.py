"""The cVAE's objective and schedules, beside its training loop: pure functions of tensors and
steps (the loss, the KL and learning-rate schedules, the optional perceptual term).
"""

from __future__ import annotations

import math

import torch

from dishgen.errors import DishgenError
from dishgen.models import cvae as cvae_model  # looked up per call (tests replace its functions)


class CVAETrainingError(DishgenError):
    """A cvae run that cannot start (bad dataset, missing backbone, unusable text encoder)."""


def cvae_loss(x: torch.Tensor, x_hat: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *, recon_loss: str,
              kl_weight: float, free_bits: float, num_pixels: int, perceptual=None,
              perceptual_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The negative ELBO per image (plus the optional perceptual term), divided by the pixel count.

    Dividing by the pixel count keeps the same optimum but gives gradients of order 1 whatever the
    resolution, so ``lr`` and ``grad_clip`` carry over between resolutions.

    Returns:
        ``(loss, recon, kl)``: the scalar loss, the mean reconstruction error per image (summed
        over pixels) and the KL per latent unit, (B, z_dim).
    """
    recon = cvae_model.reconstruction_error(x, x_hat, recon_loss).mean()  # per image, summed over pixels
    kl = cvae_model.kl_divergence(mu, logvar)  # (B, z_dim)
    loss = recon + kl_weight * cvae_model.kl_penalty(kl, free_bits)
    if perceptual is not None:
        loss = loss + perceptual_weight * num_pixels * perceptual_distance(perceptual, x, x_hat).mean()
    return loss / num_pixels, recon, kl


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, schedule: str, min_ratio: float) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then constant or cosine to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def kl_weight_at(step: int, beta: float, warmup_steps: float) -> float:
    """KL annealing: the KL weight grows linearly from 0 to ``beta`` over ``warmup_steps``."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


def load_perceptual_backbone(name: str):
    """A frozen feature network for the perceptual term. ``vgg16``: torchvision's ImageNet VGG16 up to relu3_3."""
    if name != "vgg16":
        raise CVAETrainingError(f"unknown perceptual_backbone {name!r}; only vgg16 is supported")
    try:
        import torchvision
    except ImportError as err:
        raise CVAETrainingError(
            "perceptual_weight > 0 needs torchvision and the ImageNet VGG16 weights "
            "(pip install torchvision; the weights download once into the torch hub cache); "
            "or train without it: perceptual_weight=0"
        ) from err
    vgg = torchvision.models.vgg16(weights=torchvision.models.VGG16_Weights.IMAGENET1K_V1).features[:16]
    return vgg.eval().requires_grad_(False)


def perceptual_distance(features, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared distance between ``features`` of two [-1, 1] batches (ImageNet-normalised). (B,)"""
    mean = x.new_tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = x.new_tensor([0.229, 0.224, 0.225])[None, :, None, None]
    f_x = features(((x + 1) / 2 - mean) / std)
    f_hat = features(((x_hat + 1) / 2 - mean) / std)
    return (f_x - f_hat).pow(2).flatten(1).mean(1)
