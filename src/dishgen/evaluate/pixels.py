"""Backbone-free image statistics: power spectra, edge energy, the dish mask and a detail space.

Pure functions over batches of ``uint8`` images ``(B, 3, S, S)`` (the layout of
:func:`dishgen.evaluate.imagesets.load_batch`) or over the per-image statistics they return. They
need no pretrained network, so they run offline on any machine, and they see what feature
distances miss at small sizes: blur (too little high frequency), noise or checkerboard
artefacts (too much) and stripes aligned with the pixel grid.

- **Spectrum**: the radially averaged log power spectrum of the luma (BT.601) of each image, mean
  subtracted and Hann-windowed (so the image border does not add a cross of false high
  frequencies), one bin per integer radius in cycles per image, out to the corners of the
  spectrum (radius ``S / sqrt 2``): a checkerboard of period 2 px in x and y lives in the corners,
  and pooling them with the rest of the Nyquist ring hides it. Power below that of 8-bit
  quantisation noise is floored there: finer differences are invisible in a PNG.
- **Grid**: from the same power spectrum, the power on the two frequency axes (``fx = 0`` or
  ``fy = 0``) over the power off them at the same radii, above 1/8 cycles per pixel: a "plaid" of
  stripes aligned with the pixel grid (nearest-neighbour upsampling) puts tens to hundreds of times
  a ring's power on its axis points, which the radial average dilutes into the whole ring.
- **Edge energy**: the mean gradient magnitude of the luma inside the dish, from forward
  differences (Sobel's central difference is blind to a period-2 checkerboard). FFML photos are
  cut-outs on white, so "inside the dish" is the set of pixels that are not near-white in every
  channel, eroded by one pixel so that no gradient straddles the dish's outline: the number
  measures texture, not the silhouette.
- **Near-copy test** (memorization): a *detail map*, the luma at 64 px minus its Gaussian blur
  (sigma 2 px) inside the eroded dish, compared with a training photo's by the best cosine over
  shifts of up to 3 px. Its RMS (*detail energy*) says how much structure an image has. A copy,
  even shifted by a pixel or two and re-noised, matches its source at cosine 0.8-1; different
  dishes stay below 0.5 (FFML at 64 px: real test photos against their best training match, 95th
  percentile 0.41, maximum 0.49). A blurry average has a fifth of a photo's detail energy and
  matches nothing, so it is not called a copy however close it is in another space.
- **Thumbnails**: 16 px colour images, mean-centred: the backbone-free space in which the nearest
  training photos are searched when no feature network is loaded.
- **Colour histogram** (dish retrieval, a caption-fidelity signal): the joint RGB histogram of the
  dish's pixels (not near-white, no erosion: a thin garnish counts), 4 bins per channel (64 bins),
  L1-normalised and square-rooted: the *Hellinger embedding*, in which the Euclidean distance between
  two images is the Hellinger distance between their colour distributions (up to a factor sqrt 2).
  It is computed at one fixed size, :data:`DESCRIPTOR_SIZE`, for every set (see
  :func:`colour_histograms`). It sees colour, not shape: a brown salad is far from the salads, a
  green one near them whatever its form.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601
WHITE_LEVEL = 0.92  # a pixel whose three channels are all above this (in [0, 1]) is background
QUANTISATION_POWER = (1 / 255) ** 2 / 12  # power of 8-bit rounding noise: the floor of every spectrum bin
GRID_MIN_FREQUENCY = 1 / 8  # cycles per pixel: the grid statistic looks at radii above this, up to 1/2
BANDS = {"low": (0.0, 1 / 6), "mid": (1 / 6, 1 / 3), "high": (1 / 3, 1.0)}  # cycles per pixel, Nyquist = 1/2
THUMBNAIL_SIZE = 16
DETAIL_SIZE = 64
DETAIL_SIGMA = 2.0  # px at DETAIL_SIZE: what the band-pass removes as "shape"
COPY_MAX_SHIFT = 3  # px at DETAIL_SIZE: jitter a copy may have
COPY_CANDIDATES = 5  # nearest training photos (feature or thumbnail space) given the detail test
# A near-copy matches one training photo's detail map at least this well (FFML at 64 px: different
# dishes stay below 0.5, copies shifted by 1-2 px and re-noised score 0.77-1) ...
COPY_DETAIL_COSINE = 0.7
# ... and has at least this share of that photo's detail energy (a blurry average has about 0.2).
COPY_DETAIL_ENERGY = 0.5
COLOUR_BINS = 4  # per channel: a joint RGB histogram of 4 ** 3 = 64 bins
# px: every set's colour histograms are computed at this size, whatever the generated size, so that
# models of different resolutions are ranked against the same dish prototypes.
DESCRIPTOR_SIZE = 64


def luma(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float64 luma ``(B, H, W)`` in [0, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64).view(1, 3, 1, 1)
    return (images.to(torch.float64) / 255 * weights).sum(1)


# -- spectrum -----------------------------------------------------------------------------------
def radial_bins(size: int) -> torch.Tensor:
    """Bin index of every frequency of an ``(size, size)`` FFT: its radius in cycles per image,
    rounded, minus one (so DC is -1 and the corners the last bin)."""
    freq = torch.fft.fftfreq(size, d=1 / size, dtype=torch.float64)  # cycles per image
    radius = torch.sqrt(freq.view(-1, 1) ** 2 + freq.view(1, -1) ** 2).round().long()
    return radius - 1  # (size, size)


def num_radial_bins(size: int) -> int:
    """Bins of a spectrum of ``size`` px: radii 1 .. round(size / sqrt 2)."""
    return round(size / 2 * math.sqrt(2))


def radial_frequencies(num_bins: int, size: int) -> torch.Tensor:
    """Each bin's radius in cycles per pixel (Nyquist of an axis is 0.5, the corner 0.71)."""
    return torch.arange(1, num_bins + 1, dtype=torch.float64) / size


