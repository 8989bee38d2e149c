"""Registration to the ICBM152 template the atlases are built from, resampling onto a project grid, alignment QC.

ANTsPy (``antspyx``) does the registration: on the phantom of ``benchmarks/prepare_registration.py`` it took half
the CPU time of dipy's affine + SyN (13.4 s against 23.7 s) with half the landmark error (0.98 mm against 1.95 mm
mean; docs/prepare.md). Registration runs against the template at
``resolution_mm`` (2 mm by default: the DWI's own resolution, and what SyN needs for a brain-level warp); only the
final resampling happens on the output grid. Images cross into ANTs through nibabel (RAS) so the physical space is
the same on both sides.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from common.errors import InputDataError
from common.grids import get_grid

__all__ = ["KINDS", "dice", "from_array", "register", "require_alignment", "template", "template_mask", "to_grid",
           "to_nibabel_affine"]

#: Transform kinds of :func:`register`, as ANTs names them ("SyN": rigid + affine + symmetric normalisation).
KINDS = ("Rigid", "Affine", "SyN")
BRAIN_T1_THRESHOLD = 0.05  # as common.atlases.build makes the brain mask


def from_array(data: np.ndarray, affine: np.ndarray):
    """An ``ants.ANTsImage`` of a RAS voxel array and its affine (float32)."""
    import ants

    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, float))
    img.header.set_xyzt_units("mm", "sec")  # ANTs warns about unknown units otherwise
    return ants.from_nibabel_nifti(img)


@functools.lru_cache(maxsize=4)
def _template_arrays(resolution_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 in [0, 1], brain mask, affine) of nilearn's ICBM152 2009 template at ``resolution_mm``."""
    from nilearn.datasets import load_mni152_template
    from scipy import ndimage

    img = load_mni152_template(resolution=1)
    t1 = img.get_fdata(dtype=np.float32)
    affine = img.affine.copy()
    if resolution_mm != 1:
        zoom = 1.0 / float(resolution_mm)
        t1 = ndimage.zoom(ndimage.gaussian_filter(t1, 0.42 * resolution_mm), zoom, order=1)
        affine[:3, :3] *= resolution_mm
        affine[:3, 3] += (resolution_mm - 1) / 2.0 * np.diag(img.affine)[:3]  # keep the field of view centred
    t1 = np.clip(t1, 0, None)
    t1 /= max(float(t1.max()), 1e-6)
    brain = ndimage.binary_fill_holes(t1 > BRAIN_T1_THRESHOLD)
    return t1, brain, affine


def template(resolution_mm: float = 2.0):
    """The ICBM152 2009 T1 brain (skull-stripped, values in [0, 1]) that the atlases use, at ``resolution_mm``."""
    t1, _, affine = _template_arrays(float(resolution_mm))
    return from_array(t1, affine)


def template_mask(resolution_mm: float = 2.0):
    """The template's brain mask (``fill_holes(T1 > 0.05)``, as in :mod:`common.atlases.build`)."""
    _, brain, affine = _template_arrays(float(resolution_mm))
    return from_array(brain.astype(np.float32), affine)


def register(moving, fixed, kind: str, initial: list[str] | None = None, moving_mask=None, fixed_mask=None,
             workdir: str | os.PathLike | None = None, syn_iterations: tuple[int, ...] = (40, 20, 0),
             seed: int = 0) -> list[str]:
    """Transforms (files, ANTs' order for ``apply_transforms``) that take ``moving`` onto ``fixed``.

    ``kind``: "Rigid", "Affine" or "SyN" (rigid + affine + SyN, Mattes mutual information throughout, so a b0
    or PET matches a T1 template). ``syn_iterations`` per level at shrink 4, 2, 1 of ``fixed``: the default stops at
    half the fixed image's resolution, which is what a smooth brain-level warp needs. ``workdir`` keeps the
    transform files (default: a temporary folder the caller removes with its parent). Seeded: the same inputs give
    the same transforms on one thread."""
    import ants

    if kind not in KINDS:
        raise ValueError(f"unknown registration kind {kind!r}; expected one of {', '.join(KINDS)}")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="prepare-reg-"))
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = str(workdir / f"{kind.lower()}_{len(list(workdir.iterdir()))}_")
    kwargs = {"reg_iterations": tuple(syn_iterations)} if kind == "SyN" else {}
    if fixed_mask is not None:
        kwargs["mask"] = fixed_mask
    if moving_mask is not None:
        kwargs["moving_mask"] = moving_mask
    out = ants.registration(fixed=fixed, moving=moving, type_of_transform=kind, initial_transform=initial,
                            outprefix=prefix, random_seed=seed, **kwargs)
    return list(out["fwdtransforms"])


def _grid_reference(grid: str):
    g = get_grid(grid)
    return from_array(np.zeros(g.shape, np.float32), g.affine)


def to_grid(image, transforms: list[str], grid: str, interpolator: str = "linear") -> np.ndarray:
    """``image`` (an ANTsImage in its native space) through ``transforms`` onto ``grid`` of :mod:`common.grids`,
    as a float32 array in the grid's RAS voxel order (zeros outside the image)."""
    import ants

    ref = _grid_reference(grid)
    warped = ants.apply_transforms(fixed=ref, moving=image, transformlist=list(transforms), interpolator=interpolator,
                                   defaultvalue=0)
    data = ants.to_nibabel_nifti(warped).get_fdata(dtype=np.float32)
    return np.asarray(data, dtype=np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def require_alignment(warped_mask: np.ndarray, grid: str, path, min_dice: float) -> float:
    """Dice of a subject's brain mask warped onto ``grid`` with the atlas brain mask of that grid; an
    InputDataError naming ``path`` when it is below ``min_dice`` (a registration that failed)."""
    from common.atlases import load_atlas

    brain = load_atlas(get_grid(grid).name).brain > 0.5
    value = dice(np.asarray(warped_mask) > 0.5, brain)
    if not value >= min_dice:
        raise InputDataError(path, f"registration to the template failed its quality check: brain-mask Dice "
                                   f"{value:.3f} with the template's is below {min_dice:g}")
    return value


def to_nibabel_affine(image) -> np.ndarray:
    """The RAS voxel-to-mm affine of an ANTsImage (the inverse of :func:`from_array`'s conversion)."""
    import ants

    return np.asarray(ants.to_nibabel_nifti(image).affine, float)
