"""Conditional VAE: a convolutional encoder q(z | x, c) and decoder p(x | z, c).

The caption condition ``c`` (a text-encoder vector, or the output of a jointly trained LSTM) is
projected once to ``cond_dim`` and used where it is cheap:

- the encoder sees it only at its 4x4 bottleneck, concatenated with the flattened features
  before the (mu, logvar) head; the original project instead tiled a 512-d vector over every
  input pixel, which made the first convolution alone cost ~70 GFLOP per batch of 32;
- the decoder starts from ``[z, c]`` and modulates every block with FiLM (a per-channel scale
  and shift computed from ``c``), which costs a few multiply-adds per activation.

Depth follows the image size: the encoder halves the resolution down to 4x4 and the decoder
doubles it back, so 64 px has 4 levels, 128 px 5 and 256 px 6::

    model = CVAE(CVAEModelConfig(resolution=64, c_dim=384))
    x_hat, mu, logvar = model(x, c, eps)            # x: (B, 3, 64, 64) in [-1, 1], c: (B, 384)
    images = model.generate(c, num_samples=4, seed=0)   # (B * 4, 3, 64, 64)

Like the GANs' generators, the model takes caption vectors ``c`` (or, with a jointly trained LSTM,
its token ids), never text: the family loader or the trainer encodes the captions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dishgen.models.layers import noise_rows, upsample_conv3x3

RESOLUTIONS = (64, 128, 256)


@dataclass
class CVAEModelConfig:
    """Shape of the network (saved in every model folder's ``config.json`` under ``"model"``).

    Attributes:
        resolution: image size, 64, 128 or 256.
        z_dim: latent size.
        c_dim: size of the caption vector (the text encoder's ``dim``).
        cond_dim: size of the projected condition used by the encoder head and the FiLM layers.
        base_channels: channels at half resolution; doubled at every halving of the size.
        max_channels: cap on the channels.
        res_blocks: residual blocks per decoder level at sizes up to ``res_block_resolution``.
        res_block_resolution: the largest size that gets residual blocks (they cost 4x per
            doubling of the size, so they go where the activations are small).
    """

    resolution: int = 64
    z_dim: int = 128
    c_dim: int = 384
    cond_dim: int = 256
    base_channels: int = 32
    max_channels: int = 256
    res_blocks: int = 1
    res_block_resolution: int = 16

    def validate(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution={self.resolution} is not supported; choose one of {RESOLUTIONS}")
        for name in ("z_dim", "c_dim", "cond_dim", "base_channels", "max_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")

    def channels(self, size: int) -> int:
        """Channels of the feature maps at ``size`` x ``size`` (``size`` < resolution)."""
        return min(self.max_channels, self.base_channels * (self.resolution // 2) // size)

    @property
    def sizes(self) -> list[int]:
        """Feature-map sizes from half resolution down to 4: [R/2, R/4, ..., 4]."""
        return [self.resolution >> i for i in range(1, int(math.log2(self.resolution)) - 1)]


def _groups(channels: int) -> int:
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return groups


class FiLM(nn.Module):
    """Feature-wise linear modulation: h * (1 + gamma(c)) + beta(c), per channel."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)  # start as the identity
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return h * (1 + gamma) + beta


class ResBlock(nn.Module):
    """GroupNorm -> FiLM -> SiLU -> conv, twice, with a skip connection."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.film1 = FiLM(cond_dim, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.film2 = FiLM(cond_dim, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.silu(self.film1(self.norm1(h), cond)))
        y = self.conv2(F.silu(self.film2(self.norm2(y), cond)))
        return h + y


class UpBlock(nn.Module):
    """Nearest 2x upsampling -> 3x3 conv (run as one transposed conv) -> GroupNorm -> FiLM -> SiLU,
    then residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, res_blocks: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.GroupNorm(_groups(out_channels), out_channels)
        self.film = FiLM(cond_dim, out_channels)
        self.res = nn.ModuleList(ResBlock(out_channels, cond_dim) for _ in range(res_blocks))

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = upsample_conv3x3(h, self.conv)  # conv(upsample(h)), as one cheaper transposed conv
        h = F.silu(self.film(self.norm(h), cond))
        for block in self.res:
            h = block(h, cond)
        return h


class Encoder(nn.Module):
    """q(z | x, c): strided 4x4 convs down to 4x4, then [features, c] -> (mu, logvar)."""

    def __init__(self, config: CVAEModelConfig):
        super().__init__()
        layers, in_channels = [], 3
        for size in config.sizes:  # each conv halves the size: R -> R/2 -> ... -> 4
            out_channels = config.channels(size)
            layers += [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1),
                       nn.GroupNorm(_groups(out_channels), out_channels), nn.SiLU()]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels * 16 + config.cond_dim, 2 * config.z_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).flatten(1)  # (B, C * 4 * 4)
        mu, logvar = self.head(torch.cat([h, cond], dim=1)).chunk(2, dim=1)  # (B, z_dim) each
        return mu, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """p(x | z, c): [z, c] -> 4x4 features -> FiLM-conditioned upsampling blocks -> RGB."""

    def __init__(self, config: CVAEModelConfig):
        super().__init__()
        sizes = config.sizes[::-1]  # [4, 8, ..., R/2]
        self.start_channels = config.channels(4)
        self.fc = nn.Linear(config.z_dim + config.cond_dim, self.start_channels * 16)
        self.start_norm = nn.GroupNorm(_groups(self.start_channels), self.start_channels)
        blocks, in_channels = [], self.start_channels
        for size in sizes[1:] + [config.resolution]:
            out_channels = config.channels(size) if size < config.resolution else max(8, config.base_channels // 2)
            res = config.res_blocks if size <= config.res_block_resolution else 0
            blocks.append(UpBlock(in_channels, out_channels, config.cond_dim, res))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Conv2d(in_channels, 3, 3, padding=1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, cond], dim=1)).view(-1, self.start_channels, 4, 4)
        h = F.silu(self.start_norm(h))
        for block in self.blocks:
            h = block(h, cond)
        return self.to_rgb(h)  # (B, 3, R, R), unbounded; images are clamped to [-1, 1]