def windowed_power(images: torch.Tensor) -> torch.Tensor:
    """The power spectrum of each image's luma, mean subtracted and Hann-windowed.

    Args:
        images: uint8 ``(B, 3, S, S)``, square.

    Returns:
        ``(B, S, S)`` power in FFT order (:func:`torch.fft.fftfreq`: DC at ``[0, 0]``), normalised
        by the window's energy, so white noise of variance ``v`` has power ``v`` at every frequency.
    """
    y = luma(images)  # (B, S, S)
    size = y.shape[-1]
    if y.shape[-2] != size or size < 4:
        raise ValueError(f"the spectrum needs square images of at least 4 px, got {tuple(y.shape[-2:])}")
    hann = torch.hann_window(size, periodic=False, dtype=torch.float64)
    window = hann.view(-1, 1) * hann.view(1, -1)
    y = (y - y.mean((-2, -1), keepdim=True)) * window
    return torch.fft.fft2(y).abs().square() / window.square().sum()


def radial_log_spectrum(images: torch.Tensor) -> torch.Tensor:
    """The radially averaged log power spectrum of each image's luma.

    Args:
        images: uint8 ``(B, 3, S, S)``, square.

    Returns:
        ``(B, round(S / sqrt 2))`` natural-log power per radius (1, 2, ... cycles per image, out
        to the corners). Power is normalised by the window's energy, so white noise of
        variance ``v`` has power ``v`` in every bin.
    """
    power = windowed_power(images)  # (B, S, S)
    size = power.shape[-1]
    bins = radial_bins(size).flatten()
    keep = bins >= 0
    index = bins[keep]
    nbins = num_radial_bins(size)
    sums = torch.zeros(power.shape[0], nbins, dtype=torch.float64).index_add_(1, index, power.flatten(1)[:, keep])
    counts = torch.bincount(index, minlength=nbins).to(torch.float64)
    return torch.log(sums / counts + QUANTISATION_POWER)


def spectrum_profile(real_spectra: torch.Tensor, fake_spectra: torch.Tensor) -> torch.Tensor:
    """Signed log power ratio per radius, generated over real: ``(R,)``.

    Negative at high frequencies: blur. Positive: noise, aliasing, checkerboard artefacts.
    """
    if real_spectra.shape[1] != fake_spectra.shape[1]:
        raise ValueError(f"spectra of different sizes: {real_spectra.shape[1]} and {fake_spectra.shape[1]} bins; "
                         "compute both at the generated size")
    return fake_spectra.mean(0) - real_spectra.mean(0)


