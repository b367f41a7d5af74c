"""The data side of LoRA training: images decoded once, crops and flips, the data order, and the
encoders with caches (each image and caption goes through the VAE / text encoder once).

Pure functions over tensors where possible (:func:`crop_flip`, :func:`micro_batch_indices`), so the
training script's data order and augmentation can be tested in isolation.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch


def resize_shorter_side(image, resolution: int):
    """Resize a PIL image so that its shorter side is ``resolution`` (bilinear, as diffusers)."""
    from PIL import Image

    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.BILINEAR) if size != (w, h) else image.convert("RGB")


def crop_flip(image_uint8: torch.Tensor, resolution: int | tuple[int, int], top: int, left: int,
              flip: bool) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, h, w) float in [-1, 1]: crop ``resolution`` (a side, or (h, w)) at
    (top, left), mirror if ``flip``."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    x = image_uint8[:, top : top + h, left : left + w].float().div(127.5).sub(1.0)
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


# -- aspect-ratio buckets ---------------------------------------------------------------------------


def bucket_sizes(resolution: int, step: int, max_aspect: float) -> list[tuple[int, int]]:
    """Training sizes (height, width) of about ``resolution**2`` pixels, sides multiples of ``step``.

    For each width the tallest height that keeps the area at most ``resolution**2`` (as kohya's
    sd-scripts and SimpleTuner make their buckets); aspect ratios beyond ``max_aspect`` are left out.
    The square ``(resolution, resolution)`` is always one of them when ``resolution`` is a multiple of
    ``step``.
    """
    area = resolution * resolution
    sizes = set()
    for width in range(step, area // step + 1, step):
        height = (area // width) // step * step
        if height >= step and max(width, height) / min(width, height) <= max_aspect:
            sizes |= {(height, width), (width, height)}  # both orientations, so tall and wide match
    return sorted(sizes)


def assign_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket (height, width) whose aspect ratio is nearest (in log scale) to ``size``'s (h, w);
    among equals, the largest."""
    aspect = math.log(size[1] / size[0])
    return min(buckets, key=lambda b: (abs(math.log(b[1] / b[0]) - aspect), -b[0] * b[1]))


