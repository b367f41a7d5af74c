"""Conversions between PIL images and tensors in [-1, 1] (the GAN/VAE convention)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def pil_to_tensor(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float tensor in [-1, 1], resized to ``size`` if given."""
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) or (3, H, W) tensor in [-1, 1] -> list of RGB PIL images."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    array = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, "RGB") for a in array]


def load_images_uint8(paths, size: int, workers: int | None = None) -> torch.Tensor:
    """Decode and resize images to a (N, 3, size, size) uint8 tensor (kept in memory for training)."""
    from concurrent.futures import ThreadPoolExecutor

    def load(path):
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(load, list(paths)))
    if not arrays:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
