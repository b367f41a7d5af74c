"""cGAN networks, losses, DiffAugment and EMA: pure functions and tiny networks, no files."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dishgen.models import cgan
from dishgen.models.augment import (
    apply_params,
    apply_params_loop,
    cutout,
    diff_augment,
    parse_policy,
    sample_params,
    translate,
)
from dishgen.models.layers import (
    ConditionalBatchNorm2d,
    conv3x3_avgpool,
    ema_update,
    has_spectral_norm,
    sn_conv2d,
    upsample_conv3x3,
    upsample_nearest2x,
)
from dishgen.train.cgan import batch_indices, step_generator


def tiny_config(resolution=32, **kw):
    return cgan.CGANConfig(resolution=resolution, z_dim=8, c_dim=12, cond_dim=8, base_channels=4,
                           max_channel_mult=4, **kw)


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_generator_and_discriminator_shapes(resolution):
    config = tiny_config(resolution)
    G, D = cgan.Generator(config), cgan.Discriminator(config)
    z, c = torch.randn(3, 8), torch.randn(3, 12)
    x = G(z, c)
    assert x.shape == (3, 3, resolution, resolution)
    assert x.abs().max() <= 1
    assert len(G.blocks) == config.num_blocks == len(D.blocks)
    assert D(x, c).shape == (3,)


def test_channels_follow_resolution_with_a_cap():
    config = cgan.CGANConfig(resolution=128, base_channels=32, max_channel_mult=8)
    assert [config.channels(s) for s in (128, 64, 32, 16, 8, 4)] == [32, 64, 128, 256, 256, 256]
    with pytest.raises(ValueError, match="power of two"):
        cgan.CGANConfig(resolution=48).validate()


def test_every_discriminator_layer_is_spectrally_normalised():
    D = cgan.Discriminator(tiny_config(32))
    layers = cgan.spectral_layers(D)
    assert len(layers) >= 3 * len(D.blocks) + 2  # 3 convs per block, output and embedding
    assert all(has_spectral_norm(m) for _, m in layers), [n for n, m in layers if not has_spectral_norm(m)]
    # Spectral norm bounds each layer: the largest singular value of the used weight is ~1.
    D.train()
    for _ in range(30):  # power iterations happen on forward passes
        D(torch.randn(2, 3, 32, 32), torch.randn(2, 12))
    weight = D.out.weight.detach()
    assert torch.linalg.matrix_norm(weight, ord=2) == pytest.approx(1.0, abs=0.05)


def test_generator_output_depends_on_text():
    torch.manual_seed(0)
    G = cgan.Generator(tiny_config(16))
    for p in G.parameters():  # CBN starts as identity: give the text a say
        torch.nn.init.normal_(p, std=0.2) if p.ndim > 1 else None
    G.eval()
    z = torch.randn(1, 8).repeat(2, 1)
    x = G(z, torch.randn(2, 12))
    assert (x[0] - x[1]).abs().max() > 1e-3


def test_conditional_batchnorm_starts_as_plain_batchnorm():
    cbn = ConditionalBatchNorm2d(4, 6)
    x = torch.randn(8, 4, 5, 5) * 3 + 2
    out = cbn(x, torch.randn(8, 6))
    torch.testing.assert_close(out, torch.nn.functional.batch_norm(x, None, None, training=True))


def test_hinge_and_mismatch_losses():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    loss_real, loss_fake = cgan.d_hinge_loss(real, fake)
    assert loss_real.item() == pytest.approx((0 + 0.5 + 2) / 3)
    assert loss_fake.item() == pytest.approx((0 + 1 + 2) / 3)
    assert cgan.g_hinge_loss(fake).item() == pytest.approx(1 / 3)
    differs = torch.tensor([True, False, True])
    # Rows whose shuffled caption equals the true one are left out.
    assert cgan.mismatch_loss(torch.tensor([0.0, 5.0, -3.0]), differs).item() == pytest.approx(0.5)


def test_r1_penalty_is_the_squared_input_gradient():
    a = torch.randn(1, 3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (a * x).sum(dim=(1, 2, 3)) + ((x**2).sum(dim=(1, 2, 3)) * 0)  # D(x) = <a, x>
    penalty = cgan.r1_penalty(logits, x)
    assert penalty.item() == pytest.approx(a.square().sum().item(), rel=1e-5)
    assert penalty.requires_grad  # differentiable, so it can train D


def test_vectorised_augment_matches_the_per_image_loop():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 16, 16)
    params = sample_params(12, 16, 16, "color,translation,cutout", gen)
    torch.testing.assert_close(apply_params(x, params), apply_params_loop(x, params))


def test_augment_is_differentiable_and_random_per_image():
    x = torch.randn(6, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(0))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    same = diff_augment(x.detach()[:1].repeat(6, 1, 1, 1), "translation,cutout", torch.Generator().manual_seed(0))
    assert not torch.equal(same[0], same[1])
    assert diff_augment(x, "") is x
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        parse_policy("color,rotate")


def test_translate_and_cutout_semantics():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    moved = translate(x, torch.tensor([[1, -1]]))  # down 1, left 1
    assert moved[0, 0, 0].tolist() == [0, 0, 0, 0]
    assert moved[0, 0, 1].tolist() == [1, 2, 3, 0]
    holed = cutout(torch.ones(1, 1, 4, 4), torch.tensor([[-1, 2]]), (2, 2))
    assert holed[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_ema_tracks_weights_and_batchnorm_buffers():
    torch.manual_seed(0)
    G = cgan.Generator(tiny_config(16))
    G_ema = copy.deepcopy(G).eval()
    G.train()
    for _ in range(3):
        G(torch.randn(4, 8), torch.randn(4, 12))  # updates running statistics
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in G_ema.state_dict().items()}
    ema_update(G_ema, G, decay=0.75)
    state, source = G_ema.state_dict(), G.state_dict()
    for key, value in state.items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, 0.75 * before[key] + 0.25 * source[key])
        else:
            assert torch.equal(value, source[key])  # batch counters are copied
    mean_key = "out_norm.running_mean"
    assert not torch.equal(state[mean_key], before[mean_key])


def test_batch_indices_cover_each_epoch_and_are_pure():
    first = torch.cat([batch_indices(10, 4, draw, seed=3) for draw in range(5)])  # 20 = 2 epochs
    assert sorted(first[:10].tolist()) == list(range(10))
    assert sorted(first[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 4, 2, seed=3), first[8:12])
    assert not torch.equal(batch_indices(10, 4, 0, seed=4), first[:4])


def test_step_generator_depends_on_seed_step_and_rank():
    draws = {(s, t, r): torch.rand(3, generator=step_generator(s, t, r, "cpu")) for s in (0, 1) for t in (1, 2)
             for r in (0, 1)}
    values = [tuple(v.tolist()) for v in draws.values()]
    assert len(set(values)) == len(values)
    assert torch.equal(draws[(0, 1, 0)], torch.rand(3, generator=step_generator(0, 1, 0, "cpu")))


def test_truncation_scales_noise():
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    full = cgan.truncated_noise((4, 8), 1.0, gen())
    torch.testing.assert_close(cgan.truncated_noise((4, 8), 0.5, gen()), full * 0.5)
    with pytest.raises(ValueError, match="truncation"):
        cgan.truncated_noise((1, 1), -1)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_folded_convolutions_equal_the_textbook_layers(memory_format):
    """The blocks' fast paths compute upsample->conv3 and conv3->avgpool exactly (to rounding),
    with the same gradients for weights and input, and R1's double backward still works."""
    torch.manual_seed(0)
    conv = sn_conv2d(5, 7, 3, padding=1)  # spectral norm: the weight is read through it
    x = torch.randn(2, 5, 6, 6).contiguous(memory_format=memory_format).requires_grad_(True)
    cases = [
        (upsample_conv3x3, lambda t: conv(F.interpolate(t, scale_factor=2, mode="nearest")), (2, 7, 12, 12)),
        (conv3x3_avgpool, lambda t: F.avg_pool2d(conv(t), 2), (2, 7, 3, 3)),
    ]
    conv.eval()  # freeze the power iteration so both paths see one weight
    for fast, slow, shape in cases:
        ours, reference = fast(x, conv), slow(x)
        assert ours.shape == reference.shape == shape
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
        grads = [torch.autograd.grad(y.square().sum(), (x, conv.parametrizations.weight.original), create_graph=True)
                 for y in (fast(x, conv), slow(x))]
        for ours_grad, reference_grad in zip(*grads, strict=True):
            torch.testing.assert_close(ours_grad, reference_grad, rtol=1e-4, atol=1e-4)
        # second order (R1): gradient of the input-gradient norm w.r.t. the weight
        second = [torch.autograd.grad(g[0].square().sum(), conv.parametrizations.weight.original)[0] for g in grads]
        torch.testing.assert_close(second[0], second[1], rtol=1e-4, atol=1e-4)


def test_folded_convolutions_refuse_other_kernels():
    with pytest.raises(ValueError, match="3x3 conv with padding 1"):
        upsample_conv3x3(torch.zeros(1, 2, 4, 4), torch.nn.Conv2d(2, 2, 1))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_upsampling_under_compile_equals_interpolate(memory_format):
    """The G shortcut's upsampling: interpolate eagerly, a broadcast inside torch.compile (whose
    backward compiles to a sum); both give interpolate's values, gradients and layout."""
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=memory_format).requires_grad_(True)
    weights = torch.randn(2, 3, 8, 10)
    reference = F.interpolate(x, scale_factor=2, mode="nearest")
    (reference_grad,) = torch.autograd.grad((reference * weights).sum(), x)
    for fn in (upsample_nearest2x, torch.compile(upsample_nearest2x, backend="aot_eager", fullgraph=True)):
        y = fn(x)
        assert torch.equal(y, reference)
        assert y.is_contiguous(memory_format=memory_format)
        (grad,) = torch.autograd.grad((y * weights).sum(), x)
        torch.testing.assert_close(grad, reference_grad)
