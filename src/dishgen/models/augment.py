"""DiffAugment (Zhao et al., 2020): differentiable augmentation of real and fake images, vectorised.

The GAN sees every image, real or fake, through the same random colour change, translation and
cutout, so D cannot memorise a small training set and gradients still reach G. Sampling the
random parameters and applying them are separate pure functions, so the vectorised version can
be checked against a per-sample loop with the same parameters.

    x_aug = diff_augment(x, "color,translation,cutout", generator=g)   # (B, 3, H, W) -> same
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125  # shift up to 1/8 of the side, as in the paper
CUTOUT_RATIO = 0.5  # erase a square half the side


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ``("color", "translation")``; ``""`` -> no augmentation."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    return names


def sample_params(batch: int, height: int, width: int, policy: str, generator: torch.Generator | None = None,
                  device=None) -> dict[str, torch.Tensor]:
    """Draw per-sample augmentation parameters.

    Returns:
        A dict with, per enabled policy: ``brightness``, ``saturation``, ``contrast`` (B,) floats;
        ``shift`` (B, 2) integer (dy, dx) translations; ``cutout`` (B, 2) integer top-left corners.
    """
    names = parse_policy(policy)
    params: dict[str, torch.Tensor] = {}

    def rand(*shape):
        return torch.rand(shape, generator=generator, device=device)

    def randint(low, high, *shape):
        return torch.randint(low, high, shape, generator=generator, device=device)

    if "color" in names:
        params["brightness"] = rand(batch) - 0.5  # added, in [-0.5, 0.5)
        params["saturation"] = rand(batch) * 2  # in [0, 2)
        params["contrast"] = rand(batch) + 0.5  # in [0.5, 1.5)
    if "translation" in names:
        sy, sx = int(height * TRANSLATION_RATIO + 0.5), int(width * TRANSLATION_RATIO + 0.5)
        params["shift"] = torch.stack([randint(-sy, sy + 1, batch), randint(-sx, sx + 1, batch)], dim=1)
    if "cutout" in names:
        ch, cw = int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5)
        # Corners from -size/2 to side - size/2, so the square may hang over an edge.
        params["cutout"] = torch.stack(
            [randint(0, height, batch) - ch // 2, randint(0, width, batch) - cw // 2], dim=1
        )
    return params


def apply_params(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply parameters from :func:`sample_params` to a batch ``x (B, C, H, W)``, all at once."""
    B, _, H, W = x.shape
    if "brightness" in params:
        x = x + params["brightness"].to(x.dtype).view(B, 1, 1, 1)
    if "saturation" in params:
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
        x = (x - mean) * params["saturation"].to(x.dtype).view(B, 1, 1, 1) + mean
    if "contrast" in params:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        x = (x - mean) * params["contrast"].to(x.dtype).view(B, 1, 1, 1) + mean
    if "shift" in params:
        x = translate(x, params["shift"])
    if "cutout" in params:
        x = cutout(x, params["cutout"], (int(H * CUTOUT_RATIO + 0.5), int(W * CUTOUT_RATIO + 0.5)))
    return x


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each image by integer ``shift[b] = (dy, dx)`` pixels, filling with zeros.

    ``out[b, :, i, j] = x[b, :, i - dy, j - dx]`` where that is inside the image, else 0.
    """
    B, C, H, W = x.shape
    pad_y, pad_x = int(shift[:, 0].abs().max()), int(shift[:, 1].abs().max())
    x_pad = F.pad(x, [pad_x, pad_x, pad_y, pad_y])  # (B, C, H + 2 pad_y, W + 2 pad_x)
    rows = torch.arange(H, device=x.device)[None, :] - shift[:, :1] + pad_y  # (B, H)
    cols = torch.arange(W, device=x.device)[None, :] - shift[:, 1:] + pad_x  # (B, W)
    batch = torch.arange(B, device=x.device)[:, None, None]
    out = x_pad[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last in memory


def cutout(x: torch.Tensor, corner: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero a ``size`` square per image whose top-left corner is ``corner[b] = (y0, x0)``."""
    _, _, H, W = x.shape
    ys = torch.arange(H, device=x.device)[None, :] - corner[:, :1]  # (B, H)
    xs = torch.arange(W, device=x.device)[None, :] - corner[:, 1:]  # (B, W)
    inside_y = (ys >= 0) & (ys < size[0])
    inside_x = (xs >= 0) & (xs < size[1])
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment a batch ``x (B, C, H, W)`` with fresh random parameters (differentiable in ``x``)."""
    if not parse_policy(policy):
        return x
    B, _, H, W = x.shape
    return apply_params(x, sample_params(B, H, W, policy, generator, device=x.device))


def apply_params_loop(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The same as :func:`apply_params`, one image at a time with Python slicing.

    A slow reference: the tests check the vectorised version against it, and the benchmark uses
    it as the cost of an unvectorised augmentation.
    """
    _, C, H, W = x.shape
    out = []
    for b in range(x.shape[0]):
        img = x[b]
        if "brightness" in params:
            img = img + float(params["brightness"][b])
        if "saturation" in params:
            mean = img.mean(dim=0, keepdim=True)
            img = (img - mean) * float(params["saturation"][b]) + mean
        if "contrast" in params:
            mean = img.mean()
            img = (img - mean) * float(params["contrast"][b]) + mean
        if "shift" in params:
            dy, dx = int(params["shift"][b, 0]), int(params["shift"][b, 1])
            moved = torch.zeros_like(img)
            moved[:, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
                img[:, max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
            img = moved
        if "cutout" in params:
            y0, x0 = int(params["cutout"][b, 0]), int(params["cutout"][b, 1])
            ch, cw = int(H * CUTOUT_RATIO + 0.5), int(W * CUTOUT_RATIO + 0.5)
            mask = torch.ones(1, H, W, dtype=img.dtype)
            mask[:, max(y0, 0):max(y0 + ch, 0), max(x0, 0):max(x0 + cw, 0)] = 0
            img = img * mask
        out.append(img)
    return torch.stack(out)
