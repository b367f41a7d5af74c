"""FastGAN (Liu et al., 2021) with caption conditioning: a few-shot GAN for 100-1,000 photos.

Generator: noise ``z (B, z_dim)`` and a text embedding ``c (B, c_dim)`` -> image ``(B, 3, R, R)``
in [-1, 1]. The caption goes through a small MLP to ``cond (B, cond_dim)``, which feeds the 4x4
seed (with ``z``) and the scale and shift of every conditional batch-norm. Each up-block is
``2x upsampling -> conv3x3 -> [noise] -> norm -> GLU`` (one conv, or two for every other block, as
in the paper); upsampling followed by a 3x3 conv cannot make the checkerboard pattern of a stride-2
transposed conv. The paper upsamples by nearest neighbour, which copies each pixel into a 2x2
block: a coarse map upsampled 8x is a mosaic of 8x8 tiles, and its tile edges, all on the same
rows and columns, survive the 3x3 convs as a plaid of stripes along the pixel grid (trained on FFML
at 128 px, every sample grew one; the same weights run with bilinear upsampling drew no plaid).
``upsample="bilinear"`` (StyleGAN2's ``[1, 3, 3, 1]`` filter) interpolates instead of copying. Skip-layer excitation (SLE) lets a low-resolution map (4x4, 8x8) gate
the channels of the two largest maps, a cheap long skip that carries layout to the detail layers.
With ``noise=True`` every conv from 8x8 up adds a per-pixel Gaussian noise map scaled by a learned
per-channel weight (StyleGAN's noise injection, which FastGAN's two-conv blocks also use): the
network gets fresh randomness at every scale for texture (crumbs, crust, grains) instead of having
to make it from ``z`` through the whole stack. The weights start at zero, so adding noise to a
trained generator does not change its output until training moves them. Without explicit noise
maps, a row's maps are drawn from a stream seeded by that row's ``z``: the generator stays a
function of ``(z, c)``, so a seeded image is the same alone or in any batch.

Discriminator: FastGAN's own. A 3x3 stem, then down-blocks from R to 8x8 that average two
branches, ``conv4x4/2 -> BN -> LReLU -> conv3x3 -> BN -> LReLU`` and ``avgpool -> conv1x1 -> BN ->
LReLU``, every conv spectrally normalised; sum-pooling to ``h (B, C)`` and a projection head for the
caption (Miyato & Koyama, 2018): ``logit = w . h + <embed(c), h>``. The batch-norms matter: the
first version of this family, a narrow spectrally normalised ResNet D without them, shrank its
activations block by block until real and fake logits differed by 0.01 and D sat at chance.
Real and fake images go through D in separate batches (as in FastGAN), so batch statistics never
mix them and D's step and G's step see D alike. Its self-supervision: two small decoders rebuild
the real image it judged at R/2 from its 8x8 features, and a random quarter of it from the
matching quarter of its 16x16 features, so D must keep texture in its features and cannot overfit
a few hundred photos with a shortcut. The reconstruction loss is an MSE (the paper
used LPIPS, whose VGG weights are not available offline).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dishgen.models.layers import ConditionalBatchNorm2d, sn_conv2d, sn_linear, upsample_conv3x3

UPSAMPLE_MODES = ("nearest", "bilinear")


@dataclass
class FastGANConfig:
    """Network shape, saved with every checkpoint and export.

    Attributes:
        resolution: output size R in pixels (a power of two, 32 to 512).
        z_dim: size of the noise vector.
        c_dim: size of the text embedding (set from the text encoder).
        cond_dim: size of the conditioning vector after the text MLP.
        g_channels: generator channels at full resolution; halving the resolution doubles them.
        d_channels: discriminator channels at full resolution, likewise.
        max_channels: cap on the channels of either network.
        decoder_channels: channels of D's reconstruction decoders at 8x8 (halved per upsampling).
        noise: per-pixel noise injection after every generator conv (off in models saved before it).
        upsample: the generator's 2x upsampling before each block's first conv: ``nearest`` (the
            paper's, and every model saved before this option) or ``bilinear`` (StyleGAN2's
            ``[1, 3, 3, 1]`` filter: no block edges along the pixel grid, see the module docstring).
    """

    resolution: int = 128
    z_dim: int = 128
    c_dim: int = 384
    cond_dim: int = 128
    g_channels: int = 16
    d_channels: int = 16
    max_channels: int = 256
    decoder_channels: int = 64
    noise: bool = False
    upsample: str = "nearest"

    def validate(self) -> None:
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={self.upsample!r} must be one of {', '.join(UPSAMPLE_MODES)}")
        if self.resolution < 32 or self.resolution > 512 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution={self.resolution} must be a power of two from 32 to 512")
        for name in ("z_dim", "c_dim", "cond_dim", "g_channels", "d_channels", "max_channels", "decoder_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")

    def g_width(self, size: int) -> int:
        """Generator channels at spatial ``size``."""
        return min(self.g_channels * self.resolution // size, self.max_channels)

    def d_width(self, size: int) -> int:
        """Discriminator channels at spatial ``size``."""
        return min(self.d_channels * self.resolution // size, self.max_channels)

    @property
    def sizes(self) -> list[int]:
        """Feature-map sizes of the generator: 4, 8, ..., R."""
        return [4 * 2**i for i in range(int(math.log2(self.resolution)) - 1)]

    @property
    def sle_pairs(self) -> list[tuple[int, int]]:
        """``(source, target)`` sizes of the skip-layer excitations: the two largest maps, each
        gated by the map 16x smaller (at least 4x4); at 128 px: 4 -> 64 and 8 -> 128, as in the paper."""
        return [(max(4, size // 16), size) for size in self.sizes[-2:]]


def norm_glu(norm: ConditionalBatchNorm2d, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """``GLU(norm(x, cond))`` over channels. In eval mode the batch-norm (running statistics) and
    the caption's scale and shift fold into one per-image, per-channel affine map, applied in one
    pass instead of three (these elementwise passes, not the convs, dominated inference time)."""
    if norm.training:
        return F.glu(norm(x, cond), dim=1)
    bn = norm.bn
    inv_std = torch.rsqrt(bn.running_var + bn.eps)  # (C,)
    scale = (1 + norm.gamma(cond)) * inv_std  # (B, C)
    shift = norm.beta(cond) - bn.running_mean * scale  # (B, C)
    return F.glu(torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None]), dim=1)


class NoiseInjection(nn.Module):
    """``x + weight * noise``: one noise map per image ``(B, 1, H, W)``, scaled per channel by a
    learned weight that starts at zero (StyleGAN, Karras et al. 2019)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, self.weight.view(1, -1, 1, 1).to(x.dtype), noise.to(x.dtype))


