"""The conditional VAE network and its objective (no files, no training script)."""

from __future__ import annotations

import pytest
import torch

from dishgen.models import cvae as M


def tiny(resolution: int = 64, **kw) -> M.CVAEModelConfig:
    return M.CVAEModelConfig(resolution=resolution, z_dim=8, c_dim=6, cond_dim=8, base_channels=4,
                             max_channels=16, **kw)


class FakeEncoder:
    """A frozen text encoder stand-in: a fixed vector per distinct caption."""

    id = "fake"
    dim = 6

    def encode(self, texts):
        return torch.stack([torch.sin(torch.arange(6.0) * (1 + sum(map(ord, t)) % 7)) for t in texts])


@pytest.mark.parametrize("resolution, levels", [(64, 4), (128, 5), (256, 6)])
def test_all_sizes_build_and_run(resolution, levels):
    torch.manual_seed(0)
    config = tiny(resolution)
    model = M.CVAE(config)
    assert config.sizes[0] == resolution // 2 and config.sizes[-1] == 4 and len(config.sizes) == levels
    assert len(model.decoder.blocks) == levels  # depth follows the size
    x = torch.rand(2, 3, resolution, resolution) * 2 - 1
    x_hat, mu, logvar = model(x, torch.randn(2, 6), torch.randn(2, 8))
    assert x_hat.shape == x.shape and mu.shape == logvar.shape == (2, 8)
    assert torch.isfinite(x_hat).all()
    x_hat.mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "film" not in n)


def test_unsupported_resolution_is_refused():
    with pytest.raises(ValueError, match="resolution=96"):
        M.CVAE(tiny(96))


def test_condition_changes_the_output():
    torch.manual_seed(0)
    model = M.CVAE(tiny()).eval()
    for film in (m for m in model.modules() if isinstance(m, M.FiLM)):
        torch.nn.init.normal_(film.proj.weight, std=0.5)  # FiLM starts as the identity
    z = torch.randn(1, 8)
    a = model.decoder(z, model.condition(torch.ones(1, 6)))
    b = model.decoder(z, model.condition(-torch.ones(1, 6)))
    assert (a - b).abs().mean() > 1e-3


