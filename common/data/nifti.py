"""Loading NIfTI volumes with every check a user's data needs before it reaches a network.

The models assume one fixed grid (:mod:`common.grids`) and a known value range per modality; a file that
breaks either gives silently wrong anomaly maps rather than a crash. So each file is checked up front and
every failure is an :class:`~common.errors.InputDataError` that names the file and the problem.

Order of work, cheapest first: file exists -> header parses as NIfTI -> dimensions, data type, shape and
affine (from the header alone) -> one read of the data -> finite values and value range (vectorised).
Orientation is normalised with nibabel before the affine is compared, so SPM's x-flipped storage of the
1.5 mm grid is accepted and returned in the grid's RAS layout.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations

from common.errors import InputDataError
from common.grids import Grid, get_grid

__all__ = [
    "ModalitySpec",
    "MODALITIES",
    "MD_MAX_MM2_PER_S",
    "RANGE_TOLERANCE",
    "AFFINE_TOLERANCE_MM",
    "get_modality",
    "HeaderInfo",
    "check_header",
    "load_checked",
    "check_same_grid",
]

MD_MAX_MM2_PER_S = 3.5e-3
"""MD maps are stored as ``MD / MD_MAX_MM2_PER_S`` so that both DTI channels lie in [0, 1] like FA."""

RANGE_TOLERANCE = 1e-5
"""Values this far outside a modality's range are accepted (and clipped): float rounding of a [0, 1] map."""

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference (mm) between a file's RAS affine and the grid's for the file to be on the grid."""


@dataclass(frozen=True)
class ModalitySpec:
    """Allowed values of one image modality, and how to explain a violation."""

    name: str
    low: float
    high: float
    description: str
    hint: str = ""
    """Appended to out-of-range errors: the usual cause and its fix."""
    plausible_max: float | None = None
    """A real map's maximum is at least this; a smaller non-zero maximum means wrong units (MD in mm^2/s)."""


_MD_HINT = (
    f"MD maps must be stored scaled to [0, 1] as MD / {MD_MAX_MM2_PER_S:g} mm^2/s (MD_MAX_MM2_PER_S): "
    f"divide a map in mm^2/s by {MD_MAX_MM2_PER_S:g}, one in 10^-3 mm^2/s (um^2/ms) by {MD_MAX_MM2_PER_S * 1e3:g}"
)

MODALITIES: dict[str, ModalitySpec] = {
    "FA": ModalitySpec("FA", 0.0, 1.0, "DTI fractional anisotropy"),
    "MD": ModalitySpec(
        "MD",
        0.0,
        1.0,
        f"DTI mean diffusivity scaled by {MD_MAX_MM2_PER_S:g} mm^2/s",
        hint=_MD_HINT,
        # Scaled CSF is ~0.85 and tissue ~0.2; a maximum below 0.05 is MD left in mm^2/s (max ~3e-3).
        plausible_max=0.05,
    ),
    "PET": ModalitySpec(
        "PET", 0.0, 50.0, "FDG PET SUVR (non-negative)", hint="PET maps must be SUVR (uptake / reference region)"
    ),
    "ANOMALY": ModalitySpec(
        "ANOMALY", 0.0, 1.0, "ground-truth anomaly / effect map", hint="anomaly maps hold fractions in [0, 1]"
    ),
}


def get_modality(name: str | ModalitySpec) -> ModalitySpec:
    """The :class:`ModalitySpec` of a modality name (case-insensitive), with a clear error for unknown names."""
    if isinstance(name, ModalitySpec):
        return name
    spec = MODALITIES.get(str(name).upper())
    if spec is None:
        raise ValueError(f"unknown modality {name!r}; known modalities: {', '.join(MODALITIES)}")
    return spec


@dataclass(frozen=True)
class HeaderInfo:
    """What the header says about a file, in the grid's RAS layout."""

    image: nib.Nifti1Image
    shape: tuple[int, ...]
    """Stored 3D shape (trailing singleton dimensions dropped)."""
    ornt: np.ndarray
    """nibabel orientation that takes the stored array to RAS."""
    ras_shape: tuple[int, int, int]
    ras_affine: np.ndarray
    on_grid: bool


