"""Test data for ``prepare``: subjects of the project's synthetic cohorts moved off the template by a known random
affine plus a smooth warp, DWI simulated from known tensors, and a tiny BIDS tree writer (shared with the PET tests).

Convention: a :class:`Motion` maps a point of the subject's native space (mm, RAS) to the template (MNI) point it
shows, ``x_mni = A @ y + b + u(y)``; :func:`to_native` samples a template-space volume at those points, so the
native image of a subject is exactly the template-space truth moved by the motion, and ``prepare`` must undo it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from common.errors import InputDataError


@dataclass(frozen=True)
class Motion:
    """Native mm -> template mm: ``A @ y + b`` plus a smooth warp of ``warp_mm`` RMS (drawn per native grid from
    ``seed``, correlation ``correlation_mm``)."""

    matrix: np.ndarray
    offset: np.ndarray
    warp_mm: float
    correlation_mm: float
    seed: int

    def displacement(self, shape: tuple[int, int, int], voxel_mm: float) -> np.ndarray:
        """The warp u (3, X, Y, Z) in mm on a native grid of ``shape`` and ``voxel_mm``."""
        if self.warp_mm == 0:
            return np.zeros((3, *shape), np.float32)
        from common.data.synthetic.deform import smooth_random_fields  # torch: imported only when a warp is drawn

        rng = np.random.default_rng([self.seed, 7])
        return smooth_random_fields(rng, shape, voxel_mm, 3, self.correlation_mm) * np.float32(self.warp_mm)

    def to_template(self, points_mm: np.ndarray, warp: np.ndarray | None = None) -> np.ndarray:
        """Template coordinates of native points (..., 3) in mm; ``warp`` (..., 3): u at those points."""
        out = points_mm @ self.matrix.T + self.offset
        return out if warp is None else out + warp


def random_motion(seed: int, max_rotation_deg: float = 8.0, max_translation_mm: float = 8.0,
                  max_scale: float = 0.06, warp_mm: float = 1.5, correlation_mm: float = 30.0) -> Motion:
    """A known random affine (rotation, translation, anisotropic scaling within the limits) and a smooth warp."""
    rng = np.random.default_rng([seed, 3])
    rotation = Rotation.from_rotvec(np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))).as_matrix()
    scale = np.diag(1.0 + rng.uniform(-max_scale, max_scale, 3))
    offset = rng.uniform(-max_translation_mm, max_translation_mm, 3)
    return Motion(rotation @ scale, offset, warp_mm, correlation_mm, seed)


def native_affine(shape: tuple[int, int, int], voxel_mm: float, centre_mm=(0.0, -18.0, 10.0)) -> np.ndarray:
    """An axis-aligned RAS affine of a native grid of ``shape`` centred on ``centre_mm`` (the brain's centre)."""
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = np.asarray(centre_mm) - voxel_mm * (np.asarray(shape) - 1) / 2.0
    return affine


def to_native(volumes: np.ndarray, source_affine: np.ndarray, motion: Motion, shape: tuple[int, int, int],
              affine: np.ndarray, order: int = 1) -> np.ndarray:
    """Template-space volume(s) (X, Y, Z) or (C, X, Y, Z) on ``source_affine`` resampled onto the native grid
    (``shape``, ``affine``): the value at native voxel v is the template's at ``motion(affine @ v)``."""
    voxel = float(np.linalg.norm(affine[:3, 0]))
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    native_mm = idx @ affine[:3, :3].T + affine[:3, 3]
    warp = motion.displacement(shape, voxel).reshape(3, -1).T
    mni = motion.to_template(native_mm, warp)
    inv = np.linalg.inv(source_affine)
    src_idx = (mni @ inv[:3, :3].T + inv[:3, 3]).T
    stack = volumes[None] if volumes.ndim == 3 else volumes
    out = [ndimage.map_coordinates(v, src_idx, order=order, mode="constant", cval=0.0).reshape(shape)
           for v in np.asarray(stack, np.float32)]
    out = np.stack(out).astype(np.float32)
    return out[0] if volumes.ndim == 3 else out


# ------------------------------------------------------------------------------------------------------ DWI


def gradient_table(b_values=(1000.0, 2000.0), n_directions: int = 12, n_b0: int = 2, seed: int = 0):
    """(bvals, bvecs (N, 3)): ``n_b0`` b=0 volumes, then ``n_directions`` directions spread on the sphere (a
    Fibonacci lattice, randomly rotated per shell) for each b-value."""
    rng = np.random.default_rng([seed, 11])
    k = np.arange(n_directions) + 0.5
    phi = np.arccos(1 - k / n_directions)  # a hemisphere: antipodal directions are the same measurement
    theta = np.pi * (1 + 5 ** 0.5) * k
    base = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
    bvals, bvecs = [0.0] * n_b0, [np.zeros(3)] * n_b0
    for b in b_values:
        rot = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
        bvals += [float(b)] * n_directions
        bvecs += list(base @ rot.T)
    return np.asarray(bvals), np.asarray(bvecs)


def eigenvalues(fa: np.ndarray, md: np.ndarray) -> np.ndarray:
    """Axially symmetric tensors' eigenvalues (..., 3) with the given FA and MD: l1 = MD(1 + 2a), l2 = l3 = MD(1 - a),
    a = FA sqrt(3 / (9 - 6 FA^2)) (then FA = 3a / sqrt(3 + 6a^2))."""
    fa = np.clip(fa, 0.0, 0.95)
    a = fa * np.sqrt(3.0 / (9.0 - 6.0 * fa**2))
    return np.stack([md * (1 + 2 * a), md * (1 - a), md * (1 - a)], -1)


def simulate_dwi(fa: np.ndarray, md_mm2_s: np.ndarray, s0: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray,
                 snr: float, seed: int) -> np.ndarray:
    """(X, Y, Z, N) DWI signals of axially symmetric tensors with smooth random principal directions, with Rician
    noise of sd ``max(s0) / snr``, float32. dipy's ``single_tensor`` gives the signal of each tensor."""
    from dipy.core.gradients import gradient_table as dipy_gtab
    from dipy.sims.voxel import single_tensor

    rng = np.random.default_rng([seed, 5])
    noise = rng.standard_normal((3, *fa.shape)).astype(np.float32)
    directions = np.stack([ndimage.gaussian_filter(n, 3.0, mode="wrap") for n in noise]).reshape(3, -1).T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True) + 1e-12
    gtab = dipy_gtab(bvals, bvecs=bvecs)
    evals = eigenvalues(fa.reshape(-1), np.maximum(md_mm2_s.reshape(-1), 0.0))
    inside = s0.reshape(-1) > 0
    signal = np.zeros((fa.size, len(bvals)), np.float32)
    # single_tensor takes one tensor; grouping voxels by nothing would be a per-voxel loop, so build D directly:
    # D = l2 I + (l1 - l2) e e^T, the same tensor single_tensor(evecs=[e, ., .]) uses.
    e = directions[inside]
    l1, l2 = evals[inside, 0], evals[inside, 1]
    g = gtab.bvecs
    proj = (e @ g.T) ** 2  # (V, N): (g . e)^2
    adc = l2[:, None] + (l1 - l2)[:, None] * proj
    signal[inside] = s0.reshape(-1)[inside, None] * np.exp(-gtab.bvals[None] * adc)
    # the formula above is single_tensor's; check it once on the first voxel so a change in convention shows up
    if inside.any():
        v = int(np.flatnonzero(inside)[0])
        evecs = np.linalg.qr(np.stack([directions[v], rng.standard_normal(3), rng.standard_normal(3)], 1))[0]
        ref = single_tensor(gtab, S0=float(s0.reshape(-1)[v]), evals=evals[v], evecs=evecs)
        assert np.allclose(ref, signal[v], rtol=1e-4, atol=1e-3), "tensor signal does not match dipy"
    sd = float(s0.max()) / snr
    noisy = np.sqrt((signal + rng.normal(0, sd, signal.shape)) ** 2 + rng.normal(0, sd, signal.shape) ** 2)
    return noisy.reshape(*fa.shape, len(bvals)).astype(np.float32)


