"""What the GAN trainers (cGAN, FastGAN) share in a training step, written once: the batch order
and per-step random streams (pure functions of the seed, so a resumed run repeats an
uninterrupted one exactly), the real batch, fused Adam, and the gradient average and clip.
"""

from __future__ import annotations

import torch

from dishgen.errors import DishgenError


def batch_indices(num_items: int, batch_size: int, draw: int, seed: int) -> torch.Tensor:
    """Dataset indices of the ``draw``-th batch: epochs of seeded permutations, read in order.

    A pure function of its arguments, so the data order never needs saving.
    """
    positions = draw * batch_size + torch.arange(batch_size)
    epochs = positions // num_items
    out = torch.empty(batch_size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        mask = epochs == epoch
        out[mask] = perm[positions[mask] % num_items]
    return out


def step_generator(seed: int, step: int, rank: int, device) -> torch.Generator:
    """The random generator of one (step, rank): every random draw of a step comes from it."""
    return torch.Generator(device=device).manual_seed(((seed * 1_000_003 + step) * 1_009 + rank) % 2**63)


def adam(params, lr: float, betas) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass per step instead of ~10 per tensor) where torch has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=True)
    except (RuntimeError, ValueError):  # older torch: no fused kernel for this device
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas))


def real_batch(images_uint8: torch.Tensor, flip: bool, rng: torch.Generator, memory_format) -> torch.Tensor:
    """uint8 (B, 3, R, R) -> float in [-1, 1], randomly mirrored left-right."""
    x = images_uint8.float().div_(127.5).sub_(1.0)
    if flip:
        mirror = torch.rand(x.shape[0], generator=rng, device=x.device) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x.contiguous(memory_format=memory_format)


def reduce_and_clip(net, optimizer, scaler, accelerator, grad_clip: float) -> float:
    """Average gradients over processes, unscale them, clip; returns the gradient norm."""
    params = [p for p in net.parameters() if p.grad is not None]
    if accelerator.num_processes > 1 and params:
        flat = torch.cat([p.grad.flatten() for p in params])
        flat = accelerator.reduce(flat, reduction="mean")
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    return float(norm)


def check_in_sync(accelerator, step: int, *nets) -> None:
    """Fail loudly if the processes' weights drifted apart (they must stay identical)."""
    if accelerator.num_processes == 1:
        return
    checksum = torch.stack([torch.cat([p.detach().flatten().double() for p in net.parameters()]).sum()
                            for net in nets])
    gathered = accelerator.gather(checksum[None].to(accelerator.device)).view(accelerator.num_processes, -1)
    if not torch.allclose(gathered, gathered[:1], rtol=1e-9, atol=0):
        raise DishgenError(f"step {step}: the weights differ between processes ({gathered.tolist()}); "
                           "this is a bug, please report it")


def update(net, optimizer, scaler, loss: torch.Tensor, accelerator, grad_clip: float) -> float:
    """One optimizer step of ``net`` on ``loss``: zero the gradients, backward (scaled), average
    across processes and clip (:func:`reduce_and_clip`), step. Returns the gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = reduce_and_clip(net, optimizer, scaler, accelerator, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return grad_norm


def lazy_r1(D, real: torch.Tensor, c: torch.Tensor, config, rng: torch.Generator, device) -> tuple[torch.Tensor, float]:
    """StyleGAN2's lazy R1 on freshly augmented real images ``(B, 3, R, R)``: the term to add to
    D's loss (``r1_gamma / 2 * r1_every * R1``) and R1's value for the log."""
    from dishgen.models.augment import apply_params, sample_params
    from dishgen.models.cgan import r1_penalty

    R = config.resolution
    real_aug = apply_params(real, sample_params(len(real), R, R, config.augment, rng, device)).detach().requires_grad_(True)
    r1 = r1_penalty(D(real_aug, c), real_aug)
    return (config.r1_gamma / 2) * config.r1_every * r1, float(r1.detach())


def generator_step(fake: torch.Tensor, c: torch.Tensor, config, nets, accelerator, device,
                   rng: torch.Generator, extra_loss: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """G's update in both GANs: fool the just-updated D with the same fakes (G has not changed
    since they were drawn), freshly augmented, plus ``extra_loss`` (a term on the same fakes, such
    as FastGAN's mode seeking) when given. Returns the adversarial loss and G's gradient norm."""
    from dishgen.models.augment import apply_params, sample_params
    from dishgen.models.cgan import g_hinge_loss

    R = config.resolution
    nets.D.requires_grad_(False)
    with nets.autocast():
        loss_G = g_hinge_loss(nets.D(apply_params(fake, sample_params(len(fake), R, R, config.augment, rng, device)), c))
    total = loss_G if extra_loss is None else loss_G + extra_loss
    grad_norm_G = update(nets.G, nets.opt_G, nets.scaler_G, total, accelerator, config.grad_clip)
    nets.D.requires_grad_(True)
    return loss_G, grad_norm_G