def _fmt_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _fmt_affine(affine: np.ndarray) -> str:
    rows = np.round(np.asarray(affine, dtype=float)[:3], 3) + 0.0  # + 0.0 turns -0.0 into 0.0
    return "[" + ", ".join("[" + ", ".join(f"{v:g}" for v in row) + "]" for row in rows) + "]"


def _fmt_value(value: float) -> str:
    return f"{value:.6g}"


def _ras_geometry(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """(orientation to RAS, shape and affine after applying it): what the header means in the grid's layout."""
    ornt = nib.io_orientation(affine)
    return ornt, tuple(int(shape[int(axis)]) for axis in ornt[:, 0]), affine @ orientations.inv_ornt_aff(ornt, shape)


def _open(path: str | os.PathLike) -> nib.Nifti1Image:
    """Parse the header only (nibabel reads data lazily); any parse failure means 'not a NIfTI'."""
    if not os.path.exists(path):
        raise InputDataError(path, "file not found")
    if not os.path.isfile(path):
        raise InputDataError(path, "is not a file")
    try:
        # mmap=False: the data is read once into memory, and no file handle outlives the call.
        img = nib.load(os.fspath(path), mmap=False)
    except Exception as err:  # nibabel raises ImageFileError, HeaderDataError, OSError, EOFError, ...
        detail = str(err).replace(os.fspath(path), os.path.basename(path))  # the path leads the message already
        raise InputDataError(path, f"not a readable NIfTI file ({type(err).__name__}: {detail})") from None
    if not isinstance(img, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and their .hdr/.img pairs
        raise InputDataError(path, f"not a NIfTI file (nibabel reads it as {type(img).__name__})")
    return img


def _inspect(path: str | os.PathLike, grid: Grid, allow_resample: bool) -> HeaderInfo:
    img = _open(path)
    full_shape = tuple(int(s) for s in img.shape)
    shape = full_shape
    while len(shape) > 3 and shape[-1] == 1:  # SPM writes (X, Y, Z, 1)
        shape = shape[:-1]
    if len(shape) != 3:
        if len(shape) < 3:
            raise InputDataError(
                path, f"{len(shape)}D image of shape {_fmt_shape(full_shape)}; a 3D volume is expected"
            )
        n_volumes = int(np.prod(shape[3:]))
        raise InputDataError(
            path,
            f"{len(shape)}D image of shape {_fmt_shape(full_shape)} holds {n_volumes} volumes where one 3D volume "
            "is expected (store each channel in its own 3D file)",
        )
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf":
        raise InputDataError(
            path, f"data type {dtype} is not a real-valued scalar type (complex and RGB images cannot be used)"
        )

    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)):
        raise InputDataError(path, "the header holds no valid affine (sform/qform)")
    ornt, ras_shape, ras_affine = _ras_geometry(affine, shape)
    shape_ok = ras_shape == tuple(grid.shape)
    affine_ok = bool(np.allclose(ras_affine, grid.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM))
    if not (shape_ok and affine_ok) and not allow_resample:
        parts = []
        if not shape_ok:
            stored = _fmt_shape(shape) + ("" if ras_shape == shape else f" (RAS {_fmt_shape(ras_shape)})")
            parts.append(f"shape {stored}, expected {_fmt_shape(grid.shape)}")
        if not affine_ok:
            parts.append(f"affine {_fmt_affine(ras_affine)} (RAS), expected {_fmt_affine(grid.affine)}")
        raise InputDataError(
            path,
            f"not on grid {grid.name!r}: " + "; ".join(parts) + ". Resample it onto the grid first "
            "(or load with allow_resample=True)",
        )
    return HeaderInfo(img, shape, ornt, ras_shape, ras_affine, shape_ok and affine_ok)


def check_header(path: str | os.PathLike, grid: str | Grid, allow_resample: bool = False) -> HeaderInfo:
    """Header-only checks (NIfTI, 3D, numeric type, shape, affine): no voxel is read, so it is cheap."""
    return _inspect(path, get_grid(grid), allow_resample)


