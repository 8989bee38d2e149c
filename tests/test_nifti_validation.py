"""NIfTI checks (common.nifti) and the validating MONAI transforms (common.transforms.io)."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import TINY, write_nifti
from monai.data import CacheDataset, DataLoader, MetaTensor
from monai.transforms import Compose, SaveImage, ScaleIntensityd

from common.errors import InputDataError
from common.grids import GRIDS
from common.nifti import (
    MD_MAX_MM2_PER_S,
    MODALITIES,
    check_header,
    check_same_grid,
    get_modality,
    load_checked,
)
from common.transforms import LoadValidatedImage, LoadValidatedImaged


@pytest.fixture
def fa_data(rng):
    return rng.uniform(0.05, 0.95, TINY.shape).astype(np.float32)


@pytest.fixture
def fa_file(tmp_path, fa_data):
    return write_nifti(tmp_path / "sub_FA.nii.gz", fa_data, TINY.affine)


def _error(path, grid=TINY, modality="FA", **kwargs) -> str:
    with pytest.raises(InputDataError) as info:
        load_checked(path, grid, modality, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{os.fspath(path)}: "), message  # every message names the file first
    assert info.value.path == os.fspath(path)
    return message


# ------------------------------------------------------------------------------------------------------ valid files


def test_valid_file_loads_as_float32_on_the_grid(fa_file, fa_data):
    data, affine = load_checked(fa_file, TINY, "FA")
    assert data.dtype == np.float32 and data.shape == TINY.shape and data.flags.c_contiguous
    np.testing.assert_array_equal(data, fa_data)
    np.testing.assert_array_equal(affine, TINY.affine)


def test_integer_storage_with_scaling_is_read_as_scaled_float(tmp_path, tiny_grid):
    raw = np.arange(np.prod(TINY.shape), dtype=np.int16).reshape(TINY.shape) % 100
    img = nib.Nifti1Image(raw, TINY.affine)
    img.header.set_slope_inter(0.01, 0.0)
    nib.save(img, tmp_path / "fa_int.nii.gz")
    data, _ = load_checked(tmp_path / "fa_int.nii.gz", "tiny", "FA")  # grid by name
    np.testing.assert_allclose(data, raw * 0.01, atol=1e-6)


def test_trailing_singleton_dimension_is_squeezed(tmp_path, fa_data):
    path = write_nifti(tmp_path / "spm.nii", fa_data[..., None], TINY.affine)
    assert nib.load(path).shape == (*TINY.shape, 1)
    data, _ = load_checked(path, TINY, "FA")
    assert data.shape == TINY.shape
    np.testing.assert_array_equal(data, fa_data)


def test_overshoot_within_tolerance_is_accepted_and_clipped(tmp_path):
    data = np.full(TINY.shape, 0.5, np.float32)
    data[0, 0, 0], data[1, 1, 1] = 1 + 5e-6, -5e-6
    out, _ = load_checked(write_nifti(tmp_path / "fa.nii.gz", data, TINY.affine), TINY, "FA")
    assert out[0, 0, 0] == 1.0 and out[1, 1, 1] == 0.0


def test_spm_x_flipped_storage_gives_the_ras_array(tmp_path, rng):
    grid = GRIDS["spm1p5"]
    raw = rng.random(grid.shape, dtype=np.float32)
    flipped = write_nifti(tmp_path / "spm_flipped.nii.gz", raw, grid.x_flipped_affine)
    assert nib.aff2axcodes(nib.load(flipped).affine) == ("L", "A", "S")
    # same voxel centres stored in RAS order: voxel i of the flipped file sits at x = 90 - 1.5 i = -90 + 1.5 (120 - i)
    ras = write_nifti(tmp_path / "spm_ras.nii.gz", np.flip(raw, axis=0), grid.affine)
    from_flipped, affine = load_checked(flipped, grid, "FA")
    from_ras, _ = load_checked(ras, grid, "FA")
    np.testing.assert_array_equal(from_flipped, np.flip(raw, axis=0))
    np.testing.assert_array_equal(from_flipped, from_ras)
    np.testing.assert_array_equal(affine, grid.affine)


def test_permuted_axes_are_reoriented(tmp_path, fa_data):
    # stored as (y, x, z): array axis 0 runs along y
    stored = np.transpose(fa_data, (1, 0, 2))
    affine = TINY.affine[:, [1, 0, 2, 3]]
    data, _ = load_checked(write_nifti(tmp_path / "yxz.nii.gz", stored, affine), TINY, "FA")
    np.testing.assert_array_equal(data, fa_data)


def test_allow_resample_puts_an_off_grid_image_on_the_grid(tmp_path, fa_data):
    shifted = TINY.affine
    shifted[0, 3] += 2.0  # one voxel (2 mm) to the right: file voxel i sits at grid voxel i + 1
    path = write_nifti(tmp_path / "shifted.nii.gz", fa_data, shifted)
    _error(path)  # rejected by default
    data, affine = load_checked(path, TINY, "FA", allow_resample=True)
    np.testing.assert_allclose(data[1:], fa_data[:-1], atol=1e-6)
    np.testing.assert_array_equal(data[0], 0.0)  # outside the file's field of view
    np.testing.assert_array_equal(affine, TINY.affine)


# ------------------------------------------------------------------------------------------------------ bad files


def test_missing_file(tmp_path):
    assert _error(tmp_path / "absent.nii.gz").endswith("file not found")


@pytest.mark.parametrize(
    "content",
    [b"subject,FA\n1,0.4\n", gzip.compress(b"not an image at all " * 40), gzip.compress(b"\x00" * 200)[:30]],
    ids=["text", "gzip-of-garbage", "broken-gzip"],
)
def test_not_a_nifti(tmp_path, content):
    path = tmp_path / "fake.nii.gz"
    path.write_bytes(content)
    assert "not a readable NIfTI file" in _error(path)


def test_other_image_format_is_not_a_nifti(tmp_path, fa_data):
    path = tmp_path / "image.mgz"
    nib.save(nib.MGHImage(fa_data, TINY.affine), path)
    assert "not a NIfTI file (nibabel reads it as MGHImage)" in _error(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_file(tmp_path, fa_data, suffix):
    good = write_nifti(tmp_path / f"good{suffix}", fa_data, TINY.affine)
    blob = good.read_bytes()
    path = tmp_path / f"truncated{suffix}"
    path.write_bytes(blob[: len(blob) // 2])
    assert nib.load(path).shape == TINY.shape  # the header alone still parses ...
    check_header(path, TINY)  # ... so the cheap header check passes
    message = _error(path)  # ... and only reading the data finds the damage
    assert "the header is valid but the data cannot be read" in message and "truncated" in message


def test_wrong_shape(tmp_path):
    path = write_nifti(tmp_path / "short.nii.gz", np.zeros((8, 9, 6), np.float32), TINY.affine)
    message = _error(path)
    assert "not on grid 'tiny'" in message
    assert "shape (8, 9, 6), expected (8, 9, 7)" in message
    assert "affine" not in message.split(". Resample")[0]  # the affine itself is right


def test_wrong_affine(tmp_path, fa_data):
    affine = TINY.affine
    affine[:3, 3] += [3.0, 0.0, -1.0]
    message = _error(write_nifti(tmp_path / "moved.nii.gz", fa_data, affine))
    assert "not on grid 'tiny'" in message
    assert "affine [[2, 0, 0, -5], [0, 2, 0, -9], [0, 0, 2, -7]] (RAS)" in message
    assert "expected [[2, 0, 0, -8], [0, 2, 0, -9], [0, 0, 2, -6]]" in message


def test_4d_with_several_volumes(tmp_path, fa_data):
    path = write_nifti(tmp_path / "fa_md.nii.gz", np.stack([fa_data, fa_data], axis=-1), TINY.affine)
    message = _error(path)
    assert "4D image of shape (8, 9, 7, 2) holds 2 volumes where one 3D volume is expected" in message


@pytest.mark.parametrize(
    "dtype,name",
    [(np.complex64, "complex64"), (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "[('R', 'u1')")],
    ids=["complex", "rgb"],
)
def test_non_numeric_dtype(tmp_path, dtype, name):
    path = write_nifti(tmp_path / "odd.nii.gz", np.zeros(TINY.shape, dtype=dtype), TINY.affine)
    message = _error(path)
    assert f"data type {name}" in message and "not a real-valued scalar type" in message


def test_nan_and_inf_are_counted(tmp_path, fa_data):
    data = fa_data.copy()
    data[0, 0, :3] = np.nan
    data[4, 4, :2] = [np.inf, -np.inf]
    message = _error(write_nifti(tmp_path / "nan.nii.gz", data, TINY.affine))
    assert "5 of 504 voxels are NaN or Inf (3 NaN, 2 Inf)" in message


def test_fa_outside_unit_range(tmp_path, fa_data):
    data = fa_data.copy()
    data[0, 0, 0], data[1, 2, 3], data[2, 2, 2] = 1.25, 1.5, -0.2
    message = _error(write_nifti(tmp_path / "fa.nii.gz", data, TINY.affine))
    assert "values outside the FA range [0, 1]: min -0.2, max 1.5 (3 voxels out of range)" in message


def test_md_in_physical_units_hints_at_the_scaling(tmp_path, rng):
    md_mm2_s = rng.uniform(0.6e-3, 3.0e-3, TINY.shape).astype(np.float32)
    # in 10^-3 mm^2/s: out of [0, 1]
    message = _error(write_nifti(tmp_path / "md_e3.nii.gz", md_mm2_s * 1e3, TINY.affine), modality="MD")
    assert "values outside the MD range [0, 1]" in message
    assert f"MD / {MD_MAX_MM2_PER_S:g} mm^2/s" in message
    # in mm^2/s: inside [0, 1], but implausibly small
    message = _error(write_nifti(tmp_path / "md_raw.nii.gz", md_mm2_s, TINY.affine), modality="MD")
    assert "implausibly small for a scaled MD map" in message and "MD_MAX_MM2_PER_S" in message
    # correctly scaled: accepted
    data, _ = load_checked(write_nifti(tmp_path / "md.nii.gz", md_mm2_s / MD_MAX_MM2_PER_S, TINY.affine), TINY, "MD")
    np.testing.assert_allclose(data, md_mm2_s / MD_MAX_MM2_PER_S, rtol=1e-6)


def test_pet_range_is_suvr(tmp_path):
    suvr = np.full(TINY.shape, 1.2, np.float32)
    suvr[0, 0, :2] = (0.5, 2.0)  # a constant map is refused as no image
    load_checked(write_nifti(tmp_path / "pet.nii.gz", suvr, TINY.affine), TINY, "PET")
    suvr[0, 0, 0] = -0.5
    assert "values outside the PET range [0, 50]" in _error(
        write_nifti(tmp_path / "neg.nii.gz", suvr, TINY.affine), modality="PET"
    )


def test_unknown_modality_and_known_table():
    assert set(MODALITIES) == {"FA", "MD", "PET", "ANOMALY"}
    assert get_modality("fa") is MODALITIES["FA"]
    with pytest.raises(ValueError, match=r"unknown modality 'T1'; known modalities: FA, MD, PET, ANOMALY"):
        get_modality("T1")


def test_channels_on_different_grids_name_both_files(tmp_path, fa_data):
    fa = write_nifti(tmp_path / "sub_FA.nii.gz", fa_data, TINY.affine)
    other = TINY.affine
    other[1, 3] += 2.0
    md = write_nifti(tmp_path / "sub_MD.nii.gz", np.full(TINY.shape, 0.3, np.float32), other)
    with pytest.raises(InputDataError) as info:
        check_same_grid([fa, md])
    message = str(info.value)
    assert message.startswith(f"{md}: not on the same grid as {fa}")
    assert "[0, 2, 0, -7]" in message and "[0, 2, 0, -9]" in message
    # an x-flipped copy of the same grid is the same grid
    flipped = TINY.affine
    flipped[0, 3] += flipped[0, 0] * (TINY.shape[0] - 1)
    flipped[0, 0] *= -1
    check_same_grid([fa, write_nifti(tmp_path / "flipped.nii.gz", np.flip(fa_data, 0), flipped)])


# ------------------------------------------------------------------------------------------------ MONAI transforms


@pytest.fixture
def fa_md_files(tmp_path, fa_data):
    md_data = np.full(TINY.shape, 0.25, np.float32)
    md_data[0, 0, :2] = (0.0, 1.0)  # a constant map is refused as no image
    fa = write_nifti(tmp_path / "s1_FA.nii.gz", fa_data, TINY.affine)
    md = write_nifti(tmp_path / "s1_MD.nii.gz", md_data, TINY.affine)
    return [str(fa), str(md)], np.stack([fa_data, md_data])


def test_load_validated_image_stacks_channels_in_order(fa_md_files):
    files, expected = fa_md_files
    img = LoadValidatedImage(TINY, ["FA", "MD"])(files)
    assert isinstance(img, MetaTensor) and img.dtype == torch.float32 and tuple(img.shape) == (2, *TINY.shape)
    np.testing.assert_array_equal(img.numpy(), expected)
    np.testing.assert_array_equal(img.affine.numpy(), TINY.affine)
    assert img.meta["filename_or_obj"] == files[0]
    # reversed files with reversed modalities: channels follow the file order
    swapped = LoadValidatedImage(TINY, ["MD", "FA"])(files[::-1])
    np.testing.assert_array_equal(swapped.numpy(), expected[::-1])


def test_load_validated_image_checks_channel_count(fa_md_files):
    files, expected = fa_md_files
    with pytest.raises(InputDataError, match=r"1 channel file\(s\) given for 2 modalities \(FA, MD\)"):
        LoadValidatedImage(TINY, ["FA", "MD"])(files[:1])
    single = LoadValidatedImage(TINY, "FA")(files[0])  # one path, one modality -> one channel
    assert tuple(single.shape) == (1, *TINY.shape)
    np.testing.assert_array_equal(single[0].numpy(), expected[0])


def test_dictionary_transform_in_compose_and_cache_dataset(fa_md_files, tmp_path):
    files, expected = fa_md_files
    effect = np.zeros(TINY.shape, np.float32)
    effect[2:4, 2:4, 2:4] = 0.3
    effect_file = str(write_nifti(tmp_path / "s1_effect.nii.gz", effect, TINY.affine))
    data = [
        {"id": "s1", "image": files, "anomaly": effect_file},
        {"id": "s0", "image": files},  # a control: no anomaly map
    ]
    transform = Compose(
        [
            LoadValidatedImaged(
                ["image", "anomaly"],
                TINY,
                {"image": ["FA", "MD"], "anomaly": ["ANOMALY"]},
                allow_missing_keys=True,
            ),
            ScaleIntensityd("image", minv=0.0, maxv=1.0, channel_wise=True),
        ]
    )
    dataset = CacheDataset(data, transform, cache_rate=1.0, num_workers=0, progress=False)
    first = dataset[0]
    assert tuple(first["image"].shape) == (2, *TINY.shape) and tuple(first["anomaly"].shape) == (1, *TINY.shape)
    np.testing.assert_array_equal(first["anomaly"][0].numpy(), effect)
    np.testing.assert_array_equal(first["image"].affine.numpy(), TINY.affine)
    assert "anomaly" not in dataset[1]
    # CacheDataset holds the loaded volumes: deleting the files does not matter any more
    for f in [*files, effect_file]:
        os.remove(f)
    batch = next(iter(DataLoader(dataset, batch_size=2, num_workers=0, collate_fn=lambda items: items)))
    fa = batch[1]["image"][0].numpy()
    np.testing.assert_allclose(fa, (expected[0] - expected[0].min()) / np.ptp(expected[0]), atol=1e-6)


def test_dictionary_transform_error_names_the_file(fa_md_files, tmp_path):
    files, _ = fa_md_files
    bad = write_nifti(tmp_path / "bad_MD.nii.gz", np.full(TINY.shape, 2.0, np.float32), TINY.affine)
    loader = LoadValidatedImaged("image", TINY, ["FA", "MD"])
    with pytest.raises(InputDataError, match=rf"^{bad}: values outside the MD range"):
        loader({"image": [files[0], str(bad)]})
    with pytest.raises(ValueError, match="no entry for keys"):
        LoadValidatedImaged(["image", "anomaly"], TINY, {"image": ["FA", "MD"]})


def test_resampling_loader_refuses_channels_on_different_grids(fa_md_files, tmp_path):
    files, _ = fa_md_files
    other = TINY.affine
    other[0, 3] -= 2.0
    md = write_nifti(tmp_path / "s1_MD_moved.nii.gz", np.full(TINY.shape, 0.25, np.float32), other)
    LoadValidatedImage(TINY, ["FA", "MD"], allow_resample=True)([files[0], files[0]])  # same grid: fine
    with pytest.raises(InputDataError, match=rf"^{md}: not on the same grid as {files[0]}"):
        LoadValidatedImage(TINY, ["FA", "MD"], allow_resample=True)([files[0], str(md)])
    with pytest.raises(InputDataError, match=rf"^{md}: not on grid 'tiny'"):
        LoadValidatedImage(TINY, ["FA", "MD"])([files[0], str(md)])


def test_loaded_image_saves_back_on_the_grid_with_monai(fa_md_files, tmp_path):
    files, expected = fa_md_files
    img = LoadValidatedImage(TINY, ["FA"])(files[0])
    SaveImage(output_dir=tmp_path / "out", output_postfix="map", separate_folder=False, print_log=False)(img)
    saved = nib.load(tmp_path / "out" / "s1_FA_map.nii.gz")  # name derived from filename_or_obj
    np.testing.assert_array_equal(saved.affine, TINY.affine)
    np.testing.assert_array_equal(saved.get_fdata(dtype=np.float32), expected[0])
