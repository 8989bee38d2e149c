"""FDG PET -> SUVR on Clinica's ``pet-linear`` grid -> clinicadl2, as ad_vae3d reads it (``prepare pet``).

Per subject, following Clinica's ``pet-linear`` with linear registrations only:

1. input checks before any work (:func:`check_pet_scan`): a readable 3D image or 4D frame series without NaN, a
   stated unit (the JSON sidecar's ``Units``: counts without one cannot be told from a SUV map), ``FrameDuration``
   matching the frames, a readable 3D T1w;
2. the frames averaged (:func:`average_frames`), weighted by ``FrameDuration``, after a rigid ANTs correction of
   each frame to their mean (two passes) when the frames disagree (:func:`frames_agree`);
3. the MNI -> PET mapping (:func:`mni_to_pet`): rigid PET -> T1w then affine T1w brain -> the ICBM152 T1 template,
   or affine PET -> the project's FDG uptake template when there is no T1w, at ``registration_mm`` (2 mm: an 8 mm
   FWHM image needs no finer). The registrations only estimate matrices: the PET is resampled once, straight from
   its native grid onto the 1 mm ``clinica_pet_linear`` grid (:func:`resample`);
4. SUVR by the mean uptake in cerebellum + pons (:func:`suvr`), the reference region of the synthetic PET cohort,
   negative voxels set to 0;
5. the reduction onto clinicadl2 the bundles apply to a pet-linear image (:class:`ReducePETLinear`, resample mode);
6. the registration's own check: the Dice of the PET's brain mask (:func:`brain_mask`) with the template brain
   (:func:`~common.prepare.registration.require_alignment`); below ``min_dice`` the subject fails, nothing written.

Not done: partial-volume correction, attenuation or scatter correction (the scanner's reconstruction does those),
non-linear normalisation (``pet-linear`` is linear by design).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from common.data._jsonio import write_bytes_atomic
from common.errors import InputDataError
from common.grids import Grid, get_grid
from common.nifti import _open
from common.prepare.registration import from_array, require_alignment
from common.prepare.runner import PrepareOptions

__all__ = [
    "ANTS_SETTINGS",
    "BRAIN_FRACTION",
    "GRID",
    "LINEAR_GRID",
    "average_frames",
    "brain_mask",
    "check_pet_scan",
    "frames_agree",
    "load_pet",
    "mni_to_pet",
    "prepare_pet_subject",
    "process_pet",
    "register_linear",
    "resample",
    "suvr",
]

#: The bundles' grid, and Clinica pet-linear's 1 mm grid the SUVR is computed on before the reduction.
GRID, LINEAR_GRID = "clinicadl2", "clinica_pet_linear"
#: PET brain mask: the smoothed image above this fraction of its 99th percentile, holes (ventricles) filled. FDG
#: white matter is about a third of grey matter, CSF and scalp about a tenth; Dice 0.97 with the template brain
#: on synthetic cohort subjects in MNI space.
BRAIN_FRACTION = 0.4
#: Frames agree (no motion correction) when each, smoothed, correlates with their mean at least this well and its
#: intensity centroid lies within FRAME_SHIFT_MM of the mean's; noise alone leaves both well inside.
FRAME_CORRELATION, FRAME_SHIFT_MM = 0.99, 0.5
_FRAME_SMOOTH_MM = 4.0
#: ANTs linear schedule: shrink 4, 2, 1 of the registration grid, Mattes MI on 10 % of the voxels. The short last
#: level costs a third of ANTs' default schedule for the same landmark error on the phantoms (1.5 mm; 1.7 mm
#: without the full-resolution level).
ANTS_SETTINGS = {"aff_iterations": (200, 100, 10), "aff_shrink_factors": (4, 2, 1), "aff_smoothing_sigmas": (2, 1, 0),
                 "aff_random_sampling_rate": 0.1}


# ------------------------------------------------------------------------------------------------- input checks


def _finite(path, data: np.ndarray) -> None:
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputDataError(path, f"{int(bad.sum())} NaN or infinite values (first at voxel/frame "
                                   f"{tuple(int(i) for i in np.argwhere(bad)[0])})")


def _image(path, kind: str, allow_4d: bool) -> nib.Nifti1Image:
    img = _open(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) not in ((3, 4) if allow_4d else (3,)) or min(shape[:3]) < 4:
        raise InputDataError(path, f"a {len(img.shape)}D image {tuple(img.shape)}: a {kind} is "
                                   f"{'a 3D volume or a 4D frame series' if allow_4d else '3D'}")
    return img


def _sidecar(scan) -> tuple[Path, dict]:
    path = (scan.sidecars or {}).get("json")
    if path is None or not Path(path).is_file():
        raise InputDataError(scan.image, "no JSON sidecar beside it: the PET's unit (BIDS \"Units\", e.g. \"Bq/mL\") "
                                         "is unknown, so counts cannot be told from SUV")
    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputDataError(path, f"not a readable JSON sidecar ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict):
        raise InputDataError(path, "a PET sidecar must be a JSON object")
    return Path(path), meta


def check_pet_scan(scan) -> dict:
    """Every check of one PET scan before any work; returns ``{"units", "frame_durations"}``.

    Raises :class:`InputDataError` naming the file for: a missing or unreadable image, a PET that is neither 3D nor
    4D (a T1w that is not 3D), NaN or infinite PET voxels, no positive uptake, a missing sidecar or ``Units`` (a PET
    in counts without a unit), a ``FrameDuration`` that does not match the frames."""
    img = _image(scan.image, "PET", allow_4d=True)
    sidecar, meta = _sidecar(scan)
    units = meta.get("Units")
    if not isinstance(units, str) or not units.strip():
        raise InputDataError(sidecar, f"no \"Units\" for {Path(scan.image).name}: a PET in counts without a unit "
                                      "cannot be prepared (BIDS requires it, e.g. \"Bq/mL\")")
    n_frames = int(img.shape[3]) if len(img.shape) == 4 else 1
    durations = meta.get("FrameDuration")
    if durations is not None:
        try:
            durations = np.atleast_1d(np.asarray(durations, dtype=float))
        except (TypeError, ValueError):
            durations = np.array([np.nan])
        if durations.shape != (n_frames,) or not np.all(np.isfinite(durations) & (durations > 0)):
            raise InputDataError(sidecar, f"\"FrameDuration\" {meta['FrameDuration']!r} does not give one positive "
                                          f"duration (s) for each of the {n_frames} frames")
    data = np.asarray(img.dataobj, dtype=np.float32)
    _finite(scan.image, data)
    peak = float(np.percentile(data, 99.9))
    if peak <= 0 or float(data.min()) < -0.5 * peak:
        raise InputDataError(scan.image, f"values {float(data.min()):.4g}..{float(data.max()):.4g} are not an uptake "
                                         "image (no positive signal, or strongly negative voxels)")
    if scan.t1w is not None:
        _image(scan.t1w, "T1w", allow_4d=False)
    return {"units": units.strip(), "frame_durations": durations}


def load_pet(scan, use_t1w: bool = True) -> dict:
    """The checked PET (``(X, Y, Z, T)`` float32) and affine, its unit and frame durations, and the T1w (or None)."""
    info = check_pet_scan(scan)
    img = _open(scan.image)
    data = np.asarray(img.dataobj, dtype=np.float32)
    out = {**info, "pet": data if data.ndim == 4 else data[..., None], "pet_affine": img.affine,
           "t1w": None, "t1w_affine": None}
    if use_t1w and scan.t1w is not None:
        t1 = _image(scan.t1w, "T1w", allow_4d=False)
        t1_data = np.asarray(t1.dataobj, dtype=np.float32).reshape(t1.shape[:3])
        _finite(scan.t1w, t1_data)
        if float(t1_data.max()) <= float(t1_data.min()):
            raise InputDataError(scan.t1w, "every voxel has one value: not a T1w image")
        out.update(t1w=t1_data, t1w_affine=t1.affine)
    return out


# -------------------------------------------------------------------------------------------- ANTs, as matrices


def _transform_matrix(path: str) -> np.ndarray:
    """4x4 RAS matrix of an ANTs linear transform file: fixed-space mm -> moving-space mm (ITK's direction;
    ANTs works in LPS, so x and y change sign on the way in and out)."""
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
    """ANTs rigid or affine registration (Mattes MI, centre-of-mass start, :data:`ANTS_SETTINGS`); returns the 4x4
    RAS matrix taking fixed-space mm to moving-space mm, so ``moving`` sampled at ``matrix @ x`` lies on ``fixed``."""
    import ants

    if kind not in ("rigid", "affine"):
        raise ValueError(f"kind must be 'rigid' or 'affine', got {kind!r}")
    with tempfile.TemporaryDirectory(prefix="prepare-pet-") as tmp:
        result = ants.registration(from_array(fixed, fixed_affine), from_array(moving, moving_affine),
                                   type_of_transform=kind.capitalize(), outprefix=os.path.join(tmp, "x_"),
                                   random_seed=int(seed), **ANTS_SETTINGS)
        return _transform_matrix(result["fwdtransforms"][0])


def resample(volume: np.ndarray, affine: np.ndarray, matrix: np.ndarray, shape, target_affine: np.ndarray,
             order: int = 1) -> np.ndarray:
    """``volume`` (on ``affine``) sampled at the target grid's voxel centres mapped by ``matrix`` (target mm ->
    source mm): one interpolation pass, zero outside the source's field of view, float32."""
    vox = np.linalg.inv(affine) @ matrix @ target_affine
    return ndimage.affine_transform(np.asarray(volume, np.float32), vox[:3, :3], offset=vox[:3, 3],
                                    output_shape=tuple(int(n) for n in shape), order=order, mode="constant", cval=0.0)