def spectrum_profile_interval(real_spectra: torch.Tensor, fake_spectra: torch.Tensor,
                              z: float = 1.96) -> tuple[torch.Tensor, torch.Tensor]:
    """A normal-theory 95% band of :func:`spectrum_profile` per radius (sampling noise of both sets)."""
    profile = spectrum_profile(real_spectra, fake_spectra)
    se = torch.sqrt(real_spectra.var(0) / real_spectra.shape[0] + fake_spectra.var(0) / fake_spectra.shape[0])
    return profile - z * se, profile + z * se


def spectral_distance(real_spectra: torch.Tensor, fake_spectra: torch.Tensor) -> float:
    """Mean over radii of ``|log(P_generated / P_real)|``: 0 when the spectra agree."""
    return float(spectrum_profile(real_spectra, fake_spectra).abs().mean())


def band_means(profile: torch.Tensor, size: int) -> dict[str, float]:
    """The signed profile of ``size`` px images averaged over frequency bands (cycles per pixel):
    low up to 1/6, mid up to 1/3, high above (out to the corners, where checkerboards live)."""
    freqs = radial_frequencies(profile.shape[0], size)
    out = {}
    for name, (low, high) in BANDS.items():
        chosen = (freqs > low) & (freqs <= high)
        out[name] = float(profile[chosen].mean()) if chosen.any() else float("nan")
    return out


# -- grid (axis) statistic ----------------------------------------------------------------------
def grid_log_ratio(images: torch.Tensor, min_frequency: float = GRID_MIN_FREQUENCY) -> torch.Tensor:
    """How much more power each image has on the frequency axes than off them, at like radii.

    A "plaid" of stripes aligned with the pixel grid (horizontal and vertical lines, as
    nearest-neighbour upsampling leaves them) puts its power on the two axes of the spectrum
    (``fx = 0`` or ``fy = 0``); the radial average pools it with the whole ring and hides it.

    Definition, per image, on the power ``P(f)`` of :func:`windowed_power` (``f`` in cycles per
    image, ``r(f)`` its radius rounded as in :func:`radial_bins`), over the radii ``r`` with
    ``min_frequency * S < r <= S / 2`` (up to the axis Nyquist frequency; the corners beyond it,
    where a period-2 checkerboard lives, are left to the spectral distance):

    - the off-axis level of radius ``r``: ``O(r)``, the mean of ``P`` over the frequencies of
      that radius with ``fx != 0`` and ``fy != 0``;
    - the statistic: ``log mean_a (P(a) + Q) / (O(r(a)) + Q)``, the mean over the axis
      frequencies ``a`` (``(±r, 0)`` and ``(0, ±r)``: four per radius, two at Nyquist), ``Q``
      the 8-bit quantisation floor of the spectrum.

    So each axis frequency is compared with the off-axis power of its own radius, and every radius
    counts the same: it is ``log(mean axis power) - log(mean off-axis power)`` with each radius
    weighted by its number of axis frequencies over its off-axis level. Without that weight the
    lowest radii would dominate (a photo's power falls about a hundredfold from 1/8 to 1/2 cycles
    per pixel), while a plaid is strongest near Nyquist. About 0 for isotropic content (noise,
    blobs, most photos); ``log 10 = 2.3`` when the axes carry ten times the power of their rings.

    Args:
        images: uint8 ``(B, 3, S, S)``, square.
        min_frequency: lowest radius, in cycles per pixel (excluded).

    Returns:
        ``(B,)`` float64 natural-log ratios.
    """
    power = windowed_power(images).flatten(1)  # (B, S * S)
    size = images.shape[-1]
    freq = torch.fft.fftfreq(size, d=1 / size, dtype=torch.float64)  # cycles per image
    on_axis = ((freq.view(-1, 1) == 0) | (freq.view(1, -1) == 0)).flatten()
    radius = (radial_bins(size) + 1).flatten()  # rounded radius, cycles per image
    band = (radius > min_frequency * size) & (2 * radius <= size)
    off, on = band & ~on_axis, band & on_axis
    nbins = size // 2 + 1
    sums = torch.zeros(power.shape[0], nbins, dtype=torch.float64).index_add_(1, radius[off], power[:, off])
    counts = torch.bincount(radius[off], minlength=nbins).to(torch.float64)
    level = sums / counts.clamp(min=1) + QUANTISATION_POWER  # (B, S/2 + 1) off-axis power per radius
    return torch.log(((power[:, on] + QUANTISATION_POWER) / level[:, radius[on]]).mean(1))


