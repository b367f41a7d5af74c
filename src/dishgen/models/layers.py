"""Blocks shared by the GAN and the VAE: residual up/down blocks, conditional batch-norm, EMA.

Kept small and stable: other families import from here. Shapes use (B, C, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn_conv2d(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, **kwargs) -> nn.Conv2d:
    """A ``Conv2d`` with spectral normalisation (Miyato et al., 2018) on its weight."""
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, **kwargs))


def sn_linear(in_features: int, out_features: int, **kwargs) -> nn.Linear:
    """A ``Linear`` layer with spectral normalisation on its weight."""
    return spectral_norm(nn.Linear(in_features, out_features, **kwargs))


def _fold_3x3(weight: torch.Tensor) -> torch.Tensor:
    """``(O, I, 3, 3)`` -> ``(O, I, 4, 4)``: each spatial axis ``[w0, w1, w2]`` becomes
    ``[w0, w0 + w1, w1 + w2, w2]`` (the 3-tap kernel summed with itself shifted by one)."""
    weight = F.pad(weight, (0, 0, 0, 1)) + F.pad(weight, (0, 0, 1, 0))
    return F.pad(weight, (0, 1, 0, 0)) + F.pad(weight, (1, 0, 0, 0))


def _check_3x3(conv: nn.Conv2d) -> None:
    if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1 \
            or conv.dilation != (1, 1):
        raise ValueError(f"expected a 3x3 conv with padding 1, got {conv}")


def upsample_conv3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(nearest_upsample_2x(x))`` computed as one stride-2 transposed conv.

    Every output pixel of a 3x3 conv on a nearest-upsampled map sees only 2x2 distinct input
    pixels, so the same result (up to float rounding) costs 16 instead of 36 multiply-adds per
    input pixel and channel pair, and the upsampled map is never built. ``conv`` keeps its usual
    ``(O, I, 3, 3)`` weight, so checkpoints do not change.
    """
    _check_3x3(conv)
    kernel = _fold_3x3(conv.weight).flip(2, 3).transpose(0, 1)  # (I, O, 4, 4)
    return F.conv_transpose2d(x, kernel, conv.bias, stride=2, padding=1)


