"""Clinica pet-linear input: ClinicaDL's striding, the anti-aliased resampling, and the PET loader that takes
either grid (against numpy slicing, world coordinates, and analytic values of smooth functions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import write_nifti
from monai.data import MetaTensor

from common.errors import InputDataError
from common.grids import get_grid
from common.transforms import (
    SUBJECT_ID,
    LoadPETImage,
    LoadPETImaged,
    ReducePETLinear,
    ReducePETLineard,
    antialias_sigma_mm,
)

SOURCE, TARGET = get_grid("clinica_pet_linear"), get_grid("clinicadl2")


def world(grid) -> np.ndarray:
    """(3, X, Y, Z) voxel-centre coordinates in mm, float64, from the affine (independent of Grid helpers)."""
    idx = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in grid.shape), indexing="ij"))
    return np.einsum("ij,j...->i...", grid.affine[:3, :3], idx) + grid.affine[:3, 3].reshape(3, 1, 1, 1)


def source_image(fn) -> MetaTensor:
    """``fn(x, y, z)`` sampled at the pet-linear voxel centres, as a (1, ...) MetaTensor with its affine."""
    values = fn(*world(SOURCE)).astype(np.float32)[None]
    return MetaTensor(torch.from_numpy(values), affine=torch.as_tensor(SOURCE.affine))


def test_the_grids_agree_with_clinicadl_striding():
    """The pet-linear voxel (4 + 2i, 8 + 2j, 8 + 2k) and the clinicadl2 voxel (i, j, k) are the same point."""
    assert SOURCE.shape == (169, 208, 179) and SOURCE.spacing == (1.0, 1.0, 1.0)
    ijk = np.array([[0, 0, 0, 1], [79, 95, 79, 1], [13, 50, 71, 1]], dtype=float).T
    src = ijk.copy()
    src[:3] = np.array([4, 8, 8])[:, None] + 2 * ijk[:3]
    np.testing.assert_allclose(TARGET.affine @ ijk, SOURCE.affine @ src)
    assert SOURCE.shape > (4 + 2 * 79, 8 + 2 * 95, 8 + 2 * 79)  # the last target voxel is inside


def test_clinicadl_mode_is_numpy_striding_and_maps_the_same_world_points():
    rng = np.random.default_rng(0)
    volume = rng.random((2, *SOURCE.shape), dtype=np.float32)
    image = MetaTensor(torch.from_numpy(volume), affine=torch.as_tensor(SOURCE.affine),
                       meta={"filename_or_obj": "x.nii"})
    out = ReducePETLinear("clinicadl")(image)
    assert isinstance(out, MetaTensor) and out.shape == (2, *TARGET.shape)
    np.testing.assert_array_equal(out.numpy(), volume[:, 4:164:2, 8:200:2, 8:168:2])
    np.testing.assert_allclose(out.affine.numpy(), TARGET.affine)
    assert out.meta["filename_or_obj"] == "x.nii"
    # each output voxel holds the input voxel found at the same world point through the two affines
    ijk = np.stack([rng.integers(0, n, 50) for n in TARGET.shape])
    points = out.affine.numpy() @ np.vstack([ijk, np.ones(50)])
    src = np.rint(np.linalg.solve(SOURCE.affine, points)[:3]).astype(int)
    np.testing.assert_array_equal(out.numpy()[0][tuple(ijk)], volume[0][tuple(src)])


def test_antialias_sigma_for_1mm_to_2mm():
    fwhm = 2 * math.sqrt(2 * math.log(2))
    assert antialias_sigma_mm((1, 1, 1), (2, 2, 2)) == pytest.approx((math.sqrt(3) / fwhm,) * 3)
    assert antialias_sigma_mm((1, 1, 1), (2, 2, 2))[0] == pytest.approx(0.7355, abs=1e-4)
    assert antialias_sigma_mm((2.0,), (1.0,)) == (0.0,)  # never blur when not coarsening
    assert ReducePETLinear().sigma_voxels == pytest.approx((0.7355,) * 3, abs=1e-4)


def test_resampling_a_smooth_function_of_world_coordinates_matches_the_analytic_value():
    """A linear ramp passes a symmetric filter unchanged; a sinusoid of wavenumber k is scaled by the
    Gaussian's transfer exp(-sigma^2 k^2 / 2). Sampled at the 2 mm centres, the result is analytic."""
    L1, L2 = 24.0, 30.0  # mm

    def fn(x, y, z):
        return (1.0 + 0.004 * x - 0.003 * y + 0.002 * z
                + 0.5 * np.sin(2 * np.pi * y / L1 + 0.3) * np.cos(2 * np.pi * z / L2))

    reducer = ReducePETLinear("resample")
    out = reducer(source_image(fn))
    sigma = reducer.sigma_voxels[0] * SOURCE.spacing[0]
    def transfer(length):
        return math.exp(-0.5 * (sigma * 2 * math.pi / length) ** 2)

    x, y, z = world(TARGET)
    expected = (1.0 + 0.004 * x - 0.003 * y + 0.002 * z
                + 0.5 * transfer(L1) * transfer(L2) * np.sin(2 * np.pi * y / L1 + 0.3) * np.cos(2 * np.pi * z / L2))
    np.testing.assert_allclose(out.numpy()[0], expected, atol=2e-4)
    np.testing.assert_allclose(out.affine.numpy(), TARGET.affine)


