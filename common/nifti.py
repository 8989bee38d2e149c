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
    "AFFINE_TOLERANCE_MM",
    "MD_MAX_MM2_PER_S",
    "MODALITIES",
    "QFORM_SFORM_TOLERANCE_MM",
    "RANGE_TOLERANCE",
    "HeaderInfo",
    "ModalitySpec",
    "anatomy_score",
    "check_anatomy",
    "check_content",
    "check_header",
    "check_same_grid",
    "get_modality",
    "load_checked",
]

MD_MAX_MM2_PER_S = 3.5e-3
"""MD maps are stored as ``MD / MD_MAX_MM2_PER_S`` so that both DTI channels lie in [0, 1] like FA."""

RANGE_TOLERANCE = 1e-5
"""Values this far outside a modality's range are accepted (and clipped): float rounding of a [0, 1] map."""

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference (mm) between a file's RAS affine and the grid's for the file to be on the grid."""

QFORM_SFORM_TOLERANCE_MM = 1.0
"""Largest displacement (mm) of any voxel centre between a file's qform and sform when both are set.

nibabel (like SPM and MONAI) uses the sform, FSL and some viewers the qform: two affines that disagree put
the same file in two places. Legitimate writers set both from one affine (the qform can only drop a shear,
which moves no voxel by more than a fraction of a mm in a scanner-to-MNI affine), so beyond 1 mm it is
refused, naming both affines."""

#: Modalities that are maps of a brain, checked for degenerate content and, where an atlas exists, anatomy.
MAP_MODALITIES = ("FA", "MD", "PET")

ANATOMY_MARGIN = 0.3
"""An FA map is refused when its :func:`anatomy_score` is below ``-ANATOMY_MARGIN``, an MD map when above
``+ANATOMY_MARGIN``: clear evidence of the other modality. Maps without tissue contrast (|score| small, e.g.
noise) are left to the other checks."""

ANATOMY_GRIDS = ("spm1p5",)
"""Grids whose FA and MD maps get the anatomy check (:func:`check_anatomy`): the DTI grid, whose atlas the
bundles already use. Elsewhere (tiny test grids, PET's clinicadl2) it is skipped."""


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
    _check_qform_sform(path, img, shape)
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


def _check_qform_sform(path, img: nib.Nifti1Image, shape: tuple[int, ...]) -> None:
    """Refuse a file whose qform and sform (both set) place some voxel centre more than
    :data:`QFORM_SFORM_TOLERANCE_MM` apart. The displacement is affine in the voxel index, so its maximum over
    the volume is reached at one of the 8 corner voxels."""
    header = img.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if not qcode or not scode or qform is None or sform is None:
        return
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    shift = float(np.max(np.linalg.norm((qform - sform)[:3] @ corners, axis=0)))
    if shift > QFORM_SFORM_TOLERANCE_MM:
        raise InputDataError(
            path,
            f"the qform and sform disagree by up to {shift:.3g} mm (tolerance {QFORM_SFORM_TOLERANCE_MM:g} mm): "
            f"qform {_fmt_affine(qform)} (code {int(qcode)}), sform {_fmt_affine(sform)} (code {int(scode)}); "
            "tools that read the other one place this image elsewhere. Fix the header (e.g. set the qform "
            "from the sform: fslorient -copysform2qform)",
        )


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
    check_content(path, data, spec, lo, hi)

    if info.on_grid:
        data = np.ascontiguousarray(orientations.apply_orientation(data, info.ornt))
    else:
        data = _resample_linear(data, info.image.affine, grid)
    if spec.name in ("FA", "MD") and grid.name in ANATOMY_GRIDS:
        check_anatomy(path, data, spec.name, grid)
    return data, grid.affine


def check_content(path, data: np.ndarray, modality: str | ModalitySpec, lo: float | None = None,
                  hi: float | None = None) -> None:
    """Refuse a map that holds no image: all zero, one constant value, or only two values (a binary mask
    given as a map). One vectorised pass; ``lo``/``hi`` (the data's min and max) save two more.
    Anomaly maps are exempt (a control's is all zero, a lesion mask is binary)."""
    spec = get_modality(modality)
    if spec.name not in MAP_MODALITIES:
        return
    lo = float(np.min(data)) if lo is None else lo
    hi = float(np.max(data)) if hi is None else hi
    if hi == 0.0 and lo == 0.0:
        raise InputDataError(path, f"every voxel is 0: an empty image, not a {spec.name} map")
    if lo == hi:
        raise InputDataError(path, f"every voxel has the value {_fmt_value(lo)}: a constant image, not a "
                                   f"{spec.name} map")
    if not np.any((data != lo) & (data != hi)):
        raise InputDataError(
            path,
            f"only two distinct values ({_fmt_value(lo)} and {_fmt_value(hi)}): a binary mask, not a {spec.name} map",
        )


def anatomy_score(data: np.ndarray, grid: str | Grid) -> float:
    """Correlation of the map with the atlas white matter minus its correlation with the atlas CSF, inside the
    atlas brain (``data`` in the grid's RAS layout). FA is high in white matter and low in CSF (score > 0);
    MD is highest in CSF (score < 0). Refused beyond :data:`ANATOMY_MARGIN` on the wrong side.

    Measured (1.5 mm grid, synthetic PD cohorts of 3+3, 2+3 patchy and 2+2 subjects, patients at 5 % and
    20 % effect): FA +1.29 .. +1.36, MD -1.17 .. -0.64. So the sign separates the two with a margin of at
    least 0.64 on each side; an FA file given as MD (or MD as FA) has the other sign. With the 0.3 dead zone
    the smallest margins are 0.34 (an MD map given as FA) and 0.99 (FA given as MD); correct maps are
    at least 1.59 (FA) and 0.94 (MD) from being refused.
    """
    weights = _anatomy_weights(get_grid(grid).name)
    values = data[weights[0]].astype(np.float64)
    values -= values.mean()
    norm = float(np.sqrt(values @ values))
    return 0.0 if norm == 0.0 else float(values @ weights[1] / norm)


_ANATOMY_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _anatomy_weights(grid_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(brain mask, unit-norm wm - unit-norm csf, both centred inside the brain): the score is one dot product."""
    if grid_name not in _ANATOMY_CACHE:
        from common.atlases import load_atlas

        atlas = load_atlas(grid_name)
        brain = atlas.brain

        def unit(x: np.ndarray) -> np.ndarray:
            x = x[brain].astype(np.float64)
            x -= x.mean()
            return x / np.sqrt(x @ x)

        _ANATOMY_CACHE[grid_name] = (brain, unit(atlas.wm) - unit(atlas.csf))
    return _ANATOMY_CACHE[grid_name]


def check_anatomy(path, data: np.ndarray, modality: str, grid: str | Grid) -> None:
    """Refuse an FA map that looks like MD or the reverse (:func:`anatomy_score` of the wrong sign): a dataset
    whose channels are swapped, or a file of the other modality, would otherwise train and infer silently."""
    score = anatomy_score(data, grid)
    expected, other = ("FA", "MD") if modality == "FA" else ("MD", "FA")
    wrong = score < -ANATOMY_MARGIN if modality == "FA" else score > ANATOMY_MARGIN
    if wrong:
        raise InputDataError(
            path,
            f"does not look like a {expected} map: inside the brain it is "
            f"{'lower' if modality == 'FA' else 'higher'} in white matter than in CSF (atlas correlation "
            f"score {score:+.2f}; {expected} maps score {'> 0' if modality == 'FA' else '< 0'}), as a {other} "
            f"map does. Check the dataset's \"modality\" mapping and the file",
        )


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
