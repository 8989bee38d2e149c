"""The hypometabolism simulation ``x' = x * G_sigma(1 - d/100 * M)`` against a direct numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from common.transforms import (
    RandSimulateHypometabolism,
    RandSimulateHypometabolismd,
    SimulateHypometabolism,
    SimulateHypometabolismd,
)


def numpy_gaussian(volume: np.ndarray, sigma_vox, outside: float) -> np.ndarray:
    """Separable Gaussian with np.convolve, truncated at 4 sigma, the world outside equal to ``outside``."""
    out = volume.astype(np.float64)
    for axis, sigma in enumerate(sigma_vox):
        radius = int(4.0 * sigma + 0.5)
        x = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (x / sigma) ** 2)
        kernel /= kernel.sum()
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, constant_values=outside)
        out = np.apply_along_axis(lambda v, k=kernel: np.convolve(v, k, mode="valid"), axis, padded)
    return out


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 1.0, (1, 24, 26, 22)).astype(np.float32)
    mask = np.zeros((24, 26, 22), bool)
    mask[6:15, 8:18, 5:12] = True
    return image, mask


@pytest.mark.parametrize("degree", [5.0, 30.0, 70.0])
def test_formula_matches_direct_numpy(volume, degree):
    image, mask = volume
    spacing = (2.0, 2.0, 2.0)
    factor = np.where(mask, 1.0 - degree / 100.0, 1.0)  # the paper's factor map, smoothed as is
    expected = image[0] * numpy_gaussian(factor, [5.0 / s for s in spacing], outside=1.0)
    out = SimulateHypometabolism(mask, degree=degree, sigma_mm=5.0, spacing=spacing)(image)
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=2e-6)


def test_anisotropic_spacing_from_metatensor_affine(volume):
    image, mask = volume
    affine = torch.diag(torch.tensor([1.0, 2.0, 4.0, 1.0], dtype=torch.float64))
    out = SimulateHypometabolism(mask, degree=40.0, sigma_mm=4.0)(MetaTensor(torch.from_numpy(image), affine=affine))
    factor = np.where(mask, 0.6, 1.0)
    expected = image[0] * numpy_gaussian(factor, [4.0, 2.0, 1.0], outside=1.0)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, affine)
    np.testing.assert_allclose(out.numpy()[0], expected, atol=2e-6)


def test_effective_reduction_in_the_ad_mask_is_about_21_percent():
    """docs/design.md 4.2: a nominal 30 % gives about 21 % mean reduction inside an AD mask (smoothing)."""
    from common.atlases import load_atlas

    atlas = load_atlas("clinicadl2")
    ones = np.ones((1, *atlas.grid.shape), np.float32)
    out = SimulateHypometabolism("ad", degree=30.0, grid="clinicadl2")(ones)[0]
    mask = atlas.mask("ad")
    effective = 1.0 - out[mask].mean()
    assert 0.18 < effective < 0.24, effective
    # It leaks outside the mask (about 2 sigma) but not far away.
    assert out[~mask].min() < 0.9 and out[0, 0, 0] == pytest.approx(1.0)


def test_dictionary_version_returns_the_reduction_map(volume):
    image, mask = volume
    t = SimulateHypometabolismd("image", mask, degree=30.0, spacing=(2, 2, 2))
    out = t({"image": torch.from_numpy(image)})
    assert isinstance(out["image"], torch.Tensor) and out["anomaly"].shape == image.shape
    np.testing.assert_allclose(out["image"].numpy(), image * (1 - out["anomaly"].numpy()), atol=1e-6)
    assert out["anomaly"].max().item() <= 0.3 + 1e-6


def test_random_variant_is_seeded_and_within_range(volume):
    image, mask = volume
    masks = {"a": mask, "b": ~mask}
    draws = []
    for _ in range(2):
        t = RandSimulateHypometabolismd("image", masks=masks, degree_range=(15, 35), spacing=(2, 2, 2))
        t.set_random_state(seed=7)
        draws.append([t({"image": image}) for _ in range(5)])
    for first, second in zip(*draws):
        np.testing.assert_array_equal(first["image"], second["image"])
        assert first["anomaly_pattern"] == second["anomaly_pattern"] in ("a", "b")
        assert 15 <= first["anomaly_degree"] <= 35
    assert len({d["anomaly_degree"] for d in draws[0]}) == 5


def test_prob_zero_leaves_the_image_untouched(volume):
    image, mask = volume
    t = RandSimulateHypometabolismd("image", masks=mask, prob=0.0, spacing=(2, 2, 2))
    out = Compose([t])({"image": image})
    np.testing.assert_array_equal(out["image"], image)
    assert not out["anomaly"].any() and out["anomaly_pattern"] == "none"
    array_t = RandSimulateHypometabolism(mask, prob=0.0, spacing=(2, 2, 2))
    np.testing.assert_array_equal(array_t(image), image)


def test_bad_arguments(volume):
    image, mask = volume
    with pytest.raises(ValueError, match="degree"):
        SimulateHypometabolism(mask, degree=120)
    with pytest.raises(ValueError, match="degree_range"):
        RandSimulateHypometabolism(mask, degree_range=(40, 20))
    with pytest.raises(ValueError, match="shape"):
        SimulateHypometabolism(mask[:-1], spacing=(2, 2, 2))(image)


@pytest.mark.parametrize("sigma_mm", [0.0, 5.0])
def test_one_instance_serves_every_degree(volume, sigma_mm):
    """The call-time degree gives what an instance at that degree gives, and what the PET evaluation computed
    before it called the transform: ``x * (1 - float32(d / 100) * G(M))`` in float32, bit for bit."""
    from scipy import ndimage

    image, mask = volume
    spacing = (2.0, 2.0, 2.0)
    shared = SimulateHypometabolism(mask, degree=0.0, sigma_mm=sigma_mm, spacing=spacing)
    smoothed = (ndimage.gaussian_filter(mask.astype(np.float32), sigma_mm / 2.0, mode="constant") if sigma_mm
                else mask.astype(np.float32))
    np.testing.assert_array_equal(shared.mask_map(image), smoothed)
    for degree in (5.0, 30.0, 70.0):
        fresh = SimulateHypometabolism(mask, degree=degree, sigma_mm=sigma_mm, spacing=spacing)
        old = image[0] * (1.0 - np.float32(degree / 100.0) * smoothed).astype(np.float32)
        got = shared(image[0], degree)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, fresh(image[0]))
        np.testing.assert_array_equal(got, old)
        np.testing.assert_array_equal(shared.reduction_map(image, degree), fresh.reduction_map(image))
    assert shared.degree == 0.0  # the override does not stick
    np.testing.assert_array_equal(shared(image), image)
    with pytest.raises(ValueError, match="degree"):
        shared(image, 101.0)
