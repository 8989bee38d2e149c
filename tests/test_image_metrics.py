"""MSE, MAE, PSNR and 3D SSIM against scikit-image and numpy on 3D volumes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import (
    mean_squared_error,
    peak_signal_noise_ratio,
    structural_similarity,
)

from common.metrics import mae, mse, psnr, ssim, ssim_map


@pytest.fixture
def volumes():
    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random((24, 28, 20)), 1.5)
    x = (x - x.min()) / (x.max() - x.min())
    y = np.clip(x * 0.9 + 0.05 * rng.standard_normal(x.shape), 0, 1)
    mask = np.zeros(x.shape, bool)
    mask[5:15, 6:20, 4:12] = True
    return x, y, mask


def test_mse_mae_psnr_against_references(volumes):
    x, y, mask = volumes
    assert mse(x, y) == pytest.approx(mean_squared_error(x, y), rel=1e-12)
    assert mae(x, y) == pytest.approx(np.abs(x - y).mean(), rel=1e-12)
    assert psnr(x, y) == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1.0), rel=1e-12)
    assert mse(x, y, mask) == pytest.approx(((x[mask] - y[mask]) ** 2).mean(), rel=1e-12)
    assert mae(x, y, mask) == pytest.approx(np.abs(x[mask] - y[mask]).mean(), rel=1e-12)
    assert psnr(x, x) == float("inf")


def test_3d_ssim_against_scikit_image(volumes):
    x, y, _ = volumes
    reference = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert ssim(x, y) == pytest.approx(reference, abs=1e-10)
    _, full = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    np.testing.assert_allclose(ssim_map(x, y), full, atol=1e-10)
    assert ssim(x, x) == pytest.approx(1.0)


def test_masked_ssim_is_the_map_mean_in_the_mask(volumes):
    x, y, mask = volumes
    assert ssim(x, y, mask) == pytest.approx(ssim_map(x, y)[mask].mean(), rel=1e-12)


def test_errors(volumes):
    x, y, mask = volumes
    with pytest.raises(ValueError, match="shape"):
        mse(x, y[:-1])
    with pytest.raises(ValueError, match="empty"):
        mae(x, y, np.zeros_like(mask))
    with pytest.raises(ValueError, match="too small"):
        ssim(x[:8, :8, :8], y[:8, :8, :8])


def test_ssim_moments_shared_between_pairs(volumes):
    """One image's moments reused against two others give each pair's SSIM map, and mismatches are refused."""
    from common.metrics import SSIMMoments, ssim_by_region

    x, y = volumes[:2]
    z = np.clip(y + 0.05, 0, 1)
    mx = SSIMMoments(x)
    for other in (y, z):
        np.testing.assert_allclose(mx.ssim_map(SSIMMoments(other)), ssim_map(x, other), rtol=1e-12, atol=1e-12)
    mask = np.zeros(x.shape, bool)
    mask[4:9, 4:9, 4:9] = True
    by_region = ssim_by_region(ssim_map(x, y), {"image": None, "cube": mask})
    assert by_region == {"image": pytest.approx(ssim(x, y)), "cube": pytest.approx(ssim(x, y, mask))}
    with pytest.raises(ValueError, match="shape"):
        mx.ssim_map(SSIMMoments(x[:-1]))
    with pytest.raises(ValueError, match="sigma"):
        mx.ssim_map(SSIMMoments(y, sigma=1.0))
    with pytest.raises(ValueError, match="empty"):
        ssim_by_region(ssim_map(x, y), {"none": np.zeros(x.shape, bool)})
