"""FastGAN networks: shapes, caption conditioning, skip-layer excitation, D's reconstruction, and
no checkerboard (the Nyquist energy of G's output) where a stride-2 transposed conv makes one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dishgen.models import fastgan
from dishgen.models.fastgan import Discriminator, FastGANConfig, Generator, GLUUpBlock, quarter

TINY = dict(z_dim=16, cond_dim=16, g_channels=8, d_channels=8, max_channels=64, decoder_channels=16)


def nyquist_ratio(images: torch.Tensor) -> float:
    """Mean power on the Nyquist row and column of the 2-D spectrum over the mean power of all
    frequencies (images ``(B, C, H, W)``, each channel's mean removed). White noise gives about 1,
    a smooth image much less, a 2-pixel checkerboard much more."""
    x = images.double() - images.double().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square().mean(dim=(0, 1))  # (H, W)
    n = power.shape[-1] // 2
    return float(torch.cat([power[n, :], power[:, n]]).mean() / power.mean())


def test_nyquist_ratio_tells_noise_smooth_and_checkerboard_apart():
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1  # (32, 32) of +-1
    smooth = F.interpolate(noise[..., :8, :8], size=32, mode="bilinear", align_corners=False)
    assert 0.7 < nyquist_ratio(noise) < 1.3
    assert nyquist_ratio(smooth) < 0.05
    assert nyquist_ratio(0.1 * noise + checker.expand(4, 3, 32, 32)) > 20


class TransposedConvGenerator(nn.Module):
    """The pattern FastGAN avoids: stride-2 3x3 transposed convs (uneven overlap)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 32 * 4 * 4)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(32, 32, 3, 2, 1, output_padding=1) for _ in range(3))
        self.to_rgb = nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, z):
        h = self.fc(z).view(-1, 32, 4, 4)
        for up in self.ups:
            h = F.relu(up(h))
        return torch.tanh(self.to_rgb(h))


def warmed_up(G: Generator) -> Generator:
    """G in eval mode with batch-norm statistics of a few batches (the defaults, mean 0 and
    variance 1, leave an untrained G's eval output almost flat, which says nothing)."""
    for module in G.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches seen
    with torch.no_grad():
        for _ in range(4):
            G.train()(torch.randn(8, G.z_dim), torch.randn(8, G.c_dim))
    return G.eval()


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_generator_output_has_no_checkerboard_at_init(resolution):
    torch.manual_seed(0)
    G = warmed_up(Generator(FastGANConfig(resolution=resolution, **TINY)))
    z, c = torch.randn(8, 16), torch.randn(8, 384)
    with torch.no_grad():
        train_mode = G.train()(z, c)
        eval_mode = G.eval()(z, c)
        constant = G(torch.zeros(8, 16), torch.zeros(8, 384))  # a constant input: any pattern is G's own
    for images in (train_mode, eval_mode, constant):
        assert nyquist_ratio(images) < 0.5  # measured 0.001-0.16
    # The same measure flags the transposed-conv generator (measured 4.5).
    torch.manual_seed(0)
    with torch.no_grad():
        assert nyquist_ratio(TransposedConvGenerator()(torch.randn(8, 16))) > 2


def test_up_block_is_nearest_upsampling_then_conv():
    torch.manual_seed(0)
    block = GLUUpBlock(8, 4, cond_dim=16, convs=1).eval()
    x, cond = torch.randn(2, 8, 5, 5), torch.randn(2, 16)
    expected = F.glu(block.norm1(block.conv1(F.interpolate(x, scale_factor=2, mode="nearest")), cond), dim=1)
    torch.testing.assert_close(block(x, cond), expected, atol=1e-5, rtol=1e-5)