@dataclass
class DwiPhantom:
    """A DWI subject in native space and its truth on the template grid (``spm1p5``)."""

    dwi: np.ndarray
    affine: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    fa: np.ndarray  # truth on spm1p5
    md: np.ndarray  # truth on spm1p5, scaled by MD_MAX_MM2_PER_S as the bundles read it
    brain: np.ndarray  # truth brain mask on spm1p5
    motion: Motion
    t1w: tuple[np.ndarray, np.ndarray] | None = None


def dwi_phantom(seed: int = 0, voxel_mm: float = 2.0, shape=(84, 100, 80), snr: float = 30.0,
                b_values=(1000.0, 2000.0), n_directions: int = 12, with_t1w: bool = False,
                warp_mm: float = 1.5) -> DwiPhantom:
    """A control of the synthetic PD cohort (``common.data.synthetic.pd``) moved off the template by a random
    affine and warp, its DWI simulated from tensors with its FA and MD, b0 with a T2-like contrast (CSF bright)."""
    from common.atlases import load_atlas
    from common.data.synthetic.base import SubjectSpec
    from common.data.synthetic.pd import PDCohortConfig, PDTemplate, render_pd_subject
    from common.nifti import MD_MAX_MM2_PER_S

    atlas = load_atlas("spm1p5")
    # no residual misregistration of the cohort's own (deformation_mm=0): the subject's anatomy is the atlas's, so
    # the atlas's landmarks moved by the known motion are the truth the registration must recover
    cfg = PDCohortConfig(n_controls=1, n_patients=0, seed=seed, deformation_mm=0.0)
    maps = render_pd_subject(PDTemplate(atlas), cfg, SubjectSpec(0, "sub-0001", "control", 61.0, "F"))
    brain = (atlas.brain > 0.5).astype(np.float32)
    fa, md = maps["FA"] * brain, maps["MD"] * brain
    motion = random_motion(seed, warp_mm=warp_mm)
    affine = native_affine(shape, voxel_mm)
    n_fa, n_md, n_brain = to_native(np.stack([fa, md * MD_MAX_MM2_PER_S, brain]), atlas.affine, motion, shape, affine)
    inside = n_brain > 0.5
    md_mm = np.where(inside, n_md / np.maximum(n_brain, 1e-3), 0.0)  # undo the partial volume with the outside
    fa_n = np.where(inside, n_fa / np.maximum(n_brain, 1e-3), 0.0)
    s0 = 1000.0 * inside * (0.65 + 0.35 * np.clip(md_mm / 3e-3, 0, 1) - 0.25 * fa_n)
    bvals, bvecs = gradient_table(b_values, n_directions, seed=seed)
    dwi = simulate_dwi(fa_n, md_mm, s0.astype(np.float32), bvals, bvecs, snr, seed)
    t1w = None
    if with_t1w:
        t1_shape, t1_voxel = (112, 132, 112), 1.5
        t1_motion = Motion(motion.matrix, motion.offset, motion.warp_mm, motion.correlation_mm, motion.seed)
        t1_aff = native_affine(t1_shape, t1_voxel, centre_mm=(2.0, -15.0, 14.0))  # not aligned with the DWI grid
        head = ndimage.binary_dilation(atlas.brain > 0.5, iterations=4) & ~(atlas.brain > 0.5)
        t1 = 0.35 * atlas.csf + 0.6 * atlas.gm + 0.95 * atlas.wm + 0.8 * head  # brain plus a scalp-like shell
        t1w = (to_native(t1.astype(np.float32), atlas.affine, t1_motion, t1_shape, t1_aff) * 1000.0, t1_aff)
    return DwiPhantom(dwi, affine, bvals, bvecs, fa, md, brain > 0.5, motion, t1w)


