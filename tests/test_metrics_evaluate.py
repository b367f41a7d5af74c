"""The metric maths of dishgen.evaluate, checked against torchmetrics and by construction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dishgen.evaluate import metrics as M
from dishgen.evaluate.imagesets import load_batch


class TinyFeatures(nn.Module):
    """A small fixed conv net: uint8 (B, 3, H, W) -> (B, 24) features, like a real backbone."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, 12, 3, 2, 1), nn.Tanh(), nn.Conv2d(12, 24, 3, 2, 1), nn.Tanh(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.num_features = 24
        self.image_size = 32

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float() / 127.5 - 1)


@pytest.fixture(scope="module")
def real_images(sample_images) -> torch.Tensor:
    paths = sorted(sample_images.rglob("*.jpg"))
    return load_batch(paths, 32)  # (44, 3, 32, 32) uint8


@pytest.fixture(scope="module")
def noise_images(real_images) -> torch.Tensor:
    return torch.randint(0, 256, real_images.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_fid_of_a_set_with_itself_is_about_zero_and_with_noise_large(real_images, noise_images):
    net = TinyFeatures()
    real = net(real_images)
    half_a, half_b = net(real_images[::2]), net(real_images[1::2])
    same = M.fid(real, real)
    halves = M.fid(half_a, half_b)
    noise = M.fid(real, net(noise_images))
    assert same == pytest.approx(0.0, abs=1e-6)
    assert noise > 20 * halves > 0  # two halves of real photos are far closer than photos and noise


def test_fid_equals_torchmetrics_with_the_network_as_feature(real_images, noise_images):
    from torchmetrics.image.fid import FrechetInceptionDistance

    net = TinyFeatures()
    direct = FrechetInceptionDistance(feature=net)
    direct.update(real_images, real=True)
    direct.update(noise_images[:30], real=False)
    ours = M.fid(net(real_images), net(noise_images[:30]))
    assert ours == pytest.approx(float(direct.compute()), rel=1e-4)


@pytest.mark.parametrize("n_real,n_fake,dim", [(40, 30, 8), (20, 25, 64)])  # N above and below D
def test_fast_frechet_distance_matches_torchmetrics(n_real, n_fake, dim):
    g = torch.Generator().manual_seed(n_real)
    real = torch.randn(n_real, dim, generator=g)
    fake = torch.randn(n_fake, dim, generator=g) * 1.3 + 0.2
    assert M.frechet_distance(real, fake) == pytest.approx(M.fid(real, fake), rel=1e-5)


def test_kid_equals_torchmetrics_and_the_unbiased_mmd(real_images, noise_images):
    from torchmetrics.image.kid import KernelInceptionDistance

    net = TinyFeatures()
    real, fake = net(real_images), net(noise_images[:30])
    direct = KernelInceptionDistance(feature=net, subsets=10, subset_size=20)
    direct.update(real_images, real=True)
    direct.update(noise_images[:30], real=False)
    torch.manual_seed(5)
    want_mean, want_std = direct.compute()
    mean, std = M.kid(real, fake, subset_size=20, subsets=10, seed=5)
    assert mean == pytest.approx(float(want_mean), rel=1e-4)
    assert std == pytest.approx(float(want_std), rel=1e-3)
    # One subset holding every image is the plain unbiased MMD.
    full, _ = M.kid(real[:30], fake, subset_size=30, subsets=1)
    assert M.mmd_poly_unbiased(real[:30], fake) == pytest.approx(full, rel=1e-6)
    assert mean > 0


def test_kid_subset_size_adapts_to_n():
    assert M.kid_subset_size(50_000, 10_000) == 1000
    assert M.kid_subset_size(47, 94) == 47
    assert M.kid_subset_size(1, 5) == 2


def test_clip_score_is_zero_for_negative_cosines_and_100_cos_otherwise():
    cos = torch.tensor([-0.7, -0.01, 0.0, 0.25, 0.31, 1.0])
    assert M.clip_score(cos).tolist() == pytest.approx([0, 0, 0, 25, 31, 100])
    assert M.clip_score_rescaled(cos).tolist() == pytest.approx([15, 49.5, 50, 62.5, 65.5, 100])
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    texts = torch.tensor([[-2.0, 0.0], [0.0, 5.0], [3.0, 4.0]])
    assert M.clip_cosine(images, texts).tolist() == pytest.approx([-1.0, 0.0, 1.0])
    assert M.clip_score(M.clip_cosine(images, texts)).tolist() == pytest.approx([0.0, 0.0, 100.0])


def test_clip_embedder_cosine_matches_clipmodel_logits(tiny_clip_dir, real_images):
    from transformers import CLIPModel, CLIPTokenizer

    from dishgen.evaluate.features import load_clip

    captions = ["a photo of sarma", "ćevapi with onions and kajmak", "gibanica, a cheese pie"]
    images = real_images[:3]
    clip = load_clip(tiny_clip_dir)
    ours = M.clip_cosine(clip.encode_images(images), clip.encode_texts(captions))
    # Independent path: CLIPModel's own forward (its logits are exp(logit_scale) * cosine).
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokens = CLIPTokenizer.from_pretrained(tiny_clip_dir)(captions, padding=True, return_tensors="pt")
    pixels = (images.float() / 255 - torch.tensor(clip.image_features.mean).view(1, 3, 1, 1)) / torch.tensor(
        clip.image_features.std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
    want = out.logits_per_image.diagonal() / model.logit_scale.exp()
    assert ours.tolist() == pytest.approx(want.tolist(), abs=1e-5)


def test_memorization_ratio_is_near_zero_for_copies_and_near_one_for_new_samples():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(200, 16, generator=g)
    real_test = torch.randn(60, 16, generator=g)
    new_samples = torch.randn(60, 16, generator=g)
    copies = train[:60] + 1e-4 * torch.randn(60, 16, generator=g)
    real_d, _ = M.nearest_distances(real_test, train)
    copy_d, copy_idx = M.nearest_distances(copies, train)
    new_d, _ = M.nearest_distances(new_samples, train)
    assert copy_idx.tolist() == list(range(60))
    assert M.memorization_ratio(copy_d, real_d) < 0.01
    assert 0.7 < M.memorization_ratio(new_d, real_d) < 1.3


def test_bootstrap_interval_covers_the_mean_and_is_repeatable():
    values = torch.randn(400, generator=torch.Generator().manual_seed(3)).double() + 5
    low, high = M.bootstrap_ci(lambda v: float(v.mean()), [values], n_resamples=300, seed=1)
    assert low < float(values.mean()) < high
    assert high - low == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.25)  # normal-theory width
    assert M.bootstrap_ci(lambda v: float(v.mean()), [values], n_resamples=300, seed=1) == (low, high)
    # A statistic that resampling biases (here: number of distinct values) keeps its point
    # estimate inside the centred interval, and not inside the plain percentile one.
    def distinct(v):
        return float(v.unique().numel())

    plain = M.bootstrap_ci(distinct, [values], n_resamples=100, seed=1)
    centred = M.bootstrap_ci(distinct, [values], n_resamples=100, seed=1, method="centred")
    assert plain[1] < 400 and centred[0] <= 400 <= centred[1]
    assert centred[1] - centred[0] == pytest.approx(plain[1] - plain[0])
    assert all(math.isnan(x) for x in M.bootstrap_ci(lambda v: 0.0, [values], n_resamples=0))


def test_sample_size_warnings():
    assert len(M.sample_size_warnings(47, 47, 768)) == 2
    assert M.sample_size_warnings(5000, 5000, 768) == []
    (rank,) = M.sample_size_warnings(5000, 1500, 2048)
    assert "feature dimension 2048" in rank
    (small,) = M.sample_size_warnings(5000, 800, 16)
    assert "only 800 images" in small