def _regrid(volume: np.ndarray, affine: np.ndarray, mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` on a grid of ``mm`` voxels over the same field of view (Gaussian pre-filter when coarser)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.allclose(spacing, mm, atol=0.05 * mm):
        return volume, affine
    shape = np.maximum(np.round(np.array(volume.shape) * spacing / mm).astype(int), 4)
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] / spacing * mm
    new_affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((mm / spacing - 1) / 2)  # same field of view
    sigma = np.sqrt(np.maximum((mm / spacing) ** 2 - 1, 0)) / 2.355
    return resample(ndimage.gaussian_filter(volume, sigma), affine, np.eye(4), shape, new_affine), new_affine


# ------------------------------------------------------------------------------------------------------- frames


def _frame_statistics(frames: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the correlation with the mean and the centroid's distance (mm) from the mean's, both smoothed."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    smooth = ndimage.gaussian_filter(np.moveaxis(frames, 3, 0), (0.0, *(_FRAME_SMOOTH_MM / 2.355 / spacing)))
    mean = smooth.mean(0)
    head = mean > 0.1 * np.percentile(mean, 99)
    x = smooth[:, head].astype(np.float64)
    x -= x.mean(1, keepdims=True)
    m = x.mean(0)
    corr = (x @ m) / (np.linalg.norm(x, axis=1) * np.linalg.norm(m) + 1e-12)
    coords = np.argwhere(head).astype(np.float64) @ affine[:3, :3].T
    weights = np.clip(smooth[:, head], 0, None).astype(np.float64)
    centroids = weights @ coords / weights.sum(1, keepdims=True)
    mean_centroid = mean[head] @ coords / mean[head].sum()
    return corr, np.linalg.norm(centroids - mean_centroid, axis=1)


def frames_agree(frames: np.ndarray, affine: np.ndarray) -> bool:
    """True when no frame moved: each smoothed frame correlates with the mean at :data:`FRAME_CORRELATION` or more
    and its centroid lies within :data:`FRAME_SHIFT_MM` of the mean's."""
    if frames.shape[3] < 2:
        return True
    corr, shift = _frame_statistics(frames, affine)
    return bool(np.all(corr >= FRAME_CORRELATION) and np.all(shift <= FRAME_SHIFT_MM))


def average_frames(frames: np.ndarray, affine: np.ndarray, durations: np.ndarray | None = None,
                   seed: int = 0) -> tuple[np.ndarray, dict]:
    """``(X, Y, Z, T)`` frames -> their duration-weighted mean, each frame first rigidly registered to the mean
    (twice: the plain mean, then the corrected frames' mean) when :func:`frames_agree` says they moved. Returns the
    mean and what was done (frame shifts in mm at the field of view's centre)."""
    n = frames.shape[3]
    weights = np.ones(n) if durations is None else np.asarray(durations, float)
    weights = weights / weights.sum()
    info: dict = {"frames": int(n), "motion_corrected": False}
    if n > 1 and not frames_agree(frames, affine):
        centre = affine @ np.r_[(np.array(frames.shape[:3]) - 1) / 2.0, 1.0]
        reference, moved = frames.mean(3), frames
        for _ in range(2):  # to the plain mean, then to the sharper mean of the corrected frames (as SPM's realign)
            matrices = [register_linear(reference, affine, frames[..., t], affine, "rigid", seed) for t in range(n)]
            moved = np.stack([resample(frames[..., t], affine, m, frames.shape[:3], affine)
                              for t, m in enumerate(matrices)], axis=3)  # each from the original: one interpolation
            reference = moved.mean(3)
        frames = moved
        info.update(motion_corrected=True,
                    frame_shift_mm=[round(float(np.linalg.norm(m @ centre - centre)), 2) for m in matrices])
    return np.tensordot(frames, weights, axes=([3], [0])).astype(np.float32), info


# ------------------------------------------------------------------------------------------------ registration


def brain_mask(volume: np.ndarray, fraction: float = BRAIN_FRACTION) -> np.ndarray:
    """A PET's brain: the image smoothed by one voxel above ``fraction`` of its 99th percentile, holes filled
    (any unit: the threshold is relative)."""
    smooth = ndimage.gaussian_filter(np.asarray(volume, np.float32), 1.0)
    return ndimage.binary_fill_holes(smooth > fraction * np.percentile(smooth, 99))


_TEMPLATES: dict = {}


def _templates(mm: float) -> dict:
    """Registration targets at ``mm`` (the ICBM152 T1 brain, the FDG uptake template) and the pet-linear reference
    region (cerebellum + pons), built once per process."""
    if mm not in _TEMPLATES:
        from common.atlases import load_atlas
        from common.data.synthetic.pet import PETTemplate
        from common.prepare.registration import template, to_nibabel_affine

        atlas = load_atlas(GRID)
        t1 = template(mm)
        t1_affine = to_nibabel_affine(t1)
        pet, pet_affine = _regrid(PETTemplate(atlas).uptake, atlas.affine, mm)
        linear = load_atlas(LINEAR_GRID)
        _TEMPLATES[mm] = {"t1": (t1.numpy(), t1_affine), "pet": (pet, pet_affine),
                          "reference": linear.mask("cerebellum") | linear.mask("pons")}
    return _TEMPLATES[mm]


def mni_to_pet(pet: np.ndarray, pet_affine: np.ndarray, t1w: np.ndarray | None = None,
               t1w_affine: np.ndarray | None = None, registration_mm: float = 2.0, seed: int = 0
               ) -> tuple[np.ndarray, str]:
    """The 4x4 matrix taking MNI mm to the PET's mm, and the route: rigid PET -> T1w composed with affine T1w brain
    -> ICBM152 T1 (the T1w brain is the PET's brain mask carried onto the T1w, dilated: no skull stripping needed),
    or affine PET -> FDG template without a T1w. Every image is registered at ``registration_mm``."""
    t = _templates(float(registration_mm))
    pet_small, pet_small_affine = _regrid(pet, pet_affine, registration_mm)
    if t1w is None:
        matrix = register_linear(*t["pet"], pet_small, pet_small_affine, "affine", seed)
        return matrix, "PET -> FDG template (affine)"
    t1_small, t1_affine = _regrid(t1w, t1w_affine, registration_mm)
    t1_to_pet = register_linear(t1_small, t1_affine, pet_small, pet_small_affine, "rigid", seed)
    head = resample(brain_mask(pet_small).astype(np.float32), pet_small_affine, t1_to_pet, t1_small.shape, t1_affine)
    t1_brain = t1_small * ndimage.binary_dilation(head > 0.5, iterations=2)
    mni_to_t1 = register_linear(*t["t1"], t1_brain, t1_affine, "affine", seed)
    return t1_to_pet @ mni_to_t1, "PET -> T1w (rigid), T1w brain -> ICBM152 T1 (affine)"


# ----------------------------------------------------------------------------------------------- SUVR and output


def suvr(volume: np.ndarray, reference: np.ndarray, path=None) -> tuple[np.ndarray, float]:
    """The volume divided by its mean in the reference mask (cerebellum + pons), negative voxels (noise, filtered
    back-projection) set to 0 as the PET range of the bundles requires; an InputDataError naming ``path`` when the
    registered PET does not cover the region (field of view, failed registration)."""
    values = volume[reference]
    covered = float(np.mean(values > 0)) if values.size else 0.0
    mean = float(values.mean()) if values.size else 0.0
    if covered < 0.9 or mean <= 0:
        raise InputDataError(path, f"the registered PET covers {100 * covered:.0f} % of the SUVR reference region "
                                   "(cerebellum + pons): the field of view misses it or the registration failed")
    return np.clip(volume / mean, 0, None).astype(np.float32), mean


def process_pet(scan, options: PrepareOptions | None = None, seed: int = 0) -> dict:
    """The whole PET pipeline of one scan, in memory: checks, frames, registration, pet-linear SUVR, clinicadl2,
    alignment check. Returns the maps (``linear`` on pet-linear, ``suvr`` on clinicadl2) and what was done."""
    from common.transforms.clinica import ReducePETLinear

    options = options or PrepareOptions()
    times, tick = {}, time.perf_counter()
    inputs = load_pet(scan, options.use_t1w)
    pet, info = average_frames(inputs["pet"], inputs["pet_affine"], inputs["frame_durations"], seed)
    times["load_and_frames"] = time.perf_counter() - tick
    tick = time.perf_counter()
    matrix, route = mni_to_pet(pet, inputs["pet_affine"], inputs["t1w"], inputs["t1w_affine"],
                               options.registration_mm, seed)
    times["registration"] = time.perf_counter() - tick
    tick = time.perf_counter()
    linear_grid = get_grid(LINEAR_GRID)
    linear = resample(pet, inputs["pet_affine"], matrix, linear_grid.shape, linear_grid.affine)
    linear, reference = suvr(linear, _templates(float(options.registration_mm))["reference"], scan.image)
    reduced = ReducePETLinear("resample").reduce_array(linear)
    times["resampling"] = time.perf_counter() - tick
    dice = require_alignment(brain_mask(reduced), GRID, scan.image, options.min_dice)
    return {"linear": linear, "suvr": reduced, "mni_to_pet": matrix, "brain_dice": dice, "route": route,
            "reference_uptake": reference, "units": inputs["units"], "seconds": times, **info}


def _save(path: Path, data: np.ndarray, grid: Grid, description: str) -> None:
    img = nib.Nifti1Image(np.asarray(data, np.float32), grid.affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(grid.affine, code=4)
    img.set_sform(grid.affine, code=4)
    img.header["descrip"] = description[:79].encode()
    write_bytes_atomic(path, gzip.compress(img.to_bytes(), compresslevel=1))


def prepare_pet_subject(scan, out_dir: str | os.PathLike, base: dict | None = None,
                        options: PrepareOptions | None = None, seed: int = 0, save_pet_linear: bool = False) -> dict:
    """Write ``<key>_pet.nii.gz`` (SUVR on clinicadl2), ``<key>_qc.png`` and, with ``save_pet_linear``,
    ``<key>_pet_linear.nii.gz`` (SUVR on pet-linear's 1 mm grid) into ``out_dir`` (the runner renames it to
    ``OUT/<key>``); return the subject's dataset.json entry (paths relative to OUT) with its QC numbers. Every
    check (inputs, then the registration's) runs before the first file is written."""
    options = options or PrepareOptions()
    start = time.perf_counter()
    result = process_pet(scan, options, seed)
    key, out_dir = scan.key, Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    note = f"FDG PET SUVR (cerebellum+pons) from {Path(scan.image).name}"
    _save(out_dir / f"{key}_pet.nii.gz", result["suvr"], get_grid(GRID), note)
    if save_pet_linear:
        _save(out_dir / f"{key}_pet_linear.nii.gz", result["linear"], get_grid(LINEAR_GRID), note)
    qc = {"brain_dice": round(result["brain_dice"], 4), "route": result["route"], "source": str(scan.image),
          "units": result["units"], "reference_uptake": round(result["reference_uptake"], 6),
          "frames": result["frames"], "motion_corrected": result["motion_corrected"],
          "mni_to_pet_mm": np.round(result["mni_to_pet"], 5).tolist()}
    if "frame_shift_mm" in result:
        qc["frame_shift_mm"] = result["frame_shift_mm"]
    if options.qc_figure:
        from common.prepare.qc import qc_figure

        qc_figure(out_dir / f"{key}_qc.png", {"SUVR": result["suvr"]}, GRID,
                  title=f"{key}: SUVR, brain-mask Dice {result['brain_dice']:.3f}", limits={"SUVR": (0.0, 2.5)})
        qc["figure"] = f"{key}/{key}_qc.png"
    qc["seconds"] = {**{k: round(v, 2) for k, v in result["seconds"].items()},
                     "total": round(time.perf_counter() - start, 2)}
    return {**(base or {"id": key}), "image": f"{key}/{key}_pet.nii.gz", "qc": qc}