def _resample_linear(data: np.ndarray, src_affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Trilinear resampling onto ``grid``; zero outside the source field of view.

    Linear (not cubic) interpolation keeps every value inside the range of its neighbours, so a map that
    passed the range check still passes it after resampling.
    """
    from scipy.ndimage import affine_transform

    vox = np.linalg.solve(src_affine, grid.affine)  # grid voxel -> source voxel
    return affine_transform(
        data, vox[:3, :3], offset=vox[:3, 3], output_shape=grid.shape, order=1, mode="constant", cval=0.0
    ).astype(np.float32, copy=False)


def load_checked(
    path: str | os.PathLike, grid: str | Grid, modality: str | ModalitySpec, allow_resample: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Load one 3D volume on ``grid`` as float32 in the grid's RAS layout, or raise InputDataError.

    Returns ``(data, affine)`` with ``data.shape == grid.shape`` and ``affine`` the grid's RAS affine.
    Values within :data:`RANGE_TOLERANCE` outside the modality's range are clipped to it.
    With ``allow_resample``, a file off the grid is resampled onto it (trilinear) instead of rejected.
    """
    grid = get_grid(grid)
    spec = get_modality(modality)
    info = _inspect(path, grid, allow_resample)
    try:
        data = info.image.get_fdata(dtype=np.float32, caching="unchanged")
    except (EOFError, OSError, zlib.error, ValueError) as err:
        raise InputDataError(
            path, f"the header is valid but the data cannot be read; the file is truncated or damaged ({err})"
        ) from None
    data = data.reshape(info.shape)

    lo, hi = float(np.min(data)), float(np.max(data))  # NaN propagates through min/max: one pass each
    if not (np.isfinite(lo) and np.isfinite(hi)):
        n_nan = int(np.count_nonzero(np.isnan(data)))
        n_inf = int(np.count_nonzero(np.isinf(data)))
        raise InputDataError(
            path,
            f"{n_nan + n_inf} of {data.size} voxels are NaN or Inf ({n_nan} NaN, {n_inf} Inf); "
            "set them to a valid value (e.g. 0 outside the brain)",
        )
    if lo < spec.low - RANGE_TOLERANCE or hi > spec.high + RANGE_TOLERANCE:
        n_out = int(np.count_nonzero((data < spec.low - RANGE_TOLERANCE) | (data > spec.high + RANGE_TOLERANCE)))
        message = (
            f"values outside the {spec.name} range [{spec.low:g}, {spec.high:g}]: min {_fmt_value(lo)}, "
            f"max {_fmt_value(hi)} ({n_out} {'voxel' if n_out == 1 else 'voxels'} out of range)"
        )
        raise InputDataError(path, message + (f". {spec.hint}" if spec.hint else ""))
    if spec.plausible_max is not None and 0.0 < hi < spec.plausible_max:
        raise InputDataError(
            path,
            f"{spec.name} maximum {_fmt_value(hi)} is implausibly small for a scaled {spec.name} map "
            f"(below {spec.plausible_max:g}: the map looks unscaled). {spec.hint}",
        )
    if lo < spec.low or hi > spec.high:
        np.clip(data, spec.low, spec.high, out=data)

    if info.on_grid:
        data = np.ascontiguousarray(orientations.apply_orientation(data, info.ornt))
    else:
        data = _resample_linear(data, info.image.affine, grid)
    return data, grid.affine


def check_same_grid(paths: Sequence[str | os.PathLike]) -> None:
    """Raise InputDataError naming both files when channels of one subject are not on one grid.

    Compared in RAS (so an x-flipped and a RAS copy of one grid match); headers only.
    """
    reference = None
    for path in paths:
        img = _open(path)
        if len(img.shape) < 3:
            continue  # not a volume at all: reported by the per-file checks
        _, ras_shape, ras_affine = _ras_geometry(img.affine, tuple(int(s) for s in img.shape[:3]))
        if reference is None:
            reference = (path, ras_shape, ras_affine)
            continue
        ref_path, ref_shape, ref_affine = reference
        if ras_shape != ref_shape or not np.allclose(ras_affine, ref_affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
            raise InputDataError(
                path,
                f"not on the same grid as {os.fspath(ref_path)}: shape {_fmt_shape(ras_shape)} affine "
                f"{_fmt_affine(ras_affine)} vs shape {_fmt_shape(ref_shape)} affine {_fmt_affine(ref_affine)} "
                "(RAS); the channels of a subject must share one grid",
            )
