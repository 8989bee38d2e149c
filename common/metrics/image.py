"""Image similarity metrics of the AD paper's evaluation (MSE, MAE, PSNR, SSIM) on 3D volumes, whole or
restricted to a mask (inside a dementia mask, in the brain outside it).

SSIM follows Wang et al. 2004 in 3D: Gaussian window sigma 1.5 voxels truncated at 3.5 sigma (11 taps),
population (not sample) covariances, constants K1 = 0.01, K2 = 0.03 of the data range (1 for images in
[0, 1]). Over a whole volume it averages the SSIM map without a border of the window's radius, as
scikit-image does (its values are the reference in the tests); within a mask it averages the map over
the mask's voxels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

__all__ = ["SSIMMoments", "mae", "mse", "psnr", "ssim", "ssim_by_region", "ssim_map"]

SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5


def _pair(x, y, mask) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    if mask is None:
        return x.ravel(), y.ravel()
    mask = np.asarray(mask, bool)
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the images' {x.shape}")
    if not mask.any():
        raise ValueError("the mask is empty")
    return x[mask], y[mask]


def mse(x, y, mask=None) -> float:
    """Mean squared error (over ``mask`` when given)."""
    a, b = _pair(x, y, mask)
    return float(np.mean((a - b) ** 2))


def mae(x, y, mask=None) -> float:
    """Mean absolute error (over ``mask`` when given)."""
    a, b = _pair(x, y, mask)
    return float(np.mean(np.abs(a - b)))


def psnr(x, y, mask=None, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(range^2 / MSE)`` (inf for identical images)."""
    error = mse(x, y, mask)
    return float("inf") if error == 0 else float(10.0 * np.log10(data_range**2 / error))


class SSIMMoments:
    """An image with its Gaussian-weighted local mean and variance, the statistics an SSIM map smooths.

    Comparing one image with several others (the PET evaluation compares each reconstruction with the healthy
    image and with the healthy image's reconstruction) then smooths each image once: 4 volumes per pair
    instead of 5, and the shared image's moments once for all its pairs.
    """

    def __init__(self, image, sigma: float = SSIM_SIGMA):
        self.image, self.sigma = np.asarray(image, np.float64), float(sigma)
        self.mean = self._smooth(self.image)
        self.var = self._smooth(self.image * self.image) - self.mean * self.mean

    def _smooth(self, a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, self.sigma, truncate=SSIM_TRUNCATE, mode="reflect")

    def ssim_map(self, other: SSIMMoments, data_range: float = 1.0) -> np.ndarray:
        """The local SSIM of every voxel between this image and ``other`` (same shape and sigma)."""
        if other.image.shape != self.image.shape:
            raise ValueError(f"images differ in shape: {self.image.shape} vs {other.image.shape}")
        if other.sigma != self.sigma:
            raise ValueError(f"the two images were smoothed with different sigmas: {self.sigma} vs {other.sigma}")
        ux, uy = self.mean, other.mean
        cov = self._smooth(self.image * other.image) - ux * uy
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        return ((2 * ux * uy + c1) * (2 * cov + c2)) / ((ux * ux + uy * uy + c1) * (self.var + other.var + c2))


def ssim_map(x, y, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The local SSIM of every voxel (Gaussian-weighted statistics, reflect padding)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    return SSIMMoments(x, sigma).ssim_map(SSIMMoments(y, sigma), data_range)


def ssim_by_region(local: np.ndarray, regions: Mapping[str, np.ndarray | None],
                   sigma: float = SSIM_SIGMA) -> dict[str, float]:
    """Mean of an SSIM map per region, by the conventions of :func:`ssim`: a region of None is the whole volume
    without a border of the window radius; a mask averages the map over its voxels. One SSIM map serves all
    regions (the map is the costly part)."""
    out = {}
    for name, region in regions.items():
        if region is None:
            pad = int(SSIM_TRUNCATE * sigma + 0.5)
            if any(n <= 2 * pad for n in local.shape):
                raise ValueError(f"volume {local.shape} too small for the SSIM window (radius {pad})")
            out[name] = float(local[tuple(slice(pad, -pad) for _ in local.shape)].mean())
        else:
            out[name] = float(_pair(local, local, region)[0].mean())
    return out


def ssim(x, y, mask=None, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> float:
    """Mean SSIM: over the volume without a border of the window radius, or over ``mask``'s voxels."""
    return ssim_by_region(ssim_map(x, y, data_range, sigma), {"ssim": mask}, sigma)["ssim"]
