"""The text-conditional GAN: a ResNet generator with conditional batch-norm and a ResNet
projection discriminator with spectral normalisation, plus their losses.

Generator: ``z (B, z_dim)`` and a text embedding ``c (B, c_dim)`` -> image ``(B, 3, R, R)`` in
[-1, 1]. The text embedding goes through a small MLP to ``cond (B, cond_dim)``; every
conditional batch-norm takes its scale and shift from ``cond``. The image grows from 4x4 by
residual up-blocks to the target resolution R (64, 128 or 256).

Discriminator (Miyato & Koyama, 2018): residual down-blocks to 4x4, ReLU, sum-pooling to
features ``h (B, C)``, then ``logit = w . h + <embed(c), h>``. Every conv and linear layer is
spectrally normalised. Because the text enters only in the last projection, a mismatched
caption costs one dot product, not another pass: see :meth:`Discriminator.logits`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dishgen.models.layers import DownBlock, UpBlock, sn_linear


@dataclass
class CGANConfig:
    """Network shape, saved with every checkpoint and export.

    Attributes:
        resolution: output size R in pixels (a power of two, 16 to 512).
        z_dim: size of the noise vector.
        c_dim: size of the text embedding (set from the text encoder).
        cond_dim: size of the conditioning vector after the text MLP.
        base_channels: channels at full resolution; halving the resolution doubles them.
        max_channel_mult: cap on channels, as a multiple of ``base_channels``.
        d_extra_blocks: blocks D adds at 4x4 after its last downsampling block (no downsampling;
            the first widens to G's width at 4x4). The original project's D had one.
    """

    resolution: int = 64
    z_dim: int = 128
    c_dim: int = 384
    cond_dim: int = 128
    base_channels: int = 32
    max_channel_mult: int = 8
    d_extra_blocks: int = 0

    def validate(self) -> None:
        if self.resolution < 16 or self.resolution > 512 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution={self.resolution} must be a power of two from 16 to 512")
        for name in ("z_dim", "c_dim", "cond_dim", "base_channels", "max_channel_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.d_extra_blocks < 0:
            raise ValueError(f"d_extra_blocks={self.d_extra_blocks} must be 0 or more")

    def channels(self, size: int) -> int:
        """Feature channels at spatial ``size``: ``base * R / size``, capped."""
        return self.base_channels * min(self.resolution // size, self.max_channel_mult)

    @property
    def num_blocks(self) -> int:
        """Up-blocks from 4x4 to R (and down-blocks from R to 4x4)."""
        return int(math.log2(self.resolution)) - 2


class Generator(nn.Module):
    """ResNet generator with text-conditional batch-norm."""

    def __init__(self, config: CGANConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.z_dim, self.c_dim = config.z_dim, config.c_dim
        self.text_mlp = nn.Sequential(
            nn.Linear(config.c_dim, config.cond_dim), nn.SiLU(), nn.Linear(config.cond_dim, config.cond_dim)
        )
        ch0 = config.channels(4)
        # Noise and text both feed the 4x4 seed, so the layout can depend on the caption.
        self.fc = nn.Linear(config.z_dim + config.cond_dim, 4 * 4 * ch0)
        sizes = [4 * 2**i for i in range(config.num_blocks + 1)]  # 4, 8, ..., R
        self.blocks = nn.ModuleList(
            UpBlock(config.channels(s), config.channels(2 * s), config.cond_dim) for s in sizes[:-1]
        )
        self.out_norm = nn.BatchNorm2d(config.channels(config.resolution))
        self.to_rgb = nn.Conv2d(config.channels(config.resolution), 3, 3, padding=1)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Map noise ``z (B, z_dim)`` and text embeddings ``c (B, c_dim)`` to images (B, 3, R, R)."""
        cond = self.text_mlp(c)  # (B, cond_dim)
        h = self.fc(torch.cat([z, cond], dim=1)).view(z.shape[0], -1, 4, 4)  # (B, C0, 4, 4)
        if self.to_rgb.weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            h = block(h, cond)
        return torch.tanh(self.to_rgb(F.relu(self.out_norm(h))))


class Discriminator(nn.Module):
    """ResNet projection discriminator, spectrally normalised throughout."""

    def __init__(self, config: CGANConfig):
        super().__init__()
        config.validate()
        self.config = config
        # As in BigGAN's D: the block from size s to s/2 outputs the generator's channels at s,
        # so D is lighter than a mirror of G (it runs three times per step, G once).
        sizes = [config.resolution // 2**i for i in range(config.num_blocks)]  # R, R/2, ..., 8
        blocks = [DownBlock(3, config.channels(sizes[0]), first=True)]
        blocks += [DownBlock(config.channels(2 * s), config.channels(s)) for s in sizes[1:]]
        features = config.channels(8)
        for _ in range(config.d_extra_blocks):
            blocks.append(DownBlock(features, config.channels(4), downsample=False))
            features = config.channels(4)
        self.blocks = nn.ModuleList(blocks)
        self.out = sn_linear(features, 1)
        self.embed = sn_linear(config.c_dim, features, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Image features ``h (B, C)``, the part of D that does not see the text."""
        h = x
        for block in self.blocks:
            h = block(h)
        return F.relu(h).sum(dim=(2, 3))  # (B, C)

    def logits(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Projection head: ``w . h + <embed(c), h>`` -> (B,)."""
        return self.out(h).squeeze(1) + (self.embed(c) * h).sum(dim=1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Realism logits (B,) of images ``x (B, 3, R, R)`` given captions ``c (B, c_dim)``."""
        return self.logits(self.features(x), c)


def spectral_layers(D: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv and linear layer of ``D`` with its name (used to check spectral norm)."""
    return [(n, m) for n, m in D.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# -- losses: pure functions of logits ---------------------------------------------------------------

def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator hinge loss terms ``(mean relu(1 - D(real)), mean relu(1 + D(fake)))``."""
    return F.relu(1 - real_logits).mean(), F.relu(1 + fake_logits).mean()


def mismatch_loss(mismatch_logits: torch.Tensor, differs: torch.Tensor) -> torch.Tensor:
    """Hinge loss that counts a real image with another image's caption as fake.

    Args:
        mismatch_logits: D(real image, shuffled caption), (B,).
        differs: (B,) bool, false where the shuffled caption equals the true one (several photos
            of one dish share a caption); those rows are left out.
    """
    weights = differs.to(mismatch_logits.dtype)
    return (F.relu(1 + mismatch_logits) * weights).sum() / weights.sum().clamp(min=1)


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``-mean D(G(z, c))``."""
    return -fake_logits.mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., 2018): ``mean ||grad_x D(x)||^2`` over the batch, differentiable.

    ``real_images`` must require grad and be the tensor ``real_logits`` was computed from.
    The caller multiplies by ``gamma / 2`` and, for lazy regularisation every k steps, by k.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


def truncated_noise(shape: tuple[int, int], truncation: float = 1.0, generator: torch.Generator | None = None,
                    device=None) -> torch.Tensor:
    """Standard normal noise scaled by ``truncation`` (1 = none; smaller = safer, less varied)."""
    if truncation < 0:
        raise ValueError(f"truncation={truncation} must be >= 0 (1 = no truncation)")
    return torch.randn(shape, generator=generator, device=device) * truncation
