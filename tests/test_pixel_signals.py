"""The backbone-free signals (spectrum, edge energy) and the near-copy test, on the real photo sample."""

from __future__ import annotations

import json

import pytest
import torch
from test_evaluate_harness import config, fake_models  # noqa: F401  (fixture)

from dishgen.evaluate import EvaluationConfig, EvaluationError, evaluate
from dishgen.evaluate import metrics as M
from dishgen.evaluate import pixels as P
from dishgen.evaluate.imagesets import load_batch


@pytest.fixture(scope="module")
def photos(sample_images) -> torch.Tensor:
    return load_batch(sorted(sample_images.rglob("*.jpg")), 64)  # (44, 3, 64, 64) uint8, cut-outs on white


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def blurred(images: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    x = images.double().view(-1, 1, *images.shape[-2:])
    return _to_uint8(P.gaussian_blur(x, sigma).view(images.shape))


def checkerboard(images: torch.Tensor, amplitude: float = 12.0) -> torch.Tensor:
    """The transposed-convolution artefact: a period-2 pattern in x and y."""
    size = images.shape[-1]
    pattern = ((torch.arange(size).view(-1, 1) + torch.arange(size).view(1, -1)) % 2).double() * 2 - 1
    return _to_uint8(images.double() + amplitude * pattern)


def noisy(images: torch.Tensor, sigma: float = 10.0) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return _to_uint8(images.double() + sigma * noise)


def signals(real: torch.Tensor, fake: torch.Tensor) -> tuple[float, dict[str, float], float]:
    real_spectra, fake_spectra = P.radial_log_spectrum(real), P.radial_log_spectrum(fake)
    bands = P.band_means(P.spectrum_profile(real_spectra, fake_spectra), real.shape[-1])
    return (P.spectral_distance(real_spectra, fake_spectra), bands,
            P.edge_ratio(P.edge_energy(real)[0], P.edge_energy(fake)[0]))


def test_real_halves_are_close_blur_and_artefacts_are_far_with_the_right_sign(photos):
    real, other = photos[::2], photos[1::2]
    halves, halves_bands, halves_edges = signals(real, other)
    blur, blur_bands, blur_edges = signals(real, blurred(other))
    checker, checker_bands, checker_edges = signals(real, checkerboard(other))
    noise, noise_bands, noise_edges = signals(real, noisy(other))
    assert halves < 0.5 and 0.75 < halves_edges < 1.33
    # Blur: far more distant than two sets of photos, missing high frequencies, smoother edges.
    assert blur > 5 * halves and blur > 2.0
    assert blur_bands["high"] < blur_bands["low"] and max(blur_bands["mid"], blur_bands["high"]) < -1.0
    assert blur_edges < 0.8
    # Checkerboard and noise: too much high frequency, busier edges.
    for distance, bands, edges in ((checker, checker_bands, checker_edges), (noise, noise_bands, noise_edges)):
        assert distance > halves and bands["high"] > 0.5 and bands["high"] > bands["low"] + 0.5
        assert edges > 1.1
    # The checkerboard lives in the corners of the spectrum (beyond the axes' Nyquist frequency).
    profile = P.spectrum_profile(P.radial_log_spectrum(real), P.radial_log_spectrum(checkerboard(other)))
    assert profile[-1] > 5 and P.num_radial_bins(64) == profile.shape[0] == 45


def test_spectrum_of_white_noise_is_flat_at_its_variance():
    noise = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 20 + 128
    images = _to_uint8(noise.expand(-1, 3, -1, -1).clone())  # gray: luma = the value
    images[:, 1:] = images[:, :1]
    spectrum = P.radial_log_spectrum(images).mean(0)
    variance = (20 / 255) ** 2
    # Flat at the variance, but for the innermost ring and the far corner: they hold so few
    # frequencies that the mean of their log sits below the log of their mean (the same bias for
    # real and generated images, so it cancels in every ratio).
    inner = spectrum[1:-1]
    assert inner.exp().mean() == pytest.approx(variance, rel=0.15)
    assert float(inner.max() - inner.min()) < 0.5


def test_edge_energy_counts_only_the_dish():
    image = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    image[:, :, 8:24, 8:24] = 100  # a flat dish on white: its outline is not texture
    energy, share = P.edge_energy(image)
    assert float(energy) == pytest.approx(0.0) and float(share) == pytest.approx(14 * 14 / 32**2)
    image[:, :, 8:24:2, 8:24] = 140  # stripes inside the dish
    assert float(P.edge_energy(image)[0]) > 0.1
    blank = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    assert torch.isnan(P.edge_energy(blank)[0]).all()


def _copy_test(queries: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    q_maps, q_energy = P.detail_maps(queries)
    t_maps, t_energy = P.detail_maps(train)
    _, candidates = M.nearest_k(P.thumbnails(queries), P.thumbnails(train), P.COPY_CANDIDATES)
    cosine, match = P.best_detail_match(q_maps, t_maps, candidates)
    return P.near_copies(cosine, q_energy / t_energy[match]), match


def test_a_blurry_average_is_not_a_copy_an_exact_or_jittered_photo_is(photos):
    train, new = photos[:34], photos[34:]
    average = _to_uint8(train.double().mean(0, keepdim=True))
    for blob in (average, blurred(average, 2.0)):
        # In raw pixels the blob is closer to a training photo than any new photo is: the old test.
        raw_blob, _ = M.nearest_distances(blob.flatten(1).float(), train.flatten(1).float())
        raw_new, _ = M.nearest_distances(new.flatten(1).float(), train.flatten(1).float())
        assert float(raw_blob) < float(raw_new.min())
        copies, _ = _copy_test(blob, train)
        assert not copies.any()
    jittered = torch.roll(train[:12], shifts=(1, -2), dims=(2, 3)).double() * 1.05
    jittered = _to_uint8(jittered + 3 * torch.randn(jittered.shape, generator=torch.Generator().manual_seed(2)))
    for copies_of_train in (train[:12], jittered):
        copies, match = _copy_test(copies_of_train, train)
        assert copies.all() and match.tolist() == list(range(12))
    copies, _ = _copy_test(new, train)  # photos of other dishes
    assert not copies.any()


def test_offline_evaluation_without_any_network(tiny_dataset, tmp_path, fake_models, monkeypatch):  # noqa: F811
    import dishgen.evaluate.features as F

    def no_network(*args, **kwargs):
        raise AssertionError("no network may be loaded")

    monkeypatch.setattr(F, "load_feature_network", no_network)
    monkeypatch.setattr(F, "load_clip", no_network)
    copier, noise = fake_models("copier", alpha=1.0), fake_models("noise", alpha=0.0)
    out = tmp_path / "report"
    report = evaluate(EvaluationConfig(data=tiny_dataset, out=out, models=[str(copier), str(noise)], bootstrap=20,
                                       progress=False, feature_backbone="none", images_per_caption=2))
    assert report["metrics"] == ["memorization", "spectral", "edges", "grid", "retrieval"]
    assert report["feature"]["backbone"] == "none"
    rows = {r["component"]: r["metrics"] for r in report["results"]}
    leave_one_out, halves = report["references"]
    assert set(leave_one_out["metrics"]) == {"dish_retrieval"}
    assert halves["component"] == "real test photos, half vs half, 32 px"
    assert set(halves["metrics"]) == {"spectral_distance", "edge_ratio", "grid_excess"}
    # The copier reproduces training photos (with a little noise): confirmed copies, spectrum and
    # edges like a photo's; pure noise: no copy, far too much high frequency.
    assert rows["copier"]["memorization"]["near_copy_rate"] > 0.9
    assert rows["noise"]["memorization"]["near_copy_rate"] == 0.0
    assert rows["copier"]["memorization"]["real_near_copy_rate"] == 0.0
    assert rows["noise"]["spectral_distance"]["bands"]["high"] > 2 and rows["noise"]["edge_ratio"]["value"] > 3
    assert rows["copier"]["spectral_distance"]["value"] < rows["noise"]["spectral_distance"]["value"] / 4
    for metric in (rows["copier"]["spectral_distance"], rows["copier"]["edge_ratio"], rows["copier"]["grid_excess"]):
        low, high = metric["ci"]
        assert low <= metric["value"] <= high and metric["image_size"] == 32
    assert len(rows["copier"]["spectral_distance"]["profile"]) == P.num_radial_bins(32)
    md = (out / "report.md").read_text()
    assert "## Spectrum and edges detail" in md and "![spectrum](charts/spectrum.png)" in md
    grid = rows["noise"]["grid_excess"]
    assert grid["value"] == pytest.approx(grid["generated_grid"] - grid["real_grid"])
    assert "| grid excess | dish top-1 ↑ | N |" in md and "axis log ratio (generated / real)" in md
    assert f"{grid['generated_grid']:+.2f} / {grid['real_grid']:+.2f}" in md
    assert (out / "charts" / "spectrum.png").is_file()
    listing = [json.loads(line) for line in (out / "per_image" / "copier.jsonl").read_text().splitlines()]
    assert all(r["near_copy"] for r in listing[:10]) and all("detail_cosine" in r for r in listing)


def test_backbone_free_metrics_alone_load_no_network(tiny_dataset, tmp_path, fake_models, monkeypatch):  # noqa: F811
    import dishgen.evaluate.features as F

    monkeypatch.setattr(F, "load_feature_network", lambda *a, **k: pytest.fail("no network may be loaded"))
    run = fake_models("gan", alpha=0.5)
    report = evaluate(config(tiny_dataset, tmp_path / "out", models=[str(run)], metrics=("spectral", "edges", "grid")),
                      write=False)
    assert set(report["results"][0]["metrics"]) == {"spectral_distance", "edge_ratio", "grid_excess"}


def test_no_backbone_with_a_network_metric_is_a_clear_error(tiny_dataset, tmp_path, fake_models):  # noqa: F811
    run = fake_models("gan", alpha=0.5)
    with pytest.raises(EvaluationError, match="--feature-backbone none loads no network, so fid"):
        evaluate(config(tiny_dataset, tmp_path / "out", models=[str(run)], feature_backbone="none",
                        metrics=("fid", "spectral")), write=False)
    assert not (tmp_path / "out").exists()
