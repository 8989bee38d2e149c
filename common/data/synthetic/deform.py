"""Smooth random fields and warping, shared by the synthetic cohorts.

Random fields are drawn on a coarse grid (Gaussian-smoothed white noise), then upsampled trilinearly to
the full grid in one torch call for all channels; the warp is a single ``grid_sample`` over every map
of a subject, so each subject costs one interpolation pass whatever the number of maps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["misregistration", "smooth_random_fields", "warp"]

COARSE_FACTOR = 4


def smooth_random_fields(rng: np.random.Generator, shape: tuple[int, int, int], spacing_mm: float,
                         n_fields: int, correlation_mm: float) -> np.ndarray:
    """``n_fields`` smooth zero-mean fields of unit standard deviation, shape (n_fields, *shape), float32.

    ``correlation_mm`` is the Gaussian smoothing length of the underlying white noise.
    """
    coarse_shape = tuple(int(np.ceil(n / COARSE_FACTOR)) + 1 for n in shape)
    sigma = correlation_mm / (spacing_mm * COARSE_FACTOR)
    noise = rng.standard_normal((n_fields, *coarse_shape)).astype(np.float32)
    coarse = np.stack([ndimage.gaussian_filter(n, sigma, mode="reflect") for n in noise])
    coarse /= coarse.reshape(n_fields, -1).std(axis=1)[:, None, None, None] + 1e-12
    with torch.no_grad():
        fine = F.interpolate(torch.from_numpy(coarse)[None], size=shape, mode="trilinear", align_corners=True)[0]
    return fine.numpy()


def misregistration(rng: np.random.Generator, smooth_fields: np.ndarray, spacing_mm: float, rms_mm: float,
                    centre_vox: np.ndarray, scale_sd: float = 0.01) -> np.ndarray:
    """Displacement (3, X, Y, Z) in voxels of images already non-linearly normalised to MNI: a smooth
    field of ``rms_mm`` plus an isotropic head-size scaling (sd ``scale_sd``, clipped at 2.5 sd) about
    ``centre_vox``. ``smooth_fields`` are three unit-sd fields from :func:`smooth_random_fields`."""
    shape = smooth_fields.shape[1:]
    scale = float(np.clip(rng.normal(1.0, scale_sd), 1.0 - 2.5 * scale_sd, 1.0 + 2.5 * scale_sd))
    coords = np.indices(shape, dtype=np.float32) - np.asarray(centre_vox, np.float32)[:, None, None, None]
    return smooth_fields * np.float32(rms_mm / spacing_mm) + np.float32(1.0 / scale - 1.0) * coords


def warp(maps: np.ndarray, displacement_vox: np.ndarray) -> np.ndarray:
    """Sample ``maps`` (C, X, Y, Z) at ``voxel + displacement`` (3, X, Y, Z, in voxels), trilinear, zeros outside."""
    shape = maps.shape[1:]
    with torch.no_grad():
        axes = [torch.arange(n, dtype=torch.float32) for n in shape]
        base = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        pos = base + torch.from_numpy(np.ascontiguousarray(displacement_vox, dtype=np.float32))
        scale = torch.tensor([2.0 / (n - 1) for n in shape]).view(3, 1, 1, 1)
        norm = pos * scale - 1.0
        # grid_sample's last dim is (x, y, z) = (W, H, D) = our axes reversed.
        grid = norm.flip(0).permute(1, 2, 3, 0)[None]
        src = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    return out.numpy()