def grid_excess(real_grid: torch.Tensor, fake_grid: torch.Tensor) -> float:
    """Mean :func:`grid_log_ratio` of generated images minus that of real ones.

    About 0 when the generated images are no more axis-aligned than photos; large and positive
    for a plaid of grid-aligned stripes (``log 10`` for ten times the photos' axis excess).
    """
    return float(fake_grid.mean()) - float(real_grid.mean())


# -- edges --------------------------------------------------------------------------------------
def foreground_mask(images: torch.Tensor, white: float = WHITE_LEVEL, erode: int = 1) -> torch.Tensor:
    """The dish: pixels not near-white in every channel, eroded by ``erode`` px -> bool ``(B, H, W)``."""
    background = (images.to(torch.float32) / 255 > white).all(1, keepdim=True).float()  # (B, 1, H, W)
    if erode > 0:  # max-pool pads with -inf: the image border itself is not background
        background = F.max_pool2d(background, 2 * erode + 1, stride=1, padding=erode)
    return background[:, 0] < 0.5


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of the luma from forward differences, in luma per pixel: ``(B, H, W)``.

    Forward, not central (Sobel) differences: a central difference cancels on a period-2
    checkerboard, the artefact this must see. The last row and column repeat their neighbour.
    """
    y = luma(images)
    dx = F.pad(y[:, :, 1:] - y[:, :, :-1], (0, 1), mode="replicate")
    dy = F.pad((y[:, 1:] - y[:, :-1]).unsqueeze(1), (0, 0, 0, 1), mode="replicate")[:, 0]
    return torch.sqrt(dx.square() + dy.square())


def edge_energy(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean gradient magnitude inside the dish of each image.

    Returns:
        ``(energy, foreground)``, each ``(B,)``: the energy (``nan`` for an image with no
        foreground at all, e.g. blank white) and the share of the image that is dish.
    """
    magnitude = gradient_magnitude(images)
    mask = foreground_mask(images)
    count = mask.flatten(1).sum(1)
    energy = (magnitude * mask).flatten(1).sum(1) / count.clamp(min=1)
    energy[count == 0] = float("nan")
    return energy, count.double() / mask[0].numel()


def edge_ratio(real_energy: torch.Tensor, fake_energy: torch.Tensor) -> float:
    """Mean edge energy of generated images over that of real ones (images without dish left out).

    1 is ideal; below 1: smoother than photos (blur); above 1: busier (noise, artefacts).
    """
    real_mean = float(real_energy.nanmean())
    return float(fake_energy.nanmean()) / real_mean if real_mean > 0 else float("nan")


# -- near-copy test (memorization) --------------------------------------------------------------
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)`` with reflect padding (no torchvision in the core)."""
    radius = min(max(1, math.ceil(3 * sigma)), min(x.shape[-2:]) - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def thumbnails(images: torch.Tensor, size: int = THUMBNAIL_SIZE) -> torch.Tensor:
    """16 px colour thumbnails, each mean-centred: ``(B, 3 * size * size)`` float32."""
    x = F.interpolate(images.float() / 255, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.flatten(1)
    return x - x.mean(1, keepdim=True)


def detail_maps(images: torch.Tensor, size: int = DETAIL_SIZE, sigma: float = DETAIL_SIGMA
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Band-passed luma inside the dish at ``size`` px, for the near-copy test.

    Returns:
        ``(maps, energy)``: ``(B, size, size)`` float32 detail maps (zero outside the eroded
        dish) and ``(B,)`` their RMS, in luma units.
    """
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False).round().clamp(0, 255).to(torch.uint8)
    y = luma(images).unsqueeze(1)  # (B, 1, S, S)
    inside = foreground_mask(images).unsqueeze(1)
    maps = ((y - gaussian_blur(y, sigma)) * inside)[:, 0]
    return maps.float(), maps.square().mean((1, 2)).sqrt()