class GLUUpBlock(nn.Module):
    """``nearest 2x -> conv3x3 -> [noise] -> CBN -> GLU`` (and ``conv3x3 -> [noise] -> CBN -> GLU``
    again if ``convs=2``).

    Each conv makes twice the output channels; the gated linear unit (GLU) keeps half of them,
    gated by the sigmoid of the other half, as in FastGAN.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, convs: int = 1, noise: bool = False,
                 upsample: str = "nearest"):
        super().__init__()
        self.upsample = upsample
        self.conv1 = nn.Conv2d(in_channels, 2 * out_channels, 3, padding=1, bias=False)
        self.norm1 = ConditionalBatchNorm2d(2 * out_channels, cond_dim)
        self.conv2 = nn.Conv2d(out_channels, 2 * out_channels, 3, padding=1, bias=False) if convs == 2 else None
        self.norm2 = ConditionalBatchNorm2d(2 * out_channels, cond_dim) if convs == 2 else None
        self.noise1 = NoiseInjection(2 * out_channels) if noise else None
        self.noise2 = NoiseInjection(2 * out_channels) if noise and convs == 2 else None

    @property
    def noise_count(self) -> int:
        """How many noise maps (at the block's output size) :meth:`forward` takes."""
        return (self.noise1 is not None) + (self.noise2 is not None)

    def upsample_conv(self, x: torch.Tensor) -> torch.Tensor:
        """``conv1(upsample_2x(x))``: ``(B, C_in, H, W)`` -> ``(B, 2 C_out, 2H, 2W)``."""
        if self.upsample == "nearest":
            # One transposed conv with a folded kernel: the same function (checked in the tests).
            return upsample_conv3x3(x, self.conv1)
        return self.conv1(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, noise: list[torch.Tensor] = ()) -> torch.Tensor:
        h = self.upsample_conv(x)  # (B, 2 C_out, 2H, 2W)
        if self.noise1 is not None:
            h = self.noise1(h, noise[0])
        h = norm_glu(self.norm1, h, cond)  # (B, C_out, 2H, 2W)
        if self.conv2 is not None:
            h = self.conv2(h)
            if self.noise2 is not None:
                h = self.noise2(h, noise[1])
            h = norm_glu(self.norm2, h, cond)
        return h


class SkipExcitation(nn.Module):
    """Skip-layer excitation: a small map produces one gate in (0, 1) per channel of a large map.

    ``gate = sigmoid(conv1x1(swish(conv4x4(avgpool_4x4(small)))))``, ``large * gate``.
    """

    def __init__(self, small_channels: int, large_channels: int):
        super().__init__()
        self.conv4 = nn.Conv2d(small_channels, large_channels, 4, bias=False)
        self.conv1 = nn.Conv2d(large_channels, large_channels, 1, bias=False)

    def forward(self, small: torch.Tensor, large: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(small, 4)  # (B, C_small, 4, 4)
        gate = torch.sigmoid(self.conv1(F.silu(self.conv4(pooled))))  # (B, C_large, 1, 1)
        return large * gate


class Generator(nn.Module):
    """FastGAN generator with text-conditional batch-norm and skip-layer excitation."""

    def __init__(self, config: FastGANConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.z_dim, self.c_dim = config.z_dim, config.c_dim
        self.text_mlp = nn.Sequential(
            nn.Linear(config.c_dim, config.cond_dim), nn.SiLU(), nn.Linear(config.cond_dim, config.cond_dim)
        )
        ch4 = config.g_width(4)
        # A linear map to 4x4 is the paper's 4x4 transposed conv on a 1x1 input (no overlap, no checkerboard).
        self.fc = nn.Linear(config.z_dim + config.cond_dim, 2 * ch4 * 4 * 4, bias=False)
        self.init_norm = ConditionalBatchNorm2d(2 * ch4, config.cond_dim)
        sizes = config.sizes
        # Two convs in every other block (8, 32, 128...), one in the others, as in the paper.
        self.blocks = nn.ModuleList(
            GLUUpBlock(config.g_width(s), config.g_width(2 * s), config.cond_dim, convs=2 if i % 2 == 0 else 1,
                       noise=config.noise, upsample=config.upsample)
            for i, s in enumerate(sizes[:-1])
        )
        self.sle = nn.ModuleDict({
            str(large): SkipExcitation(config.g_width(small), config.g_width(large)) for small, large in config.sle_pairs
        })
        self.sle_sources = {large: small for small, large in config.sle_pairs}  # target size -> source size
        self.to_rgb = nn.Conv2d(config.g_width(config.resolution), 3, 3, padding=1)

    @property
    def noise_sizes(self) -> list[int]:
        """The spatial size of each noise map :meth:`forward` takes, in order (empty without noise)."""
        return [2 * s for s, block in zip(self.config.sizes[:-1], self.blocks, strict=True) for _ in range(block.noise_count)]

    def draw_noise(self, batch: int, generator: torch.Generator | None = None, device=None) -> list[torch.Tensor]:
        """Fresh noise maps ``[(B, 1, s, s) for s in noise_sizes]`` from ``generator``."""
        return [torch.randn(batch, 1, s, s, generator=generator, device=device) for s in self.noise_sizes]

    def noise_from_z(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Each row's noise maps drawn from a stream seeded by that row of ``z``, so the same
        ``(z, c)`` always gives the same image, alone or in a batch. The seed hashes the row rounded
        to bfloat16, so a float32, bfloat16 or float16 copy of one ``z`` gets the same maps."""
        rows = []
        for row in z.detach().to("cpu", torch.bfloat16):
            key = row.view(torch.int16).numpy().tobytes()
            seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
            rows.append(self.draw_noise(1, torch.Generator().manual_seed(seed)))
        return [torch.cat(maps).to(z.device) for maps in zip(*rows, strict=True)]

    def forward(self, z: torch.Tensor, c: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Map noise ``z (B, z_dim)`` and text embeddings ``c (B, c_dim)`` to images (B, 3, R, R).

        ``noise``: the per-pixel noise maps (:meth:`draw_noise`); by default they follow from ``z``
        (:meth:`noise_from_z`). Ignored by a generator built without noise.
        """
        if self.config.noise and noise is None:
            noise = self.noise_from_z(z)
        maps = iter(noise or ())
        cond = self.text_mlp(c)  # (B, cond_dim)
        h = self.fc(torch.cat([z, cond], dim=1)).view(z.shape[0], -1, 4, 4)  # (B, 2 C4, 4, 4)
        h = norm_glu(self.init_norm, h, cond)  # (B, C4, 4, 4)
        if self.to_rgb.weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        features = {4: h}
        for block in self.blocks:
            h = block(h, cond, [next(maps) for _ in range(block.noise_count)])
            size = h.shape[-1]
            if size in self.sle_sources:
                h = self.sle[str(size)](features[self.sle_sources[size]], h)
            features[size] = h
        return torch.tanh(self.to_rgb(h))


class Decoder(nn.Module):
    """D's reconstruction decoder: 8x8 features -> an image at ``out_size`` (``nearest 2x -> conv -> BN -> GLU``)."""

    def __init__(self, in_channels: int, channels: int, out_size: int):
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(8)]
        ch_in, ch = in_channels, channels
        for _ in range(int(math.log2(out_size // 8))):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch_in, 2 * ch, 3, padding=1, bias=False),
                       nn.BatchNorm2d(2 * ch), nn.GLU(dim=1)]
            ch_in, ch = ch, max(ch // 2, 8)
        layers += [nn.Conv2d(ch_in, 3, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DownBlockComp(nn.Module):
    """FastGAN's discriminator down-block: the mean of a strided-conv branch and a pooling branch.

    ``main``: ``conv4x4/2 -> BN -> LReLU(0.2) -> conv3x3 -> BN -> LReLU(0.2)``;
    ``direct``: ``avgpool 2x -> conv1x1 -> BN -> LReLU(0.2)``. Every conv is spectrally normalised;
    the batch-norms keep the activations at unit scale however narrow the block is.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.main = nn.Sequential(
            sn_conv2d(in_channels, out_channels, 4, padding=1, stride=2, bias=False), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2),
            sn_conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2),
        )
        self.direct = nn.Sequential(
            nn.AvgPool2d(2), sn_conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2  # (B, C_out, H/2, W/2)


class Discriminator(nn.Module):
    """FastGAN's batch-norm discriminator with a caption projection head and its self-supervised
    reconstruction decoders."""

    def __init__(self, config: FastGANConfig):
        super().__init__()
        config.validate()
        self.config = config
        R = config.resolution
        self.stem = nn.Sequential(sn_conv2d(3, config.d_width(R), 3, padding=1, bias=False), nn.LeakyReLU(0.2))
        sizes = [R // 2**i for i in range(int(math.log2(R)) - 3)]  # R, R/2, ..., 16: each block halves it
        self.blocks = nn.ModuleList(DownBlockComp(config.d_width(s), config.d_width(s // 2)) for s in sizes)
        features = config.d_width(8)
        # FastGAN's patch head on the 8x8 map (plus one minibatch-std channel): a 5x5 map of logits.
        self.head = nn.Sequential(
            sn_conv2d(features + 1, features // 2, 1, bias=False), nn.BatchNorm2d(features // 2), nn.LeakyReLU(0.2),
            sn_conv2d(features // 2, 1, 4, bias=False),
        )
        self.embed = sn_linear(config.c_dim, features, bias=False)
        self.decoder_whole = Decoder(config.d_width(8), config.decoder_channels, R // 2)
        self.decoder_part = Decoder(config.d_width(16), config.decoder_channels, R // 2)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """D's 8x8 feature map ``h (B, C, 8, 8)`` (the part of D that does not see the text), and
        the 16x16 and 8x8 feature maps the decoders read."""
        h, maps = self.stem(x), {}
        for block in self.blocks:
            h = block(h)
            if h.shape[-1] in (16, 8):
                maps[h.shape[-1]] = h
        return h, maps

    def logits(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Patch logits ``(B, P)``: the head's 5x5 map, each plus the caption projection
        ``<embed(c), mean_xy h>`` (Miyato & Koyama, 2018). Losses average over patches."""
        patches = self.head(torch.cat([h, minibatch_std(h)], dim=1)).flatten(1)  # (B, 25)
        projection = (self.embed(c) * h.mean(dim=(2, 3))).sum(dim=1, keepdim=True)  # (B, 1)
        return patches + projection

    def reconstruct(self, maps: dict[int, torch.Tensor], part: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rebuild the whole image and quarter ``part`` (0 top-left, 1 top-right, 2 bottom-left,
        3 bottom-right) from the feature maps, each at (B, 3, R/2, R/2)."""
        return self.decoder_whole(maps[8]), self.decoder_part(quarter(maps[16], part))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Realism patch logits (B, P) of images ``x (B, 3, R, R)`` given captions ``c (B, c_dim)``."""
        return self.logits(self.features(x)[0], c)


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """StyleGAN's minibatch standard deviation, one channel ``(B, 1, H, W)``: the standard deviation
    of each feature over groups of ``group`` images, averaged over features and positions. A batch
    of look-alike fakes shows a low value, so D can punish a generator that drops variety."""
    B, C, H, W = h.shape
    g = math.gcd(B, group)
    y = h.float().view(g, B // g, C, H, W)
    std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B // g,)
    return std.repeat(g).view(B, 1, 1, 1).expand(B, 1, H, W).to(h.dtype)


def quarter(x: torch.Tensor, part: int) -> torch.Tensor:
    """Quarter ``part`` (0..3, row-major) of a batch of maps ``(B, C, H, W)`` -> ``(B, C, H/2, W/2)``."""
    H, W = x.shape[-2:]
    top, left = (part // 2) * (H // 2), (part % 2) * (W // 2)
    return x[..., top : top + H // 2, left : left + W // 2]


# -- losses: pure functions ---------------------------------------------------------------------------

def reconstruction_loss(whole: torch.Tensor, part: torch.Tensor, real: torch.Tensor, part_index: int) -> torch.Tensor:
    """MSE of D's reconstructions against the real images it judged.

    Args:
        whole: decoded whole images (B, 3, R/2, R/2).
        part: decoded quarter ``part_index`` (B, 3, R/2, R/2).
        real: the (augmented) real images D saw, (B, 3, R, R).
        part_index: which quarter ``part`` shows.
    """
    target_whole = F.avg_pool2d(real, 2)  # (B, 3, R/2, R/2)
    target_part = quarter(real, part_index)  # (B, 3, R/2, R/2)
    return F.mse_loss(whole.float(), target_whole.float()) + F.mse_loss(part.float(), target_part.float())


def mode_seeking_loss(fake_a: torch.Tensor, fake_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019): small when two fakes of one caption drawn from
    different noise differ as much as their noise does.

    Args:
        fake_a, fake_b: ``(P, 3, R, R)`` pairs of fakes with the same captions.
        z_a, z_b: ``(P, z_dim)`` their noise.
        eps: keeps the ratio's inverse finite.

    Returns:
        The mean over pairs of ``1 / (mean |fake_a - fake_b| / mean |z_a - z_b| + eps)``.
    """
    image_distance = (fake_a - fake_b).abs().flatten(1).mean(1)
    z_distance = (z_a - z_b).abs().mean(1)
    return (1 / (image_distance / z_distance + eps)).mean()


# A pixel whose darkest channel is above this (in [0, 1]) is white background, as in
# ``dishgen.evaluate.pixels.WHITE_LEVEL``; the soft mask below crosses 0.5 there.
DISH_WHITE_LEVEL = 0.92
DISH_MASK_SOFTNESS = 0.01  # width (in [0, 1] units of the darkest channel) of the mask's sigmoid


def dish_colour_statistics(images: torch.Tensor) -> torch.Tensor:
    """Differentiable colour statistics of the dish in each image -> ``(B, 7)``.

    The dish is every pixel that is not near-white, as a soft mask (a sigmoid of how far the
    pixel's darkest channel lies below :data:`DISH_WHITE_LEVEL`), so a gradient reaches both the
    colours and the outline. The seven numbers: the dish's mean R, G, B and their standard
    deviations (in the images' [-1, 1] units), and the share of the image the dish covers.

    Args:
        images: ``(B, 3, H, W)`` in [-1, 1].
    """
    x = images.float()
    darkest = (x.amin(dim=1, keepdim=True) + 1) / 2  # (B, 1, H, W) in [0, 1]
    mask = torch.sigmoid((DISH_WHITE_LEVEL - darkest) / DISH_MASK_SOFTNESS)
    weight = mask.flatten(2).sum(2).clamp(min=1.0)  # (B, 1): dish pixels, at least one
    mean = (x * mask).flatten(2).sum(2) / weight  # (B, 3)
    var = ((x - mean[:, :, None, None]).square() * mask).flatten(2).sum(2) / weight
    area = mask.flatten(1).mean(1, keepdim=True)
    return torch.cat([mean, (var + 1e-6).sqrt(), area], dim=1)


def colour_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """How far each fake's dish is from its real photo's in colour and size: the mean absolute
    difference of :func:`dish_colour_statistics`, row by row (a fake and the photo whose caption
    it was drawn for)."""
    return (dish_colour_statistics(fake) - dish_colour_statistics(real)).abs().mean()
