"""The grid (axis) statistic: stripes aligned with the pixel grid, which the radial spectrum hides."""

from __future__ import annotations

import pytest
import torch
from test_pixel_signals import _to_uint8, checkerboard, photos  # noqa: F401  (fixture)

from dishgen.evaluate import metrics as M
from dishgen.evaluate import pixels as P


def plaid(images: torch.Tensor, amplitude: float = 10.0, seed: int = 0) -> torch.Tensor:
    """The FastGAN artefact: horizontal and vertical stripes 1-3 px wide, each at its own random
    level, across the dish (not on the white background)."""
    generator = torch.Generator().manual_seed(seed)
    batch, size = images.shape[0], images.shape[-1]

    def stripes() -> torch.Tensor:  # (B, size): one level per line, constant over runs of 1-3 lines
        widths = torch.randint(1, 4, (batch, size), generator=generator)
        run = torch.cumsum(widths, 1)
        index = torch.searchsorted(run, torch.arange(size).expand(batch, -1).contiguous(), right=True)
        return torch.gather(torch.randn(batch, size, generator=generator, dtype=torch.float64), 1, index)

    pattern = stripes().view(batch, 1, size, 1) + stripes().view(batch, 1, 1, size)
    dish = P.foreground_mask(images, erode=0).unsqueeze(1)
    return _to_uint8(images.double() + amplitude * pattern * dish)


def noise_images(count: int = 16, size: int = 64, slope: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Gray isotropic Gaussian noise whose power falls as ``f ** -slope`` (0: white)."""
    generator = torch.Generator().manual_seed(seed)
    freq = torch.fft.fftfreq(size, dtype=torch.float64)
    radius = torch.sqrt(freq.view(-1, 1) ** 2 + freq.view(1, -1) ** 2)
    radius[0, 0] = 1.0
    shaped = torch.fft.ifft2(torch.fft.fft2(torch.randn(count, size, size, generator=generator,
                                                        dtype=torch.float64)) * radius ** (-slope / 2)).real
    shaped = (shaped - shaped.mean()) / shaped.std() * 25 + 128
    return _to_uint8(shaped.unsqueeze(1).expand(-1, 3, -1, -1))


def blob_images(count: int = 16, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth coloured Gaussian blobs on white: no texture at all."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    images = torch.full((count, 3, size, size), 255.0, dtype=torch.float64)
    for i in range(count):
        for _ in range(5):
            cx, cy = (torch.rand(2, generator=generator, dtype=torch.float64) * size).tolist()
            sigma = (0.05 + 0.15 * float(torch.rand(1, generator=generator))) * size
            weight = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
            colour = torch.rand(3, 1, 1, generator=generator, dtype=torch.float64) * 200
            images[i] = images[i] * (1 - weight) + colour * weight
    return _to_uint8(images)


def test_a_plaid_of_grid_aligned_stripes_scores_high_and_real_halves_about_zero(photos):  # noqa: F811
    real, other = photos[::2], photos[1::2]
    real_grid, other_grid = P.grid_log_ratio(real), P.grid_log_ratio(other)
    striped = P.grid_log_ratio(plaid(other))
    # Two sets of real photos: a small excess whose 95% interval holds 0 (the sample at 64 px).
    halves = P.grid_excess(real_grid, other_grid)
    low, high = M.bootstrap_ci(P.grid_excess, [real_grid, other_grid], n_resamples=100)
    assert abs(halves) < 0.3 and low < 0 < high
    # The same photos with a faint plaid (amplitude 10 of 255): the axes carry e^1.2 = 3.3 times
    # or more of their rings' power, on top of what the photos had, in nearly every image.
    assert P.grid_excess(other_grid, striped) > 1.2 and P.grid_excess(real_grid, striped) > 1.2
    assert float((striped > other_grid).double().mean()) > 0.9
    weaker = P.grid_log_ratio(plaid(other, amplitude=5.0))
    assert 0.3 < P.grid_excess(other_grid, weaker) < P.grid_excess(other_grid, striped)


def test_isotropic_noise_and_smooth_blobs_score_about_zero_against_each_other():
    white, steep, blobs = noise_images(), noise_images(slope=3.0, seed=1), blob_images()
    grids = {name: P.grid_log_ratio(images) for name, images in
             (("white", white), ("steep", steep), ("blobs", blobs))}
    for name, grid in grids.items():
        assert grid.shape == (16,) and grid.dtype == torch.float64
        assert abs(float(grid.mean())) < 0.25, name
    # A spectrum falling as 1/f^3 would bias a comparison of unlike radii; like radii cancel it.
    assert abs(P.grid_excess(grids["white"], grids["steep"])) < 0.15
    assert abs(P.grid_excess(grids["white"], grids["blobs"])) < 0.3
    # Flat images hold nothing but the quantisation floor: exactly 0.
    flat = torch.full((2, 3, 32, 32), 90, dtype=torch.uint8)
    assert P.grid_log_ratio(flat).tolist() == [0.0, 0.0]


def test_a_checkerboard_lives_in_the_corners_and_a_two_by_two_tile_on_the_axes(photos):  # noqa: F811
    real, other = photos[::2], photos[1::2]
    other_grid = P.grid_log_ratio(other)
    # The pure period-2 checkerboard (x + y odd) is the frequency (S/2, S/2), a corner of the
    # spectrum beyond the radii the grid looks at: it leaves the grid statistic where it was ...
    checker = checkerboard(other)
    assert abs(P.grid_excess(other_grid, P.grid_log_ratio(checker))) < 0.1
    # ... and the spectral distance flags it (its corner bins; see test_pixel_signals).
    real_spectra = P.radial_log_spectrum(real)
    halves = P.spectral_distance(real_spectra, P.radial_log_spectrum(other))
    assert P.spectral_distance(real_spectra, P.radial_log_spectrum(checker)) > max(4 * halves, 0.4)
    # A period-2 tile that is not a pure checkerboard (one pixel of every 2x2 brighter, the uneven
    # overlap of a stride-2 transposed convolution) also has (S/2, 0) and (0, S/2): the grid sees it.
    size = other.shape[-1]
    corner = ((torch.arange(size).view(-1, 1) % 2 == 0) & (torch.arange(size).view(1, -1) % 2 == 0)).double()
    tiled = _to_uint8(other.double() + 24 * corner - 6)
    assert P.grid_excess(other_grid, P.grid_log_ratio(tiled)) > 1.0


def test_the_grid_statistic_is_symmetric_in_x_and_y_and_needs_square_images(photos):  # noqa: F811
    grid = P.grid_log_ratio(photos)
    assert torch.allclose(grid, P.grid_log_ratio(photos.transpose(-1, -2)), atol=1e-9)
    with pytest.raises(ValueError, match="square images"):
        P.grid_log_ratio(photos[:, :, :, :48])