class CVAE(nn.Module):
    """The conditional VAE. Like the GANs' generators it takes the caption as a tensor, never as
    text: turning captions into that tensor is the family loader's job
    (:class:`dishgen.families.cvae.CVAEGenerator`) or the trainer's.

    Args:
        config: the network shape.
        text_model: a jointly trained text encoder (for example
            :class:`dishgen.text.lstm.LSTMTextEncoder`); its weights become part of this model and
            the model takes its token ids. Without it the model takes ready-made caption vectors
            from a frozen encoder (MiniLM, CLIP).
    """

    def __init__(self, config: CVAEModelConfig, text_model: nn.Module | None = None):
        super().__init__()
        config.validate()
        if text_model is not None and text_model.dim != config.c_dim:
            raise ValueError(f"text_model.dim={text_model.dim} but config.c_dim={config.c_dim}")
        self.config = config
        self.text_model = text_model
        self.cond_proj = nn.Sequential(nn.Linear(config.c_dim, config.cond_dim), nn.SiLU(),
                                       nn.Linear(config.cond_dim, config.cond_dim))
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.__dict__["frozen_text_encoder"] = None  # set only by the deprecated attach_text_encoder

    def condition(self, text: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) or caption vectors (B, c_dim) -> projected condition (B, cond_dim)."""
        c = self.text_model(text) if self.text_model is not None else text
        return self.cond_proj(c.to(self.cond_proj[0].weight.dtype))

    def forward(self, x: torch.Tensor, text: torch.Tensor, eps: torch.Tensor):
        """One training pass.

        Args:
            x: (B, 3, R, R) images in [-1, 1].
            text: (B, T) token ids or (B, c_dim) caption vectors.
            eps: (B, z_dim) standard normal noise for the reparameterisation.

        Returns:
            ``(x_hat, mu, logvar)``: (B, 3, R, R) reconstruction and the (B, z_dim) posterior.
        """
        cond = self.condition(text)
        mu, logvar = self.encoder(x, cond)
        z = reparameterize(mu, logvar, eps)
        return self.decoder(z, cond), mu, logvar

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Encode and decode with the posterior mean. Returns (B, 3, R, R) in [-1, 1].

        Args:
            images: (B, 3, R, R) in [-1, 1].
            text: the ``text`` tensor of :meth:`forward`, (B, T) token ids or (B, c_dim) vectors.
        """
        text = self._legacy_captions(text)
        cond = self.condition(text)
        dtype = self.cond_proj[0].weight.dtype
        mu, _ = self.encoder(images.to(cond.device, dtype), cond)
        return self.decoder(mu, cond).clamp(-1, 1)

    @torch.no_grad()
    def generate(self, text: torch.Tensor, num_samples: int = 1, seed: int | None = None,
                 temperature: float = 1.0, batch_size: int = 64, first_index: int = 0) -> torch.Tensor:
        """Sample images from the prior: z ~ N(0, temperature^2 I), x = decoder(z, c). No image is used.

        Args:
            text: the ``text`` tensor of :meth:`forward`, one row per caption.
            num_samples: images per caption.
            seed: makes the noise (and so the images) repeatable, whatever the batch size.
            temperature: scale of the latent noise; below 1 gives safer, blander images.
            batch_size: images per decoder pass.
            first_index: image ``i`` of this call takes row ``first_index + i`` of the seed's noise
                stream, so ``first_index=k`` with one caption makes image ``k`` of an earlier call alone.

        Returns:
            (len(text) * num_samples, 3, R, R) in [-1, 1], caption-major.
        """
        text = self._legacy_captions(text).repeat_interleave(num_samples, dim=0)
        z = noise_rows(len(text), self.config.z_dim, seed, first_index) * temperature  # on CPU: same for any device
        dtype = self.cond_proj[0].weight.dtype
        out = []
        for start in range(0, len(text), batch_size):
            cond = self.condition(text[start : start + batch_size])
            out.append(self.decoder(z[start : start + batch_size].to(cond.device, dtype), cond).clamp(-1, 1))
        return torch.cat(out) if out else torch.zeros(0, 3, self.config.resolution, self.config.resolution)

    # -- deprecated: the model encoding captions itself (until dishgen 0.2.0) ---------------------

    def attach_text_encoder(self, encoder) -> None:
        """Deprecated: encode captions outside the model (``CVAEGenerator.text_inputs``), as the GANs do.

        Gives the model a frozen :class:`dishgen.text.TextEncoder` so that :meth:`generate` and
        :meth:`reconstruct` still take lists of captions. Removed in dishgen 0.2.0.
        """
        from dishgen.deprecation import deprecated

        deprecated("CVAE.attach_text_encoder", "dishgen.families.cvae.load_generator(...).text_inputs(captions)")
        self._attach_text_encoder(encoder)

    def _attach_text_encoder(self, encoder) -> None:
        if self.text_model is not None:
            raise ValueError("this model trains its own text encoder; it takes no frozen one")
        if encoder.dim != self.config.c_dim:
            raise ValueError(f"text encoder {encoder.id!r} gives {encoder.dim}-d vectors; this model needs {self.config.c_dim}")
        self.__dict__["frozen_text_encoder"] = encoder

    def text_inputs(self, captions: list[str]) -> torch.Tensor:
        """Deprecated: use ``dishgen.families.cvae.load_generator(...).text_inputs``. Removed in 0.2.0."""
        from dishgen.deprecation import deprecated

        deprecated("CVAE.text_inputs", "dishgen.families.cvae.load_generator(...).text_inputs(captions)")
        return self._text_inputs(captions)

    def _text_inputs(self, captions: list[str]) -> torch.Tensor:
        device = next(self.parameters()).device
        if self.text_model is not None:
            return self.text_model.tokenizer.encode(list(captions), self.text_model.config.max_length).to(device)
        if self.frozen_text_encoder is None:
            raise ValueError("the model takes caption vectors, not captions: encode them first, "
                             "for example with dishgen.families.cvae.load_generator(...).text_inputs(captions)")
        return self.frozen_text_encoder.encode(list(captions)).to(device)

    def _legacy_captions(self, text):
        """Captions given where a tensor belongs: the old call, served for one release with a notice."""
        if not isinstance(text, (list, tuple)):
            return text
        from dishgen.deprecation import deprecated

        deprecated("passing captions to CVAE.generate/reconstruct",
                   "a text tensor from dishgen.families.cvae.load_generator(...).text_inputs(captions)")
        return self._text_inputs(text)