def bucket_batch_indices(buckets_of: list[int], batch_size: int, micro_step: int, rank: int, world: int,
                         seed: int) -> tuple[list[int], int]:
    """Dataset indices for one process's ``micro_step``-th batch, all from one bucket.

    Each epoch, every bucket's images are permuted (seeded) and cut into ``world * batch_size``
    blocks (a bucket's last partial block is dropped), and the blocks are shuffled; rank ``r`` takes
    the ``r``-th slice of each block, so all ranks train on the same bucket at each step. A pure
    function of its arguments, like :func:`micro_batch_indices`.

    Args:
        buckets_of: the bucket number of each dataset item.
        batch_size: images per process and micro-step.
        micro_step: the micro-step counted from the start of training.
        rank, world: this process and the number of processes.
        seed: the run's seed.

    Returns:
        The indices and the epoch.
    """
    block = batch_size * world
    members: dict[int, list[int]] = {}
    for i, b in enumerate(buckets_of):
        members.setdefault(b, []).append(i)
    per_epoch = sum(len(m) // block for m in members.values())
    if per_epoch == 0:
        from dishgen.data.dataset import DatasetError

        largest = max(len(m) for m in members.values())
        raise DatasetError(f"no aspect-ratio bucket holds a whole batch: the largest has {largest} images, a "
                           f"batch needs batch_size={batch_size} x {world} processes = {block}; lower batch_size, "
                           "raise max_bucket_aspect, or set aspect_buckets=false")
    epoch, position = divmod(micro_step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    blocks = []
    for b in sorted(members):
        items = members[b]
        perm = torch.randperm(len(items), generator=generator).tolist()
        blocks += [[items[j] for j in perm[k * block : (k + 1) * block]] for k in range(len(items) // block)]
    order = torch.randperm(len(blocks), generator=generator).tolist()
    chosen = blocks[order[position]]
    return chosen[rank * batch_size : (rank + 1) * batch_size], epoch


def _load_images(paths: list[Path], resolution: int, buckets: list[tuple[int, int]] | None = None,
                 ) -> tuple[list[torch.Tensor], list[tuple[int, int]], list[tuple[int, int]], list[int], list[dict]]:
    """Decode every image once: shorter side resized to ``resolution``, or, with ``buckets``, resized
    to just cover its bucket (:func:`assign_bucket`), keeping the aspect ratio. An image that cannot
    be read is skipped with its reason (:func:`dishgen.images_tensor.decode_each`).

    Returns:
        For the images read: a list of (3, H, W) uint8 tensors, each image's (height, width) as
        decoded (before the resize), and each image's training size (height, width): its bucket,
        or the square; then the indices of the images read and the skipped ones' records.
    """
    import numpy as np
    from PIL import Image

    from dishgen.data.dataset import DatasetError
    from dishgen.images_tensor import decode_each

    def load(path: Path):
        with Image.open(path) as image:
            original = (image.size[1], image.size[0])  # (height, width)
            target = assign_bucket(original, buckets) if buckets else (resolution, resolution)
            scale = max(target[0] / original[0], target[1] / original[1])
            if scale > 1:
                return path, image.size
            if buckets:  # cover the bucket, then crop the rest
                size = (max(target[1], round(original[1] * scale)), max(target[0], round(original[0] * scale)))
                resized = image.convert("RGB").resize(size, Image.Resampling.BILINEAR) if size != image.size \
                    else image.convert("RGB")
            else:
                resized = resize_shorter_side(image, resolution)
            array = np.asarray(resized, dtype=np.uint8)
        return (torch.from_numpy(array.copy()).permute(2, 0, 1), original, target), None

    results, skipped = decode_each(paths, load)
    kept = [i for i, r in enumerate(results) if r is not None]
    loaded = [results[i] for i in kept]
    small = [(p, size) for p, size in loaded if size is not None]
    if small:
        path, size = small[0]
        raise DatasetError(
            f"{len(small)} of {len(paths)} training images are smaller than {'their bucket at ' if buckets else ''}"
            f"resolution={resolution} "
            f"(e.g. {str(path)!r} is {size[0]}x{size[1]}); train at a lower resolution (resolution="
            f"{(min(min(s) for _, s in small) // 8) * 8}) or rebuild the dataset with larger images"
        )
    return ([item[0] for item, _ in loaded], [item[1] for item, _ in loaded], [item[2] for item, _ in loaded],
            kept, skipped)


def _augment(image: torch.Tensor, target: tuple[int, int], crop: str, flip: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """Crop ``target`` (h, w) from one image (and mirror it); returns the pixels and the crop's
    (top, left) as the model saw it."""
    _, h, w = image.shape
    th, tw = target
    if crop == "random":
        top = int(torch.randint(0, h - th + 1, ()))
        left = int(torch.randint(0, w - tw + 1, ()))
    else:
        top, left = (h - th) // 2, (w - tw) // 2
    # after a mirror the crop starts at the mirrored offset (what SDXL's crop conditioning means)
    seen_left = w - left - tw if flip else left
    return crop_flip(image, target, top, left, flip), (top, seen_left)


def sdxl_time_ids(original: tuple[int, int], crop: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """SDXL's micro-conditioning for one image, shape (6,): original (h, w), crop (top, left), target (h, w).

    Sizes are in pixels as in Podell et al. (2023), section 2.2; the original size is the photo's
    before any resize, the crop offset is in the resized image, the target is the training size.
    """
    return torch.tensor([*original, *crop, *target], dtype=torch.float32)


def latent_sampler(vae, images: list[torch.Tensor], config, device, weight_dtype, originals=None, targets=None):
    """``sample_latents(indices) -> (latents, time_ids)``: scaled VAE latents of ``images[indices]``,
    (B, 4, h/8, w/8), and each one's SDXL size/crop conditioning (B, 6) (:func:`sdxl_time_ids`;
    ``originals`` are the images' sizes before resizing, their resized size when not given;
    ``targets`` each image's training (h, w), its aspect-ratio bucket, square when not given; one
    batch shares one bucket).

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
    originals = originals or [tuple(image.shape[1:]) for image in images]
    targets = targets or [(config.resolution, config.resolution)] * len(images)

    def time_ids(indices, crops) -> torch.Tensor:  # (B, 6)
        return torch.stack([sdxl_time_ids(originals[i], c, targets[i]) for i, c in zip(indices, crops, strict=True)])

    def latent_moments(pixels: torch.Tensor):  # (B, 3, R, R) -> mean, std of q(z|x), (B, 4, R/8, R/8)
        with torch.no_grad():
            dist = vae.encode(pixels.to(device, dtype=weight_dtype)).latent_dist
        return dist.mean, dist.std

    def sample_latents(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        flips = (torch.rand(len(indices)) < 0.5).tolist() if config.random_flip else [False] * len(indices)
        if not config.cache_latents:
            augmented = [_augment(images[i], targets[i], config.crop, f) for i, f in zip(indices, flips, strict=True)]
            mean, std = latent_moments(torch.stack([pixels for pixels, _ in augmented]))
            crops = [crop for _, crop in augmented]
        else:
            for i, f in zip(indices, flips, strict=True):
                if (i, f) not in latent_cache:  # alone: see the docstring
                    pixels, crop = _augment(images[i], targets[i], "center", f)
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
