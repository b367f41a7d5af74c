"""The data side of LoRA training: images decoded once, crops and flips, the data order, and the
encoders with caches (each image and caption goes through the VAE / text encoder once).

Pure functions over tensors where possible (:func:`crop_flip`, :func:`micro_batch_indices`), so the
training script's data order and augmentation can be tested in isolation.
"""

from __future__ import annotations

from pathlib import Path

import torch


def resize_shorter_side(image, resolution: int):
    """Resize a PIL image so that its shorter side is ``resolution`` (bilinear, as diffusers)."""
    from PIL import Image

    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.BILINEAR) if size != (w, h) else image.convert("RGB")


def crop_flip(image_uint8: torch.Tensor, resolution: int, top: int, left: int, flip: bool) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, R, R) float in [-1, 1]: crop at (top, left), mirror if ``flip``."""
    x = image_uint8[:, top : top + resolution, left : left + resolution].float().div(127.5).sub(1.0)
    return x.flip(-1) if flip else x


def micro_batch_indices(num_items: int, batch_size: int, micro_step: int, rank: int, world: int, seed: int):
    """Dataset indices for one process's ``micro_step``-th batch.

    Each epoch is a seeded permutation cut into ``world * batch_size`` blocks (the last partial
    block is dropped); rank ``r`` takes the ``r``-th slice of each block. A pure function, so the
    data order needs no saving to resume exactly.
    """
    per_epoch = num_items // (batch_size * world)
    epoch, position = divmod(micro_step, per_epoch)
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    start = (position * world + rank) * batch_size
    return perm[start : start + batch_size].tolist(), epoch


def _load_images(paths: list[Path], resolution: int) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """Decode every image once, shorter side resized to ``resolution``.

    Returns:
        A list of (3, H, W) uint8 tensors and each image's original (height, width), which SDXL's
        size conditioning is given.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    from dishgen.data.dataset import DatasetError

    def load(path: Path):
        with Image.open(path) as image:
            if min(image.size) < resolution:
                return path, image.size
            array = np.asarray(resize_shorter_side(image, resolution), dtype=np.uint8)
            original = (image.size[1], image.size[0])  # (height, width)
        return (torch.from_numpy(array.copy()).permute(2, 0, 1), original), None

    with ThreadPoolExecutor() as pool:
        loaded = list(pool.map(load, paths))
    small = [(p, size) for p, size in loaded if size is not None]
    if small:
        path, size = small[0]
        raise DatasetError(
            f"{len(small)} of {len(paths)} training images are smaller than resolution={resolution} "
            f"(e.g. {str(path)!r} is {size[0]}x{size[1]}); train at a lower resolution (resolution="
            f"{(min(min(s) for _, s in small) // 8) * 8}) or rebuild the dataset with larger images"
        )
    return [image for (image, _), _ in loaded], [original for (_, original), _ in loaded]