# -- the objective: pure functions over tensors -------------------------------------------------


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, with sigma = exp(logvar / 2)."""
    return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per latent dimension, in nats. Returns (B, z_dim)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def kl_penalty(kl: torch.Tensor, free_bits: float = 0.0) -> torch.Tensor:
    """The KL term to minimise, per image: sum over dimensions, mean over the batch.

    With ``free_bits`` > 0 (nats per dimension, Kingma et al. 2016) a dimension whose batch-mean
    KL is below ``free_bits`` costs ``free_bits`` and gets no gradient, so the optimiser has no
    reason to switch it off: this fights posterior collapse.
    """
    per_dim = kl.mean(0)  # (z_dim,)
    if free_bits > 0:
        per_dim = per_dim.clamp(min=free_bits)
    return per_dim.sum()


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Per-image error summed over pixels and channels: squared (``mse``) or absolute (``l1``). (B,)"""
    diff = x_hat.float() - x.float()
    if kind == "mse":
        return diff.pow(2).flatten(1).sum(1)
    if kind == "l1":
        return diff.abs().flatten(1).sum(1)
    raise ValueError(f"unknown reconstruction loss {kind!r}; use mse or l1")


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across inputs (Burda et al. 2016).

    A unit is active when Var_x(E_q[z_u | x]) > ``threshold``; collapsed units ignore the image.
    """
    if len(mu) < 2:
        return 0
    return int((mu.float().var(0) > threshold).sum())
