"""Image similarity metrics of the AD paper's evaluation (MSE, MAE, PSNR, SSIM) on 3D volumes, whole or
restricted to a mask (inside a dementia mask, in the brain outside it).

SSIM follows Wang et al. 2004 in 3D: Gaussian window sigma 1.5 voxels truncated at 3.5 sigma (11 taps),
population (not sample) covariances, constants K1 = 0.01, K2 = 0.03 of the data range (1 for images in
[0, 1]). Over a whole volume it averages the SSIM map without a border of the window's radius, as
scikit-image does (its values are the reference in the tests); within a mask it averages the map over
the mask's voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["mae", "mse", "psnr", "ssim", "ssim_map"]

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


def ssim_map(x, y, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The local SSIM of every voxel (Gaussian-weighted statistics, reflect padding)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")

    def smooth(a):
        return ndimage.gaussian_filter(a, sigma, truncate=SSIM_TRUNCATE, mode="reflect")

    ux, uy = smooth(x), smooth(y)
    vx, vy, vxy = smooth(x * x) - ux * ux, smooth(y * y) - uy * uy, smooth(x * y) - ux * uy
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def ssim(x, y, mask=None, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> float:
    """Mean SSIM: over the volume without a border of the window radius, or over ``mask``'s voxels."""
    local = ssim_map(x, y, data_range, sigma)
    if mask is not None:
        return float(_pair(local, local, mask)[0].mean())
    pad = int(SSIM_TRUNCATE * sigma + 0.5)
    if any(n <= 2 * pad for n in local.shape):
        raise ValueError(f"volume {local.shape} too small for the SSIM window (radius {pad})")
    return float(local[tuple(slice(pad, -pad) for _ in local.shape)].mean())