def test_fused_eval_normalisation_equals_batch_norm_then_caption_affine():
    torch.manual_seed(0)
    G = warmed_up(Generator(FastGANConfig(resolution=32, **TINY)))
    block = G.blocks[0]
    for layer in (block.norm1.gamma, block.norm1.beta):  # a trained CBN: non-zero caption terms
        nn.init.normal_(layer.weight, std=0.1)
    x, cond = torch.randn(3, block.conv1.out_channels, 6, 6), torch.randn(3, 16)
    torch.testing.assert_close(fastgan.norm_glu(block.norm1, x, cond), F.glu(block.norm1(x, cond), dim=1),
                               atol=1e-5, rtol=1e-5)


def test_shapes_ranges_and_skip_layer_excitation_pairs():
    config = FastGANConfig(resolution=128, **TINY)
    assert config.sle_pairs == [(4, 64), (8, 128)]  # as in the paper at 128 px
    assert FastGANConfig(resolution=32).sle_pairs == [(4, 16), (4, 32)]
    G, D = Generator(config), Discriminator(config)
    z, c = torch.randn(3, 16), torch.randn(3, 384)
    x = G(z, c)
    assert x.shape == (3, 3, 128, 128) and x.abs().max() <= 1
    h, maps = D.features(x)
    assert h.shape == (3, config.d_width(8), 8, 8) and set(maps) == {16, 8}
    whole, part = D.reconstruct(maps, 3)
    assert whole.shape == part.shape == (3, 3, 64, 64)
    assert D(x, c).shape == (3, 25)  # a 5x5 map of patch logits
    # The excitation gates are trained: the loss reaches them.
    D(x, c).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.sle.parameters())


def test_discriminator_keeps_its_features_apart_however_narrow():
    """The first D of this family (spectrally normalised, no batch-norm, 16 channels at 128 px)
    shrank its activations block by block: pooled features hardly differed between images and
    D sat at chance. FastGAN's batch-norm blocks keep every block at unit scale."""
    torch.manual_seed(0)
    D = Discriminator(FastGANConfig(resolution=128, d_channels=4, max_channels=64, decoder_channels=8))
    x = torch.rand(8, 3, 128, 128) * 2 - 1
    h, maps = D.features(x)
    for size, m in maps.items():
        assert m.std() > 0.3, f"{size}x{size} features collapsed (std {m.std():.3f})"
    # Pooled features differ between images by far more than float noise.
    assert h.mean(dim=(2, 3)).std(dim=0).mean() > 0.05
    assert all(isinstance(b, fastgan.DownBlockComp) for b in D.blocks) and len(D.blocks) == 4  # 128 -> 8


def test_captions_change_the_image_and_noise_varies_it():
    torch.manual_seed(0)
    G = warmed_up(Generator(FastGANConfig(resolution=32, **TINY)))
    z, c = torch.randn(2, 16), torch.randn(2, 384)
    with torch.no_grad():
        same_z = G(z[:1].expand(2, -1), c)
        same_c = G(z, c[:1].expand(2, -1))
    assert (same_z[0] - same_z[1]).abs().mean() > 0.01
    assert (same_c[0] - same_c[1]).abs().mean() > 0.01


def test_quarters_and_reconstruction_loss():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert quarter(x, 0).flatten().tolist() == [0, 1, 4, 5]
    assert quarter(x, 3).flatten().tolist() == [10, 11, 14, 15]
    real = torch.rand(2, 3, 8, 8) * 2 - 1
    perfect = fastgan.reconstruction_loss(F.avg_pool2d(real, 2), quarter(real, 1), real, 1)
    assert perfect == 0
    wrong_part = fastgan.reconstruction_loss(F.avg_pool2d(real, 2), quarter(real, 2), real, 1)
    assert wrong_part > 0.1


@pytest.mark.parametrize("bad", [dict(resolution=16), dict(resolution=96), dict(g_channels=0)])
def test_config_validation(bad):
    with pytest.raises(ValueError, match="must be"):
        FastGANConfig(**bad).validate()