# ------------------------------------------------------------------------------------------------------- BIDS


def save(path: Path, data: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    """A NIfTI with mm units (as scanners' converters write them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.asarray(affine, float))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


def write_bids_scan(root: str | Path, subject: str, kind: str, image: np.ndarray, affine: np.ndarray,
                    session: str | None = None, sidecars: dict | None = None,
                    t1w: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write one scan: ``sub-X/[ses-Y/]<kind>/sub-X[_ses-Y]_<kind>.nii.gz`` ("dwi" or "pet"), its sidecars
    (``{"bval": text, "bvec": text}`` or ``{"json": dict}``, written as given) and an optional T1w
    (``(array, affine)``) under ``anat/``. Returns the image path."""
    folder = Path(root) / subject / (session or "")
    stem = subject + (f"_{session}" if session else "")
    path = save(folder / kind / f"{stem}_{kind}.nii.gz", image, affine)
    for ext, content in (sidecars or {}).items():
        text = json.dumps(content, indent=2) if isinstance(content, dict) else str(content)
        (folder / kind / f"{stem}_{kind}.{ext}").write_text(text)
    if t1w is not None:
        save(folder / "anat" / f"{stem}_T1w.nii.gz", t1w[0], t1w[1])
    return path


def dwi_sidecars(bvals: np.ndarray, bvecs: np.ndarray) -> dict:
    """FSL-style ``.bval`` (one row) and ``.bvec`` (three rows) texts."""
    bvecs = np.asarray(bvecs).reshape(-1, 3)
    return {"bval": " ".join(f"{b:g}" for b in bvals) + "\n",
            "bvec": "\n".join(" ".join(f"{v:.6f}" for v in row) for row in bvecs.T) + "\n"}


def write_participants(root: str | Path, rows: list[dict]) -> Path:
    """``participants.tsv`` with the columns of the first row (participant_id first)."""
    columns = list(rows[0])
    lines = ["\t".join(columns)] + ["\t".join(str(r.get(c, "n/a")) for c in columns) for r in rows]
    path = Path(root) / "participants.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- runner tests


def fake_pipeline(scan, tmp: Path, base: dict, options) -> dict:
    """A pipeline for the runner's tests, cheap and importable by worker processes: writes one file, then fails
    for a subject whose image name contains ``fail`` (after writing, so a half-written folder would show)."""
    (tmp / f"{scan.key}_out.txt").write_text(scan.image.name)
    if "fail" in scan.image.name:
        raise InputDataError(scan.image, "made to fail")
    return {**base, "image": [f"{scan.key}/{scan.key}_out.txt"], "pid": os.getpid()}