def conv3x3_avgpool(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``avg_pool2d(conv(x), 2)`` computed as one 4x4 stride-2 conv (2.25x fewer multiply-adds).

    Averaging a 2x2 window of 3x3 conv outputs is a 4x4 conv whose kernel is the 3x3 kernel
    convolved with a 2x2 box filter. The weight is read from ``conv`` (spectral norm included).
    """
    _check_3x3(conv)
    return F.conv2d(x, _fold_3x3(conv.weight) / 4, conv.bias, stride=2, padding=1)


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="nearest")``; under ``torch.compile`` written as a
    broadcast, whose backward compiles to a sum (inductor turns ``interpolate``'s backward into a
    scattered accumulation that cost 6 % of a compiled cGAN step)."""
    if not getattr(torch.compiler, "is_compiling", lambda: False)():  # torch.compiler.is_compiling: torch 2.3+
        return F.interpolate(x, scale_factor=2, mode="nearest")
    B, C, H, W = x.shape
    out = x[:, :, :, None, :, None].expand(B, C, H, 2, W, 2).reshape(B, C, 2 * H, 2 * W)
    return out.contiguous(memory_format=torch.channels_last) if _is_channels_last(x) else out


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def has_spectral_norm(module: nn.Module) -> bool:
    """Whether ``module.weight`` is spectrally normalised (by the parametrization API)."""
    from torch.nn.utils import parametrize

    return parametrize.is_parametrized(module, "weight") and any(
        type(p).__name__ == "_SpectralNorm" for p in module.parametrizations["weight"]
    )


class ConditionalBatchNorm2d(nn.Module):
    """Batch-norm whose scale and shift come from a conditioning vector (de Vries et al., 2017).

    ``y = BN(x) * (1 + gamma(cond)) + beta(cond)``; gamma and beta start at zero, so the layer
    starts as a plain batch-norm.

    Args:
        num_features: channels C of the input.
        cond_dim: size of the conditioning vector.
    """

    def __init__(self, num_features: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Linear(cond_dim, num_features)
        self.beta = nn.Linear(cond_dim, num_features)
        for layer in (self.gamma, self.beta):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma(cond)[:, :, None, None]  # (B, C, 1, 1)
        beta = self.beta(cond)[:, :, None, None]
        return self.bn(x) * (1 + gamma) + beta


class UpBlock(nn.Module):
    """Residual block that doubles the resolution (BigGAN-style generator block).

    ``x -> norm -> ReLU -> up -> conv3 -> norm -> ReLU -> conv3`` plus ``up -> conv1`` shortcut.
    ``up -> conv3`` runs as one transposed conv (:func:`upsample_conv3x3`) and the shortcut
    convolves before upsampling: the same function for less than half the work.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        cond_dim: size of the conditioning vector for conditional batch-norm; ``None`` uses
            plain batch-norm (and ``forward`` ignores ``cond``).
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int | None = None):
        super().__init__()
        if cond_dim is None:
            self.norm1, self.norm2 = nn.BatchNorm2d(in_channels), nn.BatchNorm2d(out_channels)
        else:
            self.norm1 = ConditionalBatchNorm2d(in_channels, cond_dim)
            self.norm2 = ConditionalBatchNorm2d(out_channels, cond_dim)
        self.conditional = cond_dim is not None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def _norm(self, norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return norm(x, cond) if self.conditional else norm(x)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self._norm(self.norm1, x, cond))
        h = upsample_conv3x3(h, self.conv1)  # conv1(upsample(h)): (B, C_out, 2H, 2W)
        h = self.conv2(F.relu(self._norm(self.norm2, h, cond)))
        # A 1x1 conv commutes with nearest upsampling: convolve the 4x smaller map.
        return h + upsample_nearest2x(self.shortcut(x))


class DownBlock(nn.Module):
    """Residual block that halves the resolution (BigGAN/SNGAN discriminator block).

    ``x -> ReLU -> conv3 -> ReLU -> conv3 -> avgpool`` plus ``conv1 -> avgpool`` shortcut. The
    first block of a network (``first=True``) skips the leading ReLU, as in the SNGAN "optimized
    block", because its input is an image. Both poolings are folded into cheaper equivalents
    (:func:`conv3x3_avgpool`, and pooling before the 1x1 shortcut conv).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        downsample: halve the resolution.
        first: the block reads the image itself.
        spectral: spectrally normalise every conv (discriminators); plain convs otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, *, downsample: bool = True, first: bool = False,
                 spectral: bool = True):
        super().__init__()
        conv = sn_conv2d if spectral else (lambda i, o, k, padding=0: nn.Conv2d(i, o, k, padding=padding))
        self.conv1 = conv(in_channels, out_channels, 3, padding=1)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1)
        self.shortcut = conv(in_channels, out_channels, 1)
        self.downsample = downsample
        self.first = first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x if self.first else F.relu(x)))
        if not self.downsample:
            return self.conv2(h) + self.shortcut(x)
        # avgpool(conv2(h)) as one strided conv; the 1x1 shortcut commutes with average pooling.
        return conv3x3_avgpool(h, self.conv2) + self.shortcut(F.avg_pool2d(x, 2))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``ema`` towards ``model``: ``ema = decay * ema + (1 - decay) * model``.

    Floating-point buffers (batch-norm running statistics) are averaged the same way, so the
    averaged network's normalisation matches its averaged weights; integer buffers (batch
    counters) are copied.

    Args:
        ema: the averaged copy (same architecture as ``model``).
        model: the network being trained.
        decay: weight of the old average, in [0, 1].
    """
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        if b.dtype.is_floating_point:
            b_ema.lerp_(b, 1.0 - decay)
        else:
            b_ema.copy_(b)


def noise_rows(num_rows: int, dim: int, seed: int | None, first_row: int = 0) -> torch.Tensor:
    """Rows ``first_row .. first_row + num_rows - 1`` of the standard normal noise stream of ``seed``.

    The stream is drawn one ``(dim,)`` row at a time on the CPU, so row ``k`` never depends on
    how many rows a call asks for: image ``k`` of a seeded call can be made again alone with
    ``first_row=k``. For ``dim`` a multiple of 16 (every default) the rows equal those of one
    ``torch.randn((N, dim))`` draw, which is what earlier versions used.

    Args:
        num_rows: rows to return.
        dim: length of a row (``z_dim``).
        seed: the stream's seed; ``None`` draws a fresh one.
        first_row: rows of the stream to skip first.

    Returns:
        ``(num_rows, dim)`` float32 CPU tensor.
    """
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    for _ in range(first_row):  # cheap: a row is dim floats
        torch.randn(dim, generator=generator)
    rows = [torch.randn(dim, generator=generator) for _ in range(num_rows)]
    return torch.stack(rows) if rows else torch.zeros(0, dim)