def _augment(image: torch.Tensor, resolution: int, crop: str, flip: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """Crop (and mirror) one image; returns the pixels and the crop's (top, left) as the model saw it."""
    _, h, w = image.shape
    if crop == "random":
        top = int(torch.randint(0, h - resolution + 1, ()))
        left = int(torch.randint(0, w - resolution + 1, ()))
    else:
        top, left = (h - resolution) // 2, (w - resolution) // 2
    # after a mirror the crop starts at the mirrored offset (what SDXL's crop conditioning means)
    seen_left = w - left - resolution if flip else left
    return crop_flip(image, resolution, top, left, flip), (top, seen_left)


def sdxl_time_ids(original: tuple[int, int], crop: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """SDXL's micro-conditioning for one image, shape (6,): original (h, w), crop (top, left), target (h, w).

    Sizes are in pixels as in Podell et al. (2023), section 2.2; the original size is the photo's
    before any resize, the crop offset is in the resized image, the target is the training size.
    """
    return torch.tensor([*original, *crop, *target], dtype=torch.float32)


def latent_sampler(vae, images: list[torch.Tensor], config, device, weight_dtype, originals=None):
    """``sample_latents(indices) -> (latents, time_ids)``: scaled VAE latents of ``images[indices]``,
    (B, 4, R/8, R/8), and each one's SDXL size/crop conditioning (B, 6) (:func:`sdxl_time_ids`;
    ``originals`` are the images' sizes before resizing, their resized size when not given).

    Each image gets a random flip (when ``config.random_flip``) and a fresh draw from q(z|x). With
    ``config.cache_latents`` each (image, flip) goes through the VAE once: its mean and std are kept
    and only the draw is new; without, every batch is cropped (``config.crop``) and encoded afresh.

    A cached entry is encoded alone, not with the rest of its batch: the kernels' rounding depends
    on the batch (size and neighbours), and which batch first meets an image depends on where the
    run started, so batch-encoded caches made a resumed run drift from the uninterrupted one by
    ~1e-8. Each entry is encoded once per run, so this costs little.
    """
    latent_cache: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] = {}
    scaling_factor = vae.config.scaling_factor
    target = (config.resolution, config.resolution)
    originals = originals or [tuple(image.shape[1:]) for image in images]

    def time_ids(indices, crops) -> torch.Tensor:  # (B, 6)
        return torch.stack([sdxl_time_ids(originals[i], c, target) for i, c in zip(indices, crops, strict=True)])

    def latent_moments(pixels: torch.Tensor):  # (B, 3, R, R) -> mean, std of q(z|x), (B, 4, R/8, R/8)
        with torch.no_grad():
            dist = vae.encode(pixels.to(device, dtype=weight_dtype)).latent_dist
        return dist.mean, dist.std

    def sample_latents(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        flips = (torch.rand(len(indices)) < 0.5).tolist() if config.random_flip else [False] * len(indices)
        if not config.cache_latents:
            augmented = [_augment(images[i], config.resolution, config.crop, f) for i, f in zip(indices, flips, strict=True)]
            mean, std = latent_moments(torch.stack([pixels for pixels, _ in augmented]))
            crops = [crop for _, crop in augmented]
        else:
            for i, f in zip(indices, flips, strict=True):
                if (i, f) not in latent_cache:  # alone: see the docstring
                    pixels, crop = _augment(images[i], config.resolution, "center", f)
                    mean_i, std_i = latent_moments(pixels[None])
                    latent_cache[(i, f)] = (mean_i[0], std_i[0], crop)
            entries = [latent_cache[(i, f)] for i, f in zip(indices, flips, strict=True)]
            mean = torch.stack([e[0] for e in entries])
            std = torch.stack([e[1] for e in entries])
            crops = [e[2] for e in entries]
        latents = (mean + std * torch.randn_like(mean)) * scaling_factor
        return latents, time_ids(indices, crops).to(device)

    return sample_latents


def text_embedder(tokenizer, text_encoder, device, cache_text: bool):
    """``text_embeddings(texts) -> (B, 77, cross_attention_dim)`` from the CLIP text encoder.

    With ``cache_text`` (only while the text encoder is frozen) each caption is encoded once, alone
    (as the latents in :func:`latent_sampler`, so that a resumed run computes the same embeddings).
    """
    text_cache: dict[str, torch.Tensor] = {}

    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(device)

    def text_embeddings(texts: list[str]) -> torch.Tensor:  # (B, 77, cross_attention_dim)
        if not cache_text:
            return text_encoder(tokenize(texts), return_dict=False)[0]
        for text in texts:
            if text not in text_cache:
                with torch.no_grad():
                    text_cache[text] = text_encoder(tokenize([text]), return_dict=False)[0][0]
        return torch.stack([text_cache[t] for t in texts])

    return text_embeddings


def sdxl_text_embedder(tokenizers, text_encoders, device, cache_text: bool):
    """``text_embeddings(texts) -> (hidden, pooled)`` from SDXL's two CLIP text encoders.

    ``hidden`` (B, 77, D1 + D2) is both encoders' penultimate hidden states side by side, ``pooled``
    (B, P) the second encoder's projected pooled output: what ``StableDiffusionXLPipeline.encode_prompt``
    gives the UNet. Cached per caption as :func:`text_embedder` does.
    """
    text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = [], None
        for tokenizer, text_encoder in zip(tokenizers, text_encoders, strict=True):
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(device)
            out = text_encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's: text_embeds of CLIPTextModelWithProjection
        return torch.cat(hidden, dim=-1), pooled

    def text_embeddings(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if not cache_text:
            return encode(texts)
        for text in texts:
            if text not in text_cache:
                with torch.no_grad():
                    hidden, pooled = encode([text])
                text_cache[text] = (hidden[0], pooled[0])
        return (torch.stack([text_cache[t][0] for t in texts]), torch.stack([text_cache[t][1] for t in texts]))

    return text_embeddings