def test_resampling_aliases_less_than_striding_and_keeps_low_frequencies():
    """A 0.45 cycle/mm pattern is above the 2 mm grid's Nyquist limit (0.25): a correct reduction removes it,
    striding folds it back at full amplitude. A 0.05 cycle/mm pattern survives both (within 3 %)."""
    def high(x, y, z):
        return np.cos(2 * np.pi * 0.45 * x) * np.cos(2 * np.pi * 0.4 * y)

    def low(x, y, z):
        return np.cos(2 * np.pi * 0.05 * x)

    rms = {}
    for mode in ("clinicadl", "resample"):
        rms[mode] = float(np.sqrt(np.mean(ReducePETLinear(mode)(source_image(high)).numpy() ** 2)))
        kept = ReducePETLinear(mode)(source_image(low)).numpy()[0]
        expected = low(*world(TARGET))
        assert np.abs(kept - expected).max() < 0.03, mode
    assert rms["clinicadl"] > 0.4  # aliased to a visible low-frequency pattern
    assert rms["resample"] < 0.1 * rms["clinicadl"]


def test_wrong_shapes_and_affines_get_clear_errors():
    with pytest.raises(InputDataError, match=r"shape \(1, 80, 96, 80\) is not .*pet-linear.*need no reduction"):
        ReducePETLinear()(torch.zeros(1, *TARGET.shape))
    with pytest.raises(InputDataError, match=r"shape \(169, 208, 179\) is not a channel-first"):
        ReducePETLinear()(np.zeros(SOURCE.shape, np.float32))
    shifted = SOURCE.affine
    shifted[0, 3] += 5
    image = MetaTensor(torch.zeros(1, *SOURCE.shape), affine=torch.as_tensor(shifted),
                       meta={"filename_or_obj": "s.nii.gz"})
    with pytest.raises(InputDataError, match=r"^s.nii.gz: affine .* is not Clinica pet-linear's"):
        ReducePETLinear()(image)
    with pytest.raises(ValueError, match="pet_input_mode must be one of"):
        ReducePETLinear("nearest")


@pytest.fixture(scope="module")
def pet_files(tmp_path_factory):
    """The same smooth uptake pattern written on clinicadl2, on pet-linear (RAS and x-flipped storage), and on
    two grids that are neither."""
    folder = tmp_path_factory.mktemp("pet_input")

    def uptake(x, y, z):
        return 1.2 + 0.8 * np.exp(-(x**2 + (y + 15) ** 2 + (z - 10) ** 2) / (2 * 35.0**2))

    src = uptake(*world(SOURCE)).astype(np.float32)
    flipped = SOURCE.affine
    flipped[0, 0], flipped[0, 3] = -1.0, SOURCE.affine[0, 3] + SOURCE.shape[0] - 1
    shifted = SOURCE.affine
    shifted[1, 3] += 3.0
    return {
        "target": write_nifti(folder / "on_clinicadl2.nii.gz", uptake(*world(TARGET)).astype(np.float32),
                              TARGET.affine),
        "source": write_nifti(folder / "pet_linear.nii.gz", src, SOURCE.affine),
        "flipped": write_nifti(folder / "pet_linear_las.nii.gz", src[::-1], flipped),
        "shifted": write_nifti(folder / "pet_linear_shifted.nii.gz", src, shifted),
        "other": write_nifti(folder / "other.nii.gz", np.ones((100, 100, 100), np.float32),
                             np.diag([1.5, 1.5, 1.5, 1])),
        "array": src,
    }


def test_loader_takes_either_grid(pet_files):
    on_target = LoadPETImage()(str(pet_files["target"]))
    assert on_target.shape == (1, *TARGET.shape)
    np.testing.assert_allclose(on_target.affine.numpy(), TARGET.affine)
    for mode in ("resample", "clinicadl"):
        reduced = LoadPETImage(mode)(str(pet_files["source"]))
        np.testing.assert_allclose(reduced.affine.numpy(), TARGET.affine)
        direct = ReducePETLinear(mode)(pet_files["array"][None])
        np.testing.assert_array_equal(reduced.numpy(), direct.numpy())
        # SPM/FSL-style x-flipped storage is the same image once in RAS
        np.testing.assert_array_equal(LoadPETImage(mode)(str(pet_files["flipped"])).numpy(), reduced.numpy())
        # a smooth image reduces to (nearly) what was written directly on the 2 mm grid
        np.testing.assert_allclose(reduced.numpy(), on_target.numpy(), atol=2e-3)
    assert reduced.meta["filename_or_obj"] == str(pet_files["source"])


def test_loader_refuses_other_grids_naming_the_file(pet_files):
    for key in ("other", "shifted"):
        with pytest.raises(InputDataError) as err:
            LoadPETImage()(str(pet_files[key]))
        message = str(err.value)
        assert message.startswith(str(pet_files[key])) and "not on grid 'clinicadl2'" in message
        assert "pet-linear images (169, 208, 179)" in message
    with pytest.raises(InputDataError, match="file not found"):
        LoadPETImage()("/nonexistent/pet.nii.gz")
    with pytest.raises(InputDataError, match="2 files given"):
        LoadPETImage()([str(pet_files["target"])] * 2)


def test_dictionary_versions_keep_the_subject_id(pet_files):
    item = LoadPETImaged("image", mode="clinicadl")({"id": "sub-0042", "image": [str(pet_files["source"])]})
    assert item["image"].shape == (1, *TARGET.shape) and item["image"].meta[SUBJECT_ID] == "sub-0042"
    image = MetaTensor(torch.from_numpy(pet_files["array"][None]), affine=torch.as_tensor(SOURCE.affine))
    out = ReducePETLineard("image", mode="clinicadl")({"image": image, "id": "x"})
    np.testing.assert_array_equal(out["image"].numpy()[0], pet_files["array"][4:164:2, 8:200:2, 8:168:2])
