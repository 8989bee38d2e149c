"""Clinica ``pet-linear`` PET in: reduce the 169x208x179 1 mm image to ad_vae3d's 80x96x80 2 mm grid.

ClinicaDL reduces it by plain striding, ``img[4:164:2, 8:200:2, 8:168:2]``: every other voxel, no
anti-aliasing, so detail finer than 4 mm folds back into the image as aliasing. Two modes:

- ``"resample"`` (default): Gaussian pre-filter, then sampling at the 2 mm voxel centres through the two
  affines. The filter widens the 1 mm voxel's response to a 2 mm one:
  ``sigma = sqrt(2^2 - 1^2) / (2 sqrt(2 ln 2)) = 0.74 mm`` (FWHMs add in quadrature).
- ``"clinicadl"``: ClinicaDL's exact striding, for compatibility with models trained by ClinicaDL.

The grids are :data:`common.grids.GRIDS` ``clinica_pet_linear`` and ``clinicadl2``; the striding lands
exactly on the 2 mm voxel centres (pet-linear voxel (4 + 2i, 8 + 2j, 8 + 2k) is clinicadl2 voxel (i, j, k)).
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ImageMetaKey
from scipy import ndimage

from common.errors import InputDataError
from common.grids import get_grid
from common.nifti import AFFINE_TOLERANCE_MM, check_header
from common.transforms.io import SUBJECT_ID, LoadValidatedImage

__all__ = [
    "CLINICADL_SLICES",
    "PET_INPUT_MODES",
    "LoadPETImage",
    "LoadPETImageD",
    "LoadPETImageDict",
    "LoadPETImaged",
    "ReducePETLinear",
    "ReducePETLinearD",
    "ReducePETLinearDict",
    "ReducePETLineard",
    "antialias_sigma_mm",
]

PET_INPUT_MODES = ("resample", "clinicadl")
SOURCE_GRID, TARGET_GRID = "clinica_pet_linear", "clinicadl2"

#: ClinicaDL's reduction of a pet-linear image (``clinicadl/utils/caps_dataset``): every other voxel.
CLINICADL_SLICES = (slice(4, 164, 2), slice(8, 200, 2), slice(8, 168, 2))

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def antialias_sigma_mm(source_spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[float, ...]:
    """Per-axis Gaussian sigma (mm) that turns a voxel-sized response of ``source_spacing`` into one of
    ``target_spacing``: ``sqrt(t^2 - s^2) / 2.355`` (0.74 mm for 1 mm -> 2 mm; 0 where not coarser)."""
    return tuple(math.sqrt(max(t * t - s * s, 0.0)) / _FWHM_PER_SIGMA
                 for s, t in zip(source_spacing, target_spacing, strict=True))


def _check_mode(mode: str) -> str:
    if mode not in PET_INPUT_MODES:
        raise ValueError(f"pet_input_mode must be one of {PET_INPUT_MODES}, got {mode!r}")
    return mode


class ReducePETLinear(Transform):
    """``(C, 169, 208, 179)`` pet-linear image -> ``(C, 80, 96, 80)`` on clinicadl2, with the clinicadl2 affine.

    Args:
        mode: ``"resample"`` (anti-aliased) or ``"clinicadl"`` (ClinicaDL's striding).
        sigma_mm: pre-filter sigma in mm for ``"resample"``; default :func:`antialias_sigma_mm` of the grids.

    A ``MetaTensor`` input must carry the pet-linear affine; its meta is kept (file name, subject id,
    ``original_affine``) and its affine replaced. Plain arrays are taken to be on the pet-linear grid.
    """

    def __init__(self, mode: str = "resample", sigma_mm: float | Sequence[float] | None = None):
        self.mode = _check_mode(mode)
        self.source, self.target = get_grid(SOURCE_GRID), get_grid(TARGET_GRID)
        if sigma_mm is None:
            sigma_mm = antialias_sigma_mm(self.source.spacing, self.target.spacing)
        sigma = np.broadcast_to(np.asarray(sigma_mm, dtype=float), (3,))
        if np.any(sigma < 0):
            raise ValueError(f"sigma_mm must be >= 0, got {sigma_mm}")
        self.sigma_voxels = tuple(float(s / d) for s, d in zip(sigma, self.source.spacing, strict=True))
        # target voxel -> source voxel (integer strides here, but derived from the affines, not assumed)
        self._target_to_source = np.linalg.solve(self.source.affine, self.target.affine)

    def _check(self, img: torch.Tensor | np.ndarray) -> None:
        path = img.meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(img, MetaTensor) else None
        expected = f"(C, {', '.join(map(str, self.source.shape))})"
        if img.ndim != 4 or tuple(img.shape[1:]) != self.source.shape:
            raise InputDataError(
                path, f"shape {tuple(img.shape)} is not a channel-first Clinica pet-linear image {expected} "
                f"(1 mm MNI crop); images already on {self.target.name} {self.target.shape} need no reduction",
            )
        if isinstance(img, MetaTensor):
            affine = img.affine.detach().cpu().numpy()
            if not np.allclose(affine, self.source.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
                rows = np.round(affine[:3], 3).tolist()
                raise InputDataError(path, f"affine {rows} is not Clinica pet-linear's "
                                           f"{self.source.affine[:3].tolist()}")

    def reduce_array(self, volume: np.ndarray) -> np.ndarray:
        """One ``(X, Y, Z)`` pet-linear volume -> ``(80, 96, 80)`` float32."""
        if self.mode == "clinicadl":
            return np.ascontiguousarray(volume[CLINICADL_SLICES], dtype=np.float32)
        smooth = ndimage.gaussian_filter(volume.astype(np.float32, copy=False), self.sigma_voxels, mode="nearest")
        m = self._target_to_source
        return ndimage.affine_transform(smooth, m[:3, :3], offset=m[:3, 3], output_shape=self.target.shape, order=1,
                                        mode="nearest").astype(np.float32, copy=False)

    def __call__(self, img: torch.Tensor | np.ndarray) -> MetaTensor:
        self._check(img)
        data = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        reduced = torch.from_numpy(np.stack([self.reduce_array(c) for c in data]))
        meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
        meta.pop("affine", None)
        return MetaTensor(reduced, affine=torch.as_tensor(self.target.affine, dtype=torch.float64), meta=meta)


class ReducePETLineard(MapTransform):
    """Dictionary version of :class:`ReducePETLinear`.

    Args:
        keys: keys of the pet-linear images to reduce.
        mode: ``"resample"`` (anti-aliased) or ``"clinicadl"`` (ClinicaDL's striding).
        sigma_mm: pre-filter sigma in mm for ``"resample"``; default :func:`antialias_sigma_mm` of the grids.
        allow_missing_keys: skip keys a data item lacks instead of raising ``KeyError``.
    """

    def __init__(self, keys: KeysCollection, mode: str = "resample", sigma_mm: float | Sequence[float] | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.reducer = ReducePETLinear(mode, sigma_mm)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.reducer(d[key])
        return d


class LoadPETImage(Transform):
    """Load one PET file, validated, as a ``(1, 80, 96, 80)`` ``MetaTensor`` on clinicadl2.

    Files on clinicadl2 load as they are; Clinica pet-linear files (169x208x179, 1 mm) are reduced with
    ``mode`` (:class:`ReducePETLinear`); any other grid is refused with the grid error naming the file.

    Args:
        mode: ``"resample"`` or ``"clinicadl"`` for pet-linear inputs.
        modality: value range checked (``"PET"``; ``"ANOMALY"`` for ground-truth maps).
        sigma_mm: pre-filter of the ``"resample"`` mode (default 0.74 mm).
    """

    def __init__(self, mode: str = "resample", modality: str = "PET", sigma_mm: float | Sequence[float] | None = None):
        self.mode = _check_mode(mode)
        self.on_target = LoadValidatedImage(TARGET_GRID, [modality])
        self.on_source = LoadValidatedImage(SOURCE_GRID, [modality])
        self.reduce = ReducePETLinear(mode, sigma_mm)

    def __call__(self, filename: str | os.PathLike | Sequence[str | os.PathLike]) -> MetaTensor:
        files = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        if len(files) != 1:
            raise InputDataError(files[0] if files else None,
                                 f"{len(files)} files given; PET has one image per subject")
        path = os.fspath(files[0])
        try:
            check_header(path, TARGET_GRID)  # header only: file, NIfTI, 3D, dtype, grid
        except InputDataError as off_target:
            # a problem other than the grid (missing, not NIfTI, 4D) raises the same error here
            if check_header(path, SOURCE_GRID, allow_resample=True).on_grid:
                return self.reduce(self.on_source(path))
            source = get_grid(SOURCE_GRID)
            raise InputDataError(path, f"{off_target.problem}. Clinica pet-linear images {source.shape} with affine "
                                       f"{source.affine[:3].tolist()} are accepted too and reduced onto it") from None
        return self.on_target(path)


class LoadPETImaged(MapTransform):
    """Dictionary version of :class:`LoadPETImage`; stores the subject id (``id_key``) in the image's meta
    as :class:`~common.transforms.LoadValidatedImaged` does, so outputs are named after the subject.

    Args:
        keys: keys holding a PET file path (or a one-element list of it).
        mode: ``"resample"`` or ``"clinicadl"`` for pet-linear inputs.
        modality: value range checked (``"PET"``; ``"ANOMALY"`` for ground-truth maps).
        sigma_mm: pre-filter of the ``"resample"`` mode (default 0.74 mm).
        allow_missing_keys: skip keys a data item lacks (e.g. ``anomaly`` of controls).
        id_key: key of the subject id copied into the meta (``None``: none).
    """

    def __init__(self, keys: KeysCollection, mode: str = "resample", modality: str = "PET",
                 sigma_mm: float | Sequence[float] | None = None, allow_missing_keys: bool = False,
                 id_key: str | None = "id"):
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadPETImage(mode, modality, sigma_mm)
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
            if self.id_key is not None and self.id_key in d:
                d[key].meta[SUBJECT_ID] = str(d[self.id_key])
        return d


ReducePETLinearD = ReducePETLinearDict = ReducePETLineard
LoadPETImageD = LoadPETImageDict = LoadPETImaged