def test_loss_falls_on_a_fixed_batch(sample_images):
    from dishgen.images_tensor import load_images_uint8

    torch.manual_seed(0)
    model = M.CVAE(tiny())
    x = load_images_uint8(sorted(sample_images.glob("*/*.jpg"))[:4], 64).float() / 127.5 - 1  # real photos
    c, eps = torch.randn(4, 6), torch.randn(4, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        x_hat, mu, logvar = model(x, c, eps)
        loss = (M.reconstruction_error(x, x_hat).mean() + M.kl_penalty(M.kl_divergence(mu, logvar))) / x[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_kl_and_free_bits_and_active_units():
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    assert torch.equal(M.kl_divergence(mu, logvar), torch.zeros(3, 4))
    mu[:, 0] = 2.0  # KL = mu^2 / 2 = 2 nats in dimension 0
    torch.testing.assert_close(M.kl_divergence(mu, logvar)[:, 0], torch.full((3,), 2.0))
    kl = M.kl_divergence(mu, logvar)
    assert M.kl_penalty(kl).item() == pytest.approx(2.0)
    # free bits: the three unused dimensions cost 0.5 each, the used one its own 2.0
    assert M.kl_penalty(kl, free_bits=0.5).item() == pytest.approx(3.5)
    kl.requires_grad_(True)
    M.kl_penalty(kl, free_bits=0.5).backward()
    assert kl.grad[:, 1:].abs().sum() == 0 and kl.grad[:, 0].abs().sum() > 0
    varied = torch.zeros(10, 4)
    varied[:, 2] = torch.linspace(-1, 1, 10)
    assert M.active_units(varied) == 1
    assert M.reconstruction_error(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2), "l1").item() == 12.0
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        M.reconstruction_error(torch.zeros(1), torch.zeros(1), "ssim")


def test_generate_uses_no_image_and_is_repeatable():
    torch.manual_seed(0)
    model = M.CVAE(tiny()).eval()
    c = FakeEncoder().encode(["sarma", "burek"])  # the model takes caption vectors, as the GANs' G does

    def no_images(*args, **kwargs):
        raise AssertionError("generation must not run the image encoder")

    model.encoder.forward = no_images
    a = model.generate(c, num_samples=3, seed=7)
    assert a.shape == (6, 3, 64, 64) and a.min() >= -1 and a.max() <= 1
    b = model.generate(c, num_samples=3, seed=7, batch_size=2)
    torch.testing.assert_close(a, b)  # the seed fixes the images whatever the batch size
    assert not torch.allclose(a, model.generate(c, num_samples=3, seed=8))
    cold = model.generate(c[:1], num_samples=2, seed=1, temperature=0.0)
    torch.testing.assert_close(cold[0], cold[1])  # temperature 0: the prior mean, one image per caption


def test_reconstruct_uses_posterior_mean():
    torch.manual_seed(0)
    model = M.CVAE(tiny()).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    c = FakeEncoder().encode(["sarma", "burek"])
    r1 = model.reconstruct(x, c)
    r2 = model.reconstruct(x, c)
    assert r1.shape == x.shape and torch.equal(r1, r2)


def test_model_takes_no_captions_without_the_deprecated_encoder():
    model = M.CVAE(tiny())
    with pytest.raises(ValueError, match="takes caption vectors, not captions"):
        model.generate(["sarma"])


def test_deprecated_attached_encoder_still_serves_captions(capsys):
    """The old call (captions into the model) works until 0.2.0, says so once, and matches the new one."""
    from dishgen import deprecation

    deprecation._said.clear()
    torch.manual_seed(0)
    model = M.CVAE(tiny()).eval()
    model.attach_text_encoder(FakeEncoder())
    old = model.generate(["sarma", "burek"], num_samples=2, seed=7)
    new = model.generate(FakeEncoder().encode(["sarma", "burek"]), num_samples=2, seed=7)
    assert torch.equal(old, new)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(model.reconstruct(x, ["sarma", "burek"]), model.reconstruct(x, FakeEncoder().encode(["sarma", "burek"])))
    err = capsys.readouterr().err
    assert "CVAE.attach_text_encoder is deprecated" in err and "until dishgen 0.2.0" in err
    assert err.count("passing captions to CVAE.generate/reconstruct is deprecated") == 1
    wrong = FakeEncoder()
    wrong.dim = 5
    with pytest.raises(ValueError, match="5-d vectors"):
        model.attach_text_encoder(wrong)


def test_schedules_and_augmentation_are_pure_functions():
    from dishgen.train.cvae import augment, epoch_order, kl_weight_at, lr_factor, step_generator

    # KL annealing: 0 -> beta linearly, then flat
    assert [kl_weight_at(s, 0.5, 10) for s in (0, 5, 10, 50)] == [0.0, 0.25, 0.5, 0.5]
    assert kl_weight_at(0, 0.5, 0) == 0.5
    # LR: linear warm-up, cosine to min_ratio at max_steps
    kw = {"warmup_steps": 10, "max_steps": 110, "schedule": "cosine", "min_ratio": 0.1}
    assert lr_factor(0, **kw) == pytest.approx(0.1) and lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(0.55) and lr_factor(110, **kw) == pytest.approx(0.1)
    assert lr_factor(60, **{**kw, "schedule": "constant"}) == 1.0
    # data order: a permutation per epoch, the same for the same (seed, epoch)
    order = epoch_order(10, seed=0, epoch=3)
    assert sorted(order.tolist()) == list(range(10))
    assert torch.equal(order, epoch_order(10, 0, 3)) and not torch.equal(order, epoch_order(10, 0, 4))
    # augmentation: repeatable from the step's generator; flips mirror; shifts keep the size
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    a = augment(x, step_generator(0, 5), hflip=True, translate=0.25)
    assert a.shape == x.shape and torch.equal(a, augment(x, step_generator(0, 5), hflip=True, translate=0.25))
    assert not torch.equal(a, augment(x, step_generator(0, 6), hflip=True, translate=0.25))
    flipped = [augment(x, step_generator(0, s), hflip=True, translate=0.0) for s in range(8)]
    assert any(torch.equal(f[0], x[0].flip(2)) for f in flipped) and any(torch.equal(f[0], x[0]) for f in flipped)
    assert torch.equal(augment(x, step_generator(0, 1), hflip=False, translate=0.0), x)