def test_minibatch_std_shows_a_collapsed_batch():
    varied = torch.randn(8, 6, 5, 5)
    collapsed = torch.randn(1, 6, 5, 5).expand(8, -1, -1, -1) + 1e-3 * torch.randn(8, 6, 5, 5)
    assert fastgan.minibatch_std(varied).shape == (8, 1, 5, 5)
    assert fastgan.minibatch_std(collapsed).max() < 0.01 < 0.5 < fastgan.minibatch_std(varied).min()
    assert fastgan.minibatch_std(torch.randn(3, 6, 5, 5)).shape == (3, 1, 5, 5)  # batch not a multiple of 4


def test_noise_injection_starts_as_the_identity_and_stays_a_function_of_z():
    torch.manual_seed(0)
    plain = warmed_up(Generator(FastGANConfig(resolution=32, **TINY)))
    noisy = Generator(FastGANConfig(resolution=32, noise=True, **TINY)).eval()
    missing, unexpected = noisy.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".noise" in k for k in missing)
    assert noisy.noise_sizes == [8, 8, 16, 32, 32]  # every conv from 8x8 up: two-conv blocks take two maps
    z, c = torch.randn(3, 16), torch.randn(3, 384)
    with torch.no_grad():
        assert torch.equal(noisy(z, c), plain(z, c))  # zero weights: the trained generator is unchanged
        for name, p in noisy.named_parameters():
            if ".noise" in name:
                p.fill_(0.5)
        batch = noisy(z, c)
        assert torch.allclose(noisy(z[1:2], c[1:2]), batch[1:2], atol=1e-5)  # the maps follow z, not the batch
        assert torch.equal(noisy(z, c), batch)
        fresh = noisy(z, c, noisy.draw_noise(3, torch.Generator().manual_seed(1)))
    assert (fresh - batch).abs().mean() > 1e-3  # other maps, other detail
    # Trained from zero: the loss reaches the noise weights.
    noisy.train()
    noisy(z, c).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in noisy.named_parameters() if ".noise" in n)


def test_bilinear_upsampling_leaves_no_tile_edges_on_the_pixel_grid():
    """Nearest upsampling turns an 8x8 map into 16x16 tiles at 128 px whose edges all lie on the
    same rows and columns: the plaid every trained nearest-upsampling generator grew. Bilinear
    upsampling spreads each step over the tile instead."""
    torch.manual_seed(0)
    coarse = torch.randn(2, 4, 8, 8)

    def chain(mode: str) -> torch.Tensor:
        block = GLUUpBlock(4, 2, cond_dim=4, upsample=mode)
        with torch.no_grad():
            block.conv1.weight.zero_()
            block.conv1.weight[:, :, 1, 1] = torch.eye(4)  # a 1x1 identity: only the upsampling acts
            x = coarse
            for _ in range(4):  # 8 -> 128 px
                x = block.upsample_conv(x)
        return x

    for mode, expected in (("nearest", 1.0), ("bilinear", 0.0)):
        y = chain(mode)
        dx = (y[..., 1:] - y[..., :-1]).abs().mean(dim=(0, 1, 2))  # (127,) per column step
        on_edges = dx[15::16].sum() / dx.sum()  # share of the change that sits on the 16-px tile edges
        assert abs(on_edges - expected) < 0.2, (mode, float(on_edges))
    with pytest.raises(ValueError, match="upsample='bicubic' must be one of"):
        FastGANConfig(upsample="bicubic").validate()


def test_the_generator_upsamples_as_configured():
    torch.manual_seed(0)
    nearest = warmed_up(Generator(FastGANConfig(resolution=32, **TINY)))
    bilinear = Generator(FastGANConfig(resolution=32, upsample="bilinear", **TINY)).eval()
    bilinear.load_state_dict(nearest.state_dict())  # the same weights and statistics: only the filter differs
    z, c = torch.randn(2, 16), torch.randn(2, 384)
    with torch.no_grad():
        a, b = nearest(z, c), bilinear(z, c)
    assert a.shape == b.shape and 1e-4 < (a - b).abs().mean() < 0.5
