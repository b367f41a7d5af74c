"""The cGAN's ``d_extra_blocks``: the original project's discriminator depth, for like-for-like benches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dishgen.config import ConfigError, resolve_config
from dishgen.models import cgan
from dishgen.train.cgan import CGANTrainConfig


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_original_widths():
    # The original project at 64 px, base channels 32: G 9.78M (512-d captions, cond_dim 512, no
    # channel cap); D one block deeper than ours, widening to 512 channels at 4x4.
    config = cgan.CGANConfig(resolution=64, c_dim=512, cond_dim=512, base_channels=32, max_channel_mult=16,
                             d_extra_blocks=1)
    assert count(cgan.Generator(config)) == pytest.approx(9.78e6, rel=1e-3)
    D = cgan.Discriminator(config)
    assert count(D) == pytest.approx(5.15e6, rel=1e-3)
    last = D.blocks[-1]
    assert (last.conv1.in_channels, last.conv2.out_channels, last.downsample) == (256, 512, False)
    assert len(D.blocks) == len(cgan.Discriminator(cgan.CGANConfig(c_dim=512)).blocks) + 1


def test_extra_blocks_keep_forward_and_r1_working():
    config = cgan.CGANConfig(resolution=32, c_dim=16, cond_dim=8, base_channels=4, d_extra_blocks=2)
    D = cgan.Discriminator(config)
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    logits = D(x, torch.randn(3, 16))
    assert logits.shape == (3,)
    assert cgan.r1_penalty(logits, x).item() > 0
    assert D.out.in_features == config.channels(4)


def test_default_is_unchanged_and_a_negative_count_is_refused():
    config = cgan.CGANConfig(resolution=64, c_dim=384, cond_dim=128, base_channels=32)
    assert count(cgan.Discriminator(config)) == 1_314_401  # as before the option existed
    with pytest.raises(ValueError, match="d_extra_blocks=-1"):
        cgan.CGANConfig(d_extra_blocks=-1).validate()
    with pytest.raises(ConfigError, match="d_extra_blocks"):
        resolve_config(CGANTrainConfig, overrides={"d_extra_blocks": -1})
    train_config = resolve_config(CGANTrainConfig, overrides={"d_extra_blocks": 1})
    assert train_config.model_config(c_dim=384).d_extra_blocks == 1
