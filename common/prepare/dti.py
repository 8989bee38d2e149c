"""DWI -> FA and MD on the ``spm1p5`` grid, as the PD bundles read them (``python -m common prepare dti``).

Per subject: the input checks (:func:`check_dwi_scan`, before any work), a brain mask (dipy ``median_otsu`` on the
mean b=0 image), a tensor fit by **weighted least squares** (dipy ``TensorModel(fit_method="WLS")``), FA and MD,
registration of the mean b=0 image to the ICBM152 template (ANTsPy: rigid + affine + SyN, Mattes mutual
information, since b=0 has a T2 contrast and the template is a T1), or through the subject's T1w when there is one
(b=0 rigidly onto the T1w, the T1w brain onto the template), then one resampling of FA, MD and the mask from
native space onto ``spm1p5``. MD is stored divided by ``MD_MAX_MM2_PER_S`` (3.5e-3 mm^2/s) and clipped to [0, 1],
the scaling of the synthetic cohorts and the bundles (``common.nifti``); both maps are zero outside the warped brain.

Why WLS: the log-linear fit (OLS) weighs every measurement alike although taking the log inflates the noise of the
low signals (high b, CSF), which biases FA and MD at clinical SNR; WLS re-weights by the predicted signal
(Veraart et al., NeuroImage 2013: as accurate as non-linear least squares in practice) at about the cost of OLS,
while NLLS and RESTORE cost tens of times more per voxel for differences well inside the tolerances we test.
Not done: eddy-current, motion and susceptibility-distortion correction, Gibbs-ringing and noise removal (use
FSL ``eddy``/``topup`` or dipy's ``patch2self`` beforehand when the data need them; docs/prepare.md).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from common.errors import InputDataError
from common.grids import get_grid
from common.nifti import MD_MAX_MM2_PER_S
from common.prepare.bids import BidsScan
from common.prepare.registration import from_array, register, require_alignment, template, to_grid
from common.prepare.runner import PrepareOptions

__all__ = ["B0_THRESHOLD", "GRID", "DtiResult", "check_dwi_scan", "fit_tensor", "load_dwi", "prepare_dti_subject",
           "process_dwi", "read_gradients"]

GRID = "spm1p5"
#: b-values at or below this (s/mm^2) count as b=0, as dipy's gradient table does.
B0_THRESHOLD = 50.0
MIN_DIRECTIONS = 6  # a tensor has six unknowns besides S0


def _load_4d_header(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for a file that is not NIfTI
        raise InputDataError(path, f"cannot read as NIfTI ({type(err).__name__}: {err})") from None
    if len(img.shape) != 4:
        raise InputDataError(path, f"a {len(img.shape)}D image {img.shape}: a DWI series is 4D (x, y, z, volumes)")
    if img.shape[3] < 2:
        raise InputDataError(path, f"{img.shape[3]} volume: a DWI series needs b=0 and diffusion-weighted volumes")
    return img


def read_gradients(scan: BidsScan, n_volumes: int) -> tuple[np.ndarray, np.ndarray]:
    """(bvals (N,), unit bvecs (N, 3)) of ``scan`` checked against ``n_volumes``; InputDataError naming the file."""
    bval_path, bvec_path = scan.sidecars["bval"], scan.sidecars["bvec"]
    try:
        bvals = np.loadtxt(bval_path, dtype=float, ndmin=1).ravel()
    except ValueError as err:
        raise InputDataError(bval_path, f"not a list of numbers ({err})") from None
    try:
        bvecs = np.loadtxt(bvec_path, dtype=float, ndmin=2)
    except ValueError as err:
        raise InputDataError(bvec_path, f"not a table of numbers ({err})") from None
    if len(bvals) != n_volumes:
        raise InputDataError(bval_path, f"{len(bvals)} b-values for {n_volumes} volumes in {scan.image.name}")
    if bvecs.shape == (n_volumes, 3) and n_volumes != 3:
        bvecs = bvecs.T  # one row per volume instead of FSL's three rows
    if bvecs.shape != (3, n_volumes):
        raise InputDataError(bvec_path, f"{bvecs.shape[0]} x {bvecs.shape[1]} gradient table for {n_volumes} "
                                        f"volumes in {scan.image.name}: expected 3 rows of {n_volumes} values")
    if not (np.isfinite(bvals).all() and np.isfinite(bvecs).all()) or (bvals < 0).any():
        raise InputDataError(bval_path if not np.isfinite(bvals).all() or (bvals < 0).any() else bvec_path,
                             "non-finite or negative values")
    if not (bvals <= B0_THRESHOLD).any():
        raise InputDataError(bval_path, f"no b=0 volume (every b-value is above {B0_THRESHOLD:g} s/mm^2): the "
                                        "tensor fit and the brain mask need one")
    bvecs = bvecs.T
    norms = np.linalg.norm(bvecs, axis=1)
    weighted = bvals > B0_THRESHOLD
    if (norms[weighted] < 0.5).any():
        raise InputDataError(bvec_path, "a diffusion-weighted volume has a zero gradient direction")
    unit = bvecs[weighted] / norms[weighted, None]
    unique = np.unique(np.round(unit * np.where(unit[:, :1] < 0, -1.0, 1.0), 3), axis=0)  # g and -g: one direction
    if len(unique) < MIN_DIRECTIONS:
        raise InputDataError(bvec_path, f"{len(unique)} distinct gradient directions: a tensor fit needs at least "
                                        f"{MIN_DIRECTIONS}")
    bvecs[weighted] /= norms[weighted, None]
    return bvals, bvecs


def check_dwi_scan(scan: BidsScan) -> None:
    """The checks that need no voxel data, for every subject before any work: a 4D image, b-values and vectors
    that match its volumes, a b=0 volume, six directions or more, a readable T1w."""
    img = _load_4d_header(scan.image)
    read_gradients(scan, img.shape[3])
    if scan.t1w is not None:
        try:
            shape = nib.load(str(scan.t1w)).shape
        except Exception as err:
            raise InputDataError(scan.t1w, f"cannot read as NIfTI ({type(err).__name__}: {err})") from None
        if len(shape) != 3:
            raise InputDataError(scan.t1w, f"a {len(shape)}D image {shape}: a T1w is 3D")


def load_dwi(scan: BidsScan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(data (X, Y, Z, N) float32, RAS affine, bvals, bvecs) after every check, NaN and infinity included."""
    img = _load_4d_header(scan.image)
    bvals, bvecs = read_gradients(scan, img.shape[3])
    img = nib.as_closest_canonical(img)
    data = img.get_fdata(dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputDataError(scan.image, f"{int(bad.sum())} NaN or infinite values (first at voxel/volume "
                                         f"{tuple(int(i) for i in np.argwhere(bad)[0])})")
    return data, img.affine, bvals, bvecs


def brain_mask(mean_b0: np.ndarray) -> np.ndarray:
    """dipy's ``median_otsu`` on the mean b=0 image, with its largest connected component kept."""
    from dipy.segment.mask import median_otsu
    from scipy import ndimage

    _, mask = median_otsu(mean_b0, median_radius=2, numpass=1)
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(mask)


def fit_tensor(data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(FA in [0, 1], MD in mm^2/s when the b-values are in s/mm^2) of a WLS tensor fit inside ``mask``."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=B0_THRESHOLD)
    fit = TensorModel(gtab, fit_method="WLS").fit(data, mask=mask)
    fa = np.nan_to_num(fit.fa, nan=0.0, posinf=0.0, neginf=0.0)
    md = np.nan_to_num(fit.md, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(fa, 0, 1).astype(np.float32) * mask, np.clip(md, 0, None).astype(np.float32) * mask


@dataclass
class DtiResult:
    """One subject's maps on the grid and what the QC needs; ``transforms`` take native DWI space to the template."""

    fa: np.ndarray
    md: np.ndarray  # scaled by MD_MAX_MM2_PER_S, in [0, 1]
    mask: np.ndarray  # the subject's brain mask warped onto the grid
    dice: float
    transforms: list[str]
    used_t1w: bool


def _t1w_transforms(scan: BidsScan, b0, mask_img, options: PrepareOptions, workdir: Path) -> list[str]:
    """b=0 -> T1w (rigid), then the T1w brain -> template (SyN); the T1w brain is the DWI mask carried by the
    rigid transform (dilated a little), which needs no skull stripping of its own."""
    import ants
    from scipy import ndimage

    t1 = nib.as_closest_canonical(nib.load(str(scan.t1w)))
    t1_data = t1.get_fdata(dtype=np.float32)
    if not np.isfinite(t1_data).all():
        raise InputDataError(scan.t1w, "NaN or infinite values")
    t1_img = from_array(t1_data, t1.affine)
    to_t1 = register(b0, t1_img, "Rigid", workdir=workdir)
    t1_mask = ants.apply_transforms(fixed=t1_img, moving=mask_img, transformlist=to_t1,
                                    interpolator="nearestNeighbor").numpy() > 0.5
    t1_mask = ndimage.binary_dilation(t1_mask, iterations=1)
    t1_brain = t1_img.new_image_like(t1_img.numpy() * t1_mask)
    to_template = register(t1_brain, template(options.registration_mm), "SyN", workdir=workdir,
                           syn_iterations=options.syn_iterations)
    return to_template + to_t1


def process_dwi(scan: BidsScan, options: PrepareOptions | None = None, workdir: str | Path | None = None
                ) -> DtiResult:
    """The whole DTI pipeline of one scan, in memory: checks, mask, tensor fit, registration, onto ``spm1p5``.

    ``workdir`` keeps the transform files (listed in the result) for a caller that maps more images with them;
    by default they go to a temporary folder removed on return."""
    options = options or PrepareOptions()
    data, affine, bvals, bvecs = load_dwi(scan)
    mean_b0 = data[..., bvals <= B0_THRESHOLD].mean(-1)
    mask = brain_mask(mean_b0)
    if mask.sum() < 1000:
        raise InputDataError(scan.image, f"the brain mask of the b=0 image has {int(mask.sum())} voxels: no brain "
                                         "found (is the b=0 volume empty or the b-values wrong?)")
    fa, md = fit_tensor(data, bvals, bvecs, mask)
    del data
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    keep = contextlib.nullcontext(str(workdir)) if workdir is not None else None
    with keep or tempfile.TemporaryDirectory(prefix="prepare-dti-") as tmp:
        b0 = from_array(mean_b0 * mask, affine)
        mask_img = from_array(mask.astype(np.float32), affine)
        used_t1w = options.use_t1w and scan.t1w is not None
        if used_t1w:
            transforms = _t1w_transforms(scan, b0, mask_img, options, Path(tmp))
        else:
            transforms = register(b0, template(options.registration_mm), "SyN", workdir=tmp,
                                  syn_iterations=options.syn_iterations)
        warped_mask = to_grid(mask_img, transforms, GRID) > 0.5
        dice = require_alignment(warped_mask, GRID, scan.image, options.min_dice)
        fa_grid = to_grid(from_array(fa, affine), transforms, GRID)
        md_grid = to_grid(from_array(md / MD_MAX_MM2_PER_S, affine), transforms, GRID)
        kept = list(transforms) if workdir is not None else []
    return DtiResult(np.clip(fa_grid, 0, 1) * warped_mask, np.clip(md_grid, 0, 1) * warped_mask, warped_mask, dice,
                     kept, used_t1w)


def _save(path: Path, data: np.ndarray, description: str) -> None:
    grid = get_grid(GRID)
    img = nib.Nifti1Image(np.asarray(data, np.float32), grid.affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(grid.affine, code=4)
    img.set_sform(grid.affine, code=4)
    img.header["descrip"] = description[:79].encode()
    nib.save(img, str(path))


def prepare_dti_subject(scan: BidsScan, tmp: Path, base: dict, options: PrepareOptions) -> dict:
    """Write ``<key>_FA.nii.gz``, ``<key>_MD.nii.gz`` and ``<key>_qc.png`` into ``tmp`` (the runner renames it to
    ``OUT/<key>``); return the subject's dataset.json entry (paths relative to OUT) with its QC numbers."""
    result = process_dwi(scan, options)
    key = scan.key
    names = {"FA": f"{key}_FA.nii.gz", "MD": f"{key}_MD.nii.gz"}
    _save(tmp / names["FA"], result.fa, "FA (python -m common prepare dti)")
    _save(tmp / names["MD"], result.md, f"MD / {MD_MAX_MM2_PER_S:g} mm2/s (python -m common prepare dti)")
    record = {**base, "image": [f"{key}/{names['FA']}", f"{key}/{names['MD']}"],
              "qc": {"brain_dice": round(result.dice, 4), "via_t1w": result.used_t1w, "source": str(scan.image)}}
    if options.qc_figure:
        from common.prepare.qc import qc_figure

        qc_figure(tmp / f"{key}_qc.png", {"FA": result.fa, "MD": result.md}, GRID,
                  title=f"{key}: brain-mask Dice {result.dice:.3f}", limits={"FA": (0, 0.8), "MD": (0, 0.4)})
        record["qc"]["figure"] = f"{key}/{key}_qc.png"
    return record