def shifted_cosine(a: torch.Tensor, b: torch.Tensor, max_shift: int = COPY_MAX_SHIFT) -> torch.Tensor:
    """Best cosine between maps ``a[i]`` and ``b[i]`` over circular shifts of ``b`` up to
    ``max_shift`` px in x and y: ``(N,)`` (0 where a map is empty).

    One grouped convolution gives every shift's dot product; a circular shift keeps the norm.
    """
    n, s = a.shape[0], max_shift
    padded = F.pad(b.float().unsqueeze(0), (s, s, s, s), mode="circular")  # (1, N, S + 2s, S + 2s)
    dots = F.conv2d(padded, a.float().unsqueeze(1), groups=n)  # (1, N, 2s + 1, 2s + 1)
    norms = a.flatten(1).float().norm(dim=1) * b.flatten(1).float().norm(dim=1)
    return (dots.flatten(2).amax(2)[0] / norms.clamp(min=1e-12)).double()


def best_detail_match(query_maps: torch.Tensor, train_maps: torch.Tensor, candidates: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, the candidate training photo whose detail map matches best.

    Args:
        query_maps: ``(N, S, S)`` detail maps of the images under test.
        train_maps: ``(N_train, S, S)`` detail maps of the training photos.
        candidates: ``(N, k)`` indices into the training photos (e.g. the k nearest in a feature
            or thumbnail space).

    Returns:
        ``(cosine, index)``, each ``(N,)``: the best shifted cosine and the training photo's index.
    """
    best = torch.full((query_maps.shape[0],), -1.0, dtype=torch.float64)
    index = candidates[:, 0].clone()
    for c in range(candidates.shape[1]):
        cosine = shifted_cosine(query_maps, train_maps[candidates[:, c]])
        better = cosine > best
        best, index = torch.where(better, cosine, best), torch.where(better, candidates[:, c], index)
    return best, index


def near_copies(detail_cosine: torch.Tensor, energy_ratio: torch.Tensor) -> torch.Tensor:
    """Which images are near-copies of their best-matching training photo -> bool ``(N,)``.

    Args:
        detail_cosine: each image's best shifted detail cosine with its training match.
        energy_ratio: each image's detail energy over its match's.

    A near-copy has the particular structure of one training photo (cosine at least
    :data:`COPY_DETAIL_COSINE`) and most of its detail (:data:`COPY_DETAIL_ENERGY`). A blurry
    average may sit close to everything in a pixel or feature space; it fails both tests.
    """
    return (detail_cosine >= COPY_DETAIL_COSINE) & (energy_ratio >= COPY_DETAIL_ENERGY)


# -- colour histogram (dish retrieval) ----------------------------------------------------------
def colour_histograms(images: torch.Tensor, bins: int = COLOUR_BINS) -> torch.Tensor:
    """The Hellinger-embedded joint RGB histogram of the dish of each image.

    Every pixel of the dish (:func:`foreground_mask` with ``erode=0``: all pixels that are not
    near-white) falls in one of ``bins ** 3`` cells of the RGB cube (``bins`` equal intervals of
    0-255 per channel); the counts are divided by the number of dish pixels (L1 normalisation)
    and square-rooted. So every descriptor has unit Euclidean norm, and the Euclidean distance
    between two descriptors is ``sqrt 2`` times the Hellinger distance between the two colour
    distributions: 0 for the same colours, ``sqrt 2`` for colours that share no cell. The square
    root keeps a large cell (a plate's worth of one colour) from drowning the small ones that tell
    dishes apart (the green of a salad's leaves beside its tomato).

    Args:
        images: uint8 ``(B, 3, H, W)``.
        bins: intervals per channel.

    Returns:
        ``(B, bins ** 3)`` float64, cell index ``(r * bins + g) * bins + b``. An image with no dish
        pixel at all (blank white) has no colour to compare: its row is ``nan`` (the ranking
        counts it as a miss, see :func:`dishgen.evaluate.metrics.retrieval_ranks`).
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images must be a uint8 (B, 3, H, W) batch, got {images.dtype} {tuple(images.shape)}")
    mask = foreground_mask(images, erode=0).flatten(1).to(torch.float64)  # (B, H * W)
    cell = images.long() * bins // 256  # (B, 3, H, W), each channel in 0 .. bins - 1
    index = ((cell[:, 0] * bins + cell[:, 1]) * bins + cell[:, 2]).flatten(1)  # (B, H * W)
    counts = torch.zeros(images.shape[0], bins**3, dtype=torch.float64).scatter_add_(1, index, mask)
    total = counts.sum(1, keepdim=True)
    histograms = (counts / total.clamp(min=1)).sqrt()
    histograms[total[:, 0] == 0] = float("nan")
    return histograms
