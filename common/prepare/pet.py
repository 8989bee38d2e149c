"""``prepare pet``: a BIDS FDG PET (3D or a 4D frame series) -> SUVR on Clinica's ``pet-linear`` grid -> clinicadl2.

The steps follow Clinica's ``pet-linear`` with linear registrations only, each a small function:

1. input checks before any work (:func:`check_pet_inputs`): a readable 3D/4D NIfTI without NaN, a stated unit
   (the JSON sidecar's ``Units``: counts without one cannot be told from a SUV map), a readable T1w if given;
2. frames averaged (:func:`average_frames`), weighted by ``FrameDuration``, after a rigid ANTs correction of each
   frame to their mean when the frames disagree (:func:`frames_agree`);
3. the MNI -> PET mapping (:func:`mni_to_pet`): rigid PET -> T1w then affine T1w -> the ICBM152 T1 template, or
   affine PET -> the project's FDG uptake template when there is no T1w; both at 2 mm, the resolution a linear
   registration of an 8 mm FWHM image needs. The registrations only estimate matrices: the PET is resampled once,
   straight from its native grid onto the 1 mm ``clinica_pet_linear`` grid (:func:`resample`);
4. SUVR by the mean uptake in cerebellum + pons (:func:`suvr`, the reference region of the synthetic cohorts);
5. reduction onto clinicadl2 exactly as the bundles read a pet-linear image (:class:`ReducePETLinear`, resample mode);
6. the registration's own check (:func:`check_alignment`): the Dice of the PET's brain mask with the template's;
   below ``min_dice`` the subject fails and nothing of it is written.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from common.data._jsonio import write_bytes_atomic, write_json_atomic
from common.errors import InputDataError
from common.grids import Grid, get_grid
from common.nifti import _open

__all__ = [
    "BRAIN_FRACTION",
    "MIN_DICE",
    "PET_GRID",
    "REGISTRATION_GRID",
    "average_frames",
    "brain_mask",
    "check_alignment",
    "check_pet_inputs",
    "dice",
    "frames_agree",
    "mni_to_pet",
    "pet_qc_figure",
    "prepare_pet_subject",
    "register_linear",
    "resample",
    "suvr",
]

#: Grids: registration runs on clinicadl2 (2 mm), the PET is resampled onto pet-linear (1 mm) and reduced.
REGISTRATION_GRID, LINEAR_GRID, PET_GRID = "clinicadl2", "clinica_pet_linear", "clinicadl2"
#: Default Dice of the PET brain mask with the template brain below which a registration has failed. Correct
#: registrations of the test phantoms reach 0.95-0.97; a 15 mm shift or 15 degree rotation falls below 0.85.
MIN_DICE = 0.85
#: PET brain mask: the smoothed SUVR above this fraction of its 99th percentile, holes filled (FDG: white matter is
#: about a third of grey matter, CSF and scalp about a tenth), measured Dice 0.97 on cohort subjects in MNI.
BRAIN_FRACTION = 0.4
#: Frames agree (no motion correction) when each, smoothed, correlates with their mean at least this well and its
#: intensity centroid lies within FRAME_SHIFT_MM of the mean's.
FRAME_CORRELATION, FRAME_SHIFT_MM = 0.99, 0.5
_FRAME_SMOOTH_MM = 4.0
#: ANTs linear registration schedule: 8, 4 and 2 mm levels on 2 mm images, Mattes MI on 10 % of the voxels. The
#: short last level costs a third of the time of the default schedule for the same landmark error on the phantoms
#: (1.5 mm; 1.7 mm without the 2 mm level).
ANTS_SETTINGS = {"aff_iterations": (200, 100, 10), "aff_shrink_factors": (4, 2, 1), "aff_smoothing_sigmas": (2, 1, 0),
                 "aff_random_sampling_rate": 0.1}


# ------------------------------------------------------------------------------------------------- input checks


def _finite(path, data: np.ndarray) -> None:
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputDataError(path, f"{int(bad.sum())} voxels are NaN or infinite; fix or mask them before preparing")


def _load(path, kind: str, allow_4d: bool) -> nib.Nifti1Image:
    img = _open(path)
    ndim = len(img.shape)
    if ndim == 4 and not allow_4d:
        raise InputDataError(path, f"a {kind} must be 3D, got shape {tuple(img.shape)}")
    if ndim not in (3, 4) or (ndim == 4 and img.shape[3] < 1) or min(img.shape[:3]) < 4:
        raise InputDataError(path, f"a {kind} must be a 3D volume{' or a 4D frame series' if allow_4d else ''}, "
                                   f"got shape {tuple(img.shape)}")
    return img


def check_pet_inputs(pet: Path, sidecar: Path | None, t1w: Path | None = None) -> dict:
    """Read and check one subject's PET (and T1w) before any work; returns the arrays and the sidecar.

    Raises :class:`InputDataError` naming the file for: a missing or unreadable file, a PET that is not 3D or
    4D (a T1w that is not 3D), NaN or infinite voxels, negative uptake beyond noise, a missing sidecar or
    ``Units`` (counts without a unit), and ``FrameDuration`` that does not match the frames.
    """
    img = _load(pet, "PET", allow_4d=True)
    if sidecar is None or not Path(sidecar).is_file():
        raise InputDataError(pet, "no JSON sidecar: the PET's unit (BIDS \"Units\", e.g. \"Bq/mL\") is unknown, so "
                                  "counts cannot be told from SUV")
    try:
        meta = json.loads(Path(sidecar).read_text())
    except (OSError, ValueError) as err:
        raise InputDataError(sidecar, f"not a readable JSON sidecar ({err})") from None
    units = meta.get("Units") if isinstance(meta, dict) else None
    if not isinstance(units, str) or not units.strip():
        raise InputDataError(sidecar, f"no \"Units\" for {Path(pet).name}: a PET in counts without a unit cannot "
                                      "be prepared (BIDS requires it, e.g. \"Bq/mL\")")
    data = np.asarray(img.dataobj, dtype=np.float32)
    _finite(pet, data)
    data = data if data.ndim == 4 else data[..., None]
    peak = float(np.percentile(data, 99.9))
    if peak <= 0 or float(data.min()) < -0.5 * peak:
        raise InputDataError(pet, f"values {float(data.min()):.4g}..{float(data.max()):.4g} are not an uptake "
                                  "image (no positive signal, or strongly negative voxels)")
    durations = meta.get("FrameDuration")
    n_frames = data.shape[3]
    if durations is not None:
        durations = np.atleast_1d(np.asarray(durations, dtype=float))
        if durations.shape != (n_frames,) or not np.all(durations > 0):
            raise InputDataError(sidecar, f"\"FrameDuration\" has {durations.size} values for {n_frames} frames "
                                          "(or a non-positive one)")
    out = {"pet": data, "pet_affine": img.affine, "units": units.strip(),
           "frame_durations": durations, "t1w": None, "t1w_affine": None}
    if t1w is not None:
        t1 = _load(t1w, "T1w", allow_4d=False)
        t1_data = np.asarray(t1.dataobj, dtype=np.float32)
        _finite(t1w, t1_data)
        if float(t1_data.max()) <= float(t1_data.min()):
            raise InputDataError(t1w, "a constant image, not a T1w")
        out.update(t1w=t1_data, t1w_affine=t1.affine)
    return out


# -------------------------------------------------------------------------------------------- ANTs, as matrices


def _ants_image(data: np.ndarray, affine: np.ndarray):
    """An ANTs image of a RAS-affine array (ANTs works in LPS: x and y change sign)."""
    import ants

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return ants.from_numpy(np.ascontiguousarray(data, dtype=np.float32), origin=lps[:3, 3].tolist(),
                           spacing=spacing.tolist(), direction=lps[:3, :3] / spacing)


def _transform_matrix(path: str) -> np.ndarray:
    """4x4 RAS matrix of an ANTs linear transform file: fixed-space mm -> moving-space mm (ITK's direction)."""
    import ants

    tx = ants.read_transform(path)
    flip = np.array([-1.0, -1.0, 1.0])
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    mapped = np.array([np.asarray(tx.apply_to_point((p * flip).tolist())) * flip for p in points])
    matrix = np.eye(4)
    matrix[:3, 3] = mapped[0]
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T
    return matrix


def register_linear(fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray,
                    kind: str = "rigid", seed: int = 0) -> np.ndarray:
    """ANTs rigid or affine registration (Mattes mutual information, centre-of-mass start); returns the 4x4 RAS
    matrix mapping fixed-space mm to moving-space mm, so ``moving`` sampled at ``matrix @ x`` lies on ``fixed``."""
    import ants

    if kind not in ("rigid", "affine"):
        raise ValueError(f"kind must be 'rigid' or 'affine', got {kind!r}")
    with tempfile.TemporaryDirectory(prefix="pet_reg_") as tmp:
        result = ants.registration(
            _ants_image(fixed, fixed_affine), _ants_image(moving, moving_affine),
            type_of_transform="Rigid" if kind == "rigid" else "Affine", outprefix=os.path.join(tmp, "x_"),
            random_seed=int(seed), **ANTS_SETTINGS)
        return _transform_matrix(result["fwdtransforms"][0])


def resample(volume: np.ndarray, affine: np.ndarray, matrix: np.ndarray, shape, target_affine: np.ndarray,
             order: int = 1) -> np.ndarray:
    """``volume`` (on ``affine``) sampled at the target grid's voxel centres mapped by ``matrix`` (target mm ->
    source mm): one interpolation pass, zero outside the source's field of view."""
    vox = np.linalg.inv(affine) @ matrix @ target_affine
    return ndimage.affine_transform(np.asarray(volume, np.float32), vox[:3, :3], offset=vox[:3, 3],
                                    output_shape=tuple(shape), order=order, mode="constant", cval=0.0)


# ------------------------------------------------------------------------------------------------------- frames


def _frame_statistics(frames: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: correlation with the mean and centroid distance from the mean's (mm), both smoothed."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    sigma = (0.0, *(_FRAME_SMOOTH_MM / spacing))
    sm = ndimage.gaussian_filter(np.moveaxis(frames, 3, 0), sigma)
    mean = sm.mean(0)
    head = mean > 0.1 * np.percentile(mean, 99)
    x = sm[:, head].astype(np.float64)
    x -= x.mean(1, keepdims=True)
    m = x.mean(0)
    corr = (x @ m) / (np.linalg.norm(x, axis=1) * np.linalg.norm(m) + 1e-12)
    coords = np.argwhere(head).astype(np.float64)  # (n, 3) voxel indices
    w = np.clip(sm[:, head], 0, None).astype(np.float64)
    centroids = (w @ coords) / w.sum(1, keepdims=True) @ affine[:3, :3].T
    mean_centroid = (mean[head] @ coords) / mean[head].sum() @ affine[:3, :3].T
    return corr, np.linalg.norm(centroids - mean_centroid, axis=1)


def frames_agree(frames: np.ndarray, affine: np.ndarray) -> bool:
    """True when no frame moved: each smoothed frame correlates with the mean at ``FRAME_CORRELATION`` or more and
    its centroid lies within ``FRAME_SHIFT_MM`` of the mean's (noise alone leaves both far inside)."""
    if frames.shape[3] < 2:
        return True
    corr, shift = _frame_statistics(frames, affine)
    return bool(np.all(corr >= FRAME_CORRELATION) and np.all(shift <= FRAME_SHIFT_MM))


def average_frames(frames: np.ndarray, affine: np.ndarray, durations: np.ndarray | None = None,
                   seed: int = 0) -> tuple[np.ndarray, dict]:
    """``(X, Y, Z, T)`` frames -> their duration-weighted mean, each frame first rigidly registered to the
    unweighted mean when :func:`frames_agree` says they moved. Returns the mean and what was done."""
    n = frames.shape[3]
    weights = np.ones(n) if durations is None else np.asarray(durations, float)
    weights = weights / weights.sum()
    info = {"frames": int(n), "motion_corrected": False}
    if n == 1:
        return frames[..., 0].astype(np.float32), info
    if not frames_agree(frames, affine):
        reference = frames.mean(3)
        moved = []
        for t in range(n):
            matrix = register_linear(reference, affine, frames[..., t], affine, "rigid", seed)
            moved.append(resample(frames[..., t], affine, matrix, frames.shape[:3], affine))
            centre = affine @ np.r_[(np.array(frames.shape[:3]) - 1) / 2, 1.0]
            info.setdefault("frame_shift_mm", []).append(round(float(np.linalg.norm(matrix @ centre - centre)), 2))
        frames = np.stack(moved, axis=3)
        info["motion_corrected"] = True
    return np.tensordot(frames, weights, axes=([3], [0])).astype(np.float32), info


# ------------------------------------------------------------------------------------------------ registration


def _templates() -> dict:
    """The 2 mm registration targets (ICBM152 T1 and the FDG uptake template) and the MNI masks (cached)."""
    if not _TEMPLATES:
        from common.atlases import load_atlas
        from common.data.synthetic.pet import PETTemplate

        atlas, linear = load_atlas(REGISTRATION_GRID), load_atlas(LINEAR_GRID)
        _TEMPLATES.update(
            t1=atlas.t1 * atlas.brain, pet=PETTemplate(atlas).uptake, brain=atlas.brain,
            reference=linear.mask("cerebellum") | linear.mask("pons"))
    return _TEMPLATES


_TEMPLATES: dict = {}


def _downsample(volume: np.ndarray, affine: np.ndarray, mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A volume at ``mm`` resolution (same field of view), when it is finer: registration needs no more."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    factor = np.maximum(spacing / mm, 1e-6)
    if np.all(factor >= 0.95):
        return volume, affine
    factor = np.minimum(factor, 1.0)
    shape = np.maximum(np.round(np.array(volume.shape) * factor).astype(int), 4)
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * (np.array(volume.shape) / shape)
    new_affine[:3, 3] = affine[:3, :3] @ ((np.array(volume.shape) / shape - 1) / 2) + affine[:3, 3]
    sigma = np.sqrt(np.maximum((mm / spacing) ** 2 - 1, 0)) / 2.355
    smooth = ndimage.gaussian_filter(volume, sigma)
    return resample(smooth, affine, np.eye(4), shape, new_affine), new_affine


def mni_to_pet(pet: np.ndarray, pet_affine: np.ndarray, t1w: np.ndarray | None = None,
               t1w_affine: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, dict]:
    """4x4 matrix mapping MNI mm to the PET's mm: rigid PET -> T1w composed with affine T1w -> ICBM152 T1, or
    affine PET -> FDG template without a T1w. Both registrations run at 2 mm."""
    t = _templates()
    grid = get_grid(REGISTRATION_GRID)
    if t1w is None:
        matrix = register_linear(t["pet"], grid.affine, pet, pet_affine, "affine", seed)
        return matrix, {"route": "PET -> FDG template (affine)"}
    t1_small, t1_affine = _downsample(t1w, t1w_affine, 2.0)
    mni_to_t1 = register_linear(t["t1"], grid.affine, t1_small, t1_affine, "affine", seed)
    t1_to_pet = register_linear(t1_small, t1_affine, pet, pet_affine, "rigid", seed)
    return t1_to_pet @ mni_to_t1, {"route": "PET -> T1w (rigid), T1w -> ICBM152 T1 (affine)"}


# ----------------------------------------------------------------------------------------------- SUVR and checks


def suvr(volume: np.ndarray, reference: np.ndarray, path=None) -> tuple[np.ndarray, float]:
    """The volume divided by its mean in the reference mask (cerebellum + pons); refuses an empty reference."""
    values = volume[reference]
    mean = float(values.mean()) if values.size else 0.0
    covered = float(np.mean(values > 0)) if values.size else 0.0
    if mean <= 0 or covered < 0.9:
        raise InputDataError(path, f"the SUVR reference region (cerebellum + pons) is {100 * covered:.0f} % covered "
                                   "by the registered PET: the field of view misses it or the registration failed")
    return (volume / mean).astype(np.float32), mean


def brain_mask(suvr_map: np.ndarray, fraction: float = BRAIN_FRACTION) -> np.ndarray:
    """The PET's brain: smoothed SUVR above ``fraction`` of its 99th percentile, holes (ventricles) filled."""
    smooth = ndimage.gaussian_filter(suvr_map, 1.0)
    return ndimage.binary_fill_holes(smooth > fraction * np.percentile(smooth, 99))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def check_alignment(mask: np.ndarray, template_brain: np.ndarray, path, min_dice: float = MIN_DICE) -> float:
    """Dice of the registered PET's brain mask with the template's; a failed registration raises."""
    value = dice(mask, template_brain)
    if value < min_dice:
        raise InputDataError(path, f"registration to MNI failed its check: brain-mask Dice with the template "
                                   f"{value:.3f} < {min_dice:.2f}")
    return value


# ----------------------------------------------------------------------------------------------------- outputs


def _nifti_bytes(data: np.ndarray, grid: Grid, description: str) -> bytes:
    img = nib.Nifti1Image(np.asarray(data, np.float32), grid.affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(grid.affine, code=4)
    img.set_sform(grid.affine, code=4)
    img.header["descrip"] = description[:79].encode()
    return gzip.compress(img.to_bytes(), compresslevel=1)


def pet_qc_figure(suvr_map: np.ndarray, template_brain: np.ndarray, title: str) -> bytes:
    """PNG: axial, coronal and sagittal middle slices of the SUVR with the template brain's outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = [int(round(c)) for c in np.argwhere(template_brain).mean(0)]
    views = [("axial", np.s_[:, :, centre[2]]), ("coronal", np.s_[:, centre[1], :]),
             ("sagittal", np.s_[centre[0], :, :])]
    vmax = float(np.percentile(suvr_map[template_brain], 99.5))
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, (name, sl) in zip(axes, views, strict=True):
        ax.imshow(suvr_map[sl].T, origin="lower", cmap="hot", vmin=0, vmax=vmax)
        ax.contour(template_brain[sl].T.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def prepare_pet_subject(scan, out_dir: str | os.PathLike, min_dice: float = MIN_DICE, seed: int = 0,
                        save_pet_linear: bool = False) -> dict:
    """Prepare one BIDS PET scan into ``out_dir/<key>/``; returns its dataset.json record.

    Writes ``<key>_pet.nii.gz`` (SUVR on clinicadl2, what the bundles read), ``<key>_pet_qc.png``,
    ``<key>_pet_prepare.json`` (the MNI -> PET matrix, reference uptake, Dice, times) and, with
    ``save_pet_linear``, ``<key>_pet_linear.nii.gz`` (SUVR on the 1 mm pet-linear grid). Everything is checked
    (inputs, then the registration) before the first file is written.
    """
    start = time.perf_counter()
    sidecar = (scan.sidecars or {}).get("json")
    inputs = check_pet_inputs(Path(scan.image), sidecar, scan.t1w)
    times = {}
    tick = time.perf_counter()
    pet, frame_info = average_frames(inputs["pet"], inputs["pet_affine"], inputs["frame_durations"], seed)
    times["frames"] = time.perf_counter() - tick
    tick = time.perf_counter()
    matrix, route = mni_to_pet(pet, inputs["pet_affine"], inputs["t1w"], inputs["t1w_affine"], seed)
    times["registration"] = time.perf_counter() - tick
    tick = time.perf_counter()
    t = _templates()
    linear_grid, grid = get_grid(LINEAR_GRID), get_grid(PET_GRID)
    linear = resample(pet, inputs["pet_affine"], matrix, linear_grid.shape, linear_grid.affine)
    linear, reference_mean = suvr(linear, t["reference"], scan.image)
    from common.transforms.clinica import ReducePETLinear

    reduced = ReducePETLinear("resample").reduce_array(linear)
    times["resampling"] = time.perf_counter() - tick
    value = check_alignment(brain_mask(reduced), t["brain"], scan.image, min_dice)

    key = scan.key
    folder = Path(out_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{key}_pet.nii.gz"
    note = f"FDG PET SUVR (cerebellum+pons), prepared from {Path(scan.image).name}"
    write_bytes_atomic(image, _nifti_bytes(reduced, grid, note))
    if save_pet_linear:
        write_bytes_atomic(folder / f"{key}_pet_linear.nii.gz", _nifti_bytes(linear, linear_grid, note))
    write_bytes_atomic(folder / f"{key}_pet_qc.png",
                       pet_qc_figure(reduced, t["brain"], f"{key}: SUVR, template brain outline (Dice {value:.3f})"))
    times["total"] = time.perf_counter() - start
    report = {"source": str(scan.image), "units": inputs["units"], **frame_info, **route,
              "mni_to_pet_mm": np.round(matrix, 6).tolist(), "reference_uptake": reference_mean,
              "brain_dice": round(value, 4), "seconds": {k: round(v, 2) for k, v in times.items()}}
    write_json_atomic(folder / f"{key}_pet_prepare.json", report)
    return {"id": key, "image": f"{key}/{image.name}"}
