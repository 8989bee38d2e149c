"""Simulated hypometabolism on FDG PET (AD paper section 2.2; docs/design.md section 4.2).

``x' = x * G_sigma(1 - (d / 100) * M)``: a factor map equal to ``1 - d/100`` inside the binary mask ``M``
and 1 outside is smoothed with a Gaussian of ``sigma`` mm, and multiplies the image. Because the Gaussian
sums to one, ``G(1 - dM) = 1 - d * G(M)``; smoothing the mask (zero outside) instead of the factor map
keeps the image borders exact whatever the padding. The reduction map ``d/100 * G(M)`` is the ground
truth anomaly map, returned by the dictionary transforms under ``anomaly_key``.

Masks may be given as arrays, NIfTI paths, or names of the atlas's dementia masks (``ad``, ``bvftd``,
``svppa``, ``lvppa``, ``nfvppa``, ``pca``), which lets bundle configs name them in JSON.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import ClassVar

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type
from scipy import ndimage

__all__ = [
    "DEMENTIA_PATTERNS",
    "RandSimulateHypometabolism",
    "RandSimulateHypometabolismD",
    "RandSimulateHypometabolismDict",
    "RandSimulateHypometabolismd",
    "SimulateHypometabolism",
    "SimulateHypometabolismD",
    "SimulateHypometabolismDict",
    "SimulateHypometabolismd",
    "smoothed_mask",
]

#: The six dementia patterns of the AD paper, as named in the atlas's region table.
DEMENTIA_PATTERNS = ("ad", "bvftd", "lvppa", "svppa", "nfvppa", "pca")

MaskLike = np.ndarray | torch.Tensor | str | os.PathLike


def smoothed_mask(mask: np.ndarray, sigma_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """``G_sigma(M)`` for a binary mask, sigma given in mm and converted per axis to voxels (float32)."""
    sigma_vox = [float(sigma_mm) / float(s) for s in spacing]
    return ndimage.gaussian_filter(np.asarray(mask, dtype=np.float32), sigma=sigma_vox, mode="constant", cval=0.0)


def _resolve_mask(mask: MaskLike, grid: str) -> np.ndarray:
    """An array from an array, a NIfTI path, or an atlas mask name."""
    if isinstance(mask, torch.Tensor):
        return mask.detach().cpu().numpy().squeeze() > 0.5
    if isinstance(mask, np.ndarray):
        return np.asarray(mask).squeeze() > 0.5
    if isinstance(mask, str) and not mask.endswith((".nii", ".nii.gz")):
        from common.atlases import load_atlas

        return load_atlas(grid).mask(mask)
    return np.asarray(nib.load(os.fspath(mask)).dataobj).squeeze() > 0.5


def _spacing_of(img, spacing: Sequence[float] | None, grid: str) -> tuple[float, ...]:
    if spacing is not None:
        return tuple(float(s) for s in spacing)
    if isinstance(img, MetaTensor):
        return tuple(float(s) for s in np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0))
    from common.grids import get_grid

    return get_grid(grid).spacing


class _SmoothedMasks:
    """Smooths each mask once per (name, spacing) and keeps it: the mask is fixed, images change."""

    def __init__(self, masks: Mapping[str, MaskLike], sigma_mm: float, grid: str):
        self.masks, self.sigma_mm, self.grid = dict(masks), float(sigma_mm), grid
        self._cache: dict[tuple, np.ndarray] = {}

    def get(self, name: str, spacing: tuple[float, ...], shape: tuple[int, ...]) -> np.ndarray:
        key = (name, spacing)
        if key not in self._cache:
            mask = _resolve_mask(self.masks[name], self.grid)
            if mask.shape != tuple(shape):
                raise ValueError(f"hypometabolism mask {name!r} has shape {mask.shape}, image has {tuple(shape)}")
            self._cache[key] = smoothed_mask(mask, self.sigma_mm, spacing)
        return self._cache[key]


def _as_mask_dict(masks: MaskLike | Sequence[MaskLike] | Mapping[str, MaskLike]) -> dict[str, MaskLike]:
    if isinstance(masks, Mapping):
        return dict(masks)
    if isinstance(masks, (str, os.PathLike, np.ndarray, torch.Tensor)):
        masks = [masks]
    return {(m if isinstance(m, str) else f"mask{i}"): m for i, m in enumerate(masks)}


def _apply(img, reduction: np.ndarray):
    """Multiply ``img`` (channel-first or not) by ``1 - reduction``, keeping its type, device and meta."""
    factor = convert_to_dst_type(1.0 - reduction, img, dtype=img.dtype if hasattr(img, "dtype") else None)[0]
    return img * factor


class SimulateHypometabolism(Transform):
    """Reduce uptake by ``degree`` % inside a (Gaussian-smoothed) mask: ``x * (1 - d/100 * G_sigma(M))``.

    The smoothed mask is computed once and kept, so one instance serves every image and, through the call's
    ``degree`` (MONAI's call-time override), every degree: the PET evaluation's sweep, the synthetic cohort's
    patients.

    Args:
        mask: binary mask on the image grid (array, NIfTI path or atlas dementia mask name such as ``"ad"``).
        degree: hypometabolism in percent (the AD paper uses 5..70).
        sigma_mm: Gaussian smoothing of the mask in mm (paper: 5; 0 leaves the mask binary).
        spacing: voxel size in mm; by default read from a MetaTensor's affine, else from ``grid``.
        grid: grid whose atlas resolves mask names (and gives the spacing of plain arrays).
    """

    backend: ClassVar[list] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, mask: MaskLike, degree: float = 30.0, sigma_mm: float = 5.0,
                 spacing: Sequence[float] | None = None, grid: str = "clinicadl2"):
        if not 0.0 <= degree <= 100.0:
            raise ValueError(f"degree must be a percentage in [0, 100], got {degree}")
        self.degree, self.spacing, self.grid = float(degree), spacing, grid
        self._masks = _SmoothedMasks({"mask": mask}, sigma_mm, grid)

    def mask_map(self, img) -> np.ndarray:
        """The smoothed mask ``G(M)`` (float32, in [0, 1]) on the spatial grid of ``img``; computed once."""
        return self._masks.get("mask", _spacing_of(img, self.spacing, self.grid), tuple(img.shape[-3:]))

    def reduction_map(self, img, degree: float | None = None) -> np.ndarray:
        """The fractional reduction ``d/100 * G(M)`` on the spatial grid of ``img`` (the anomaly map);
        ``degree`` overrides the instance's for this call."""
        return (self._degree(degree) / 100.0) * self.mask_map(img)

    def __call__(self, img, degree: float | None = None):
        """``img * (1 - d/100 * G(M))``, keeping its type and meta; ``degree`` overrides the instance's."""
        return _apply(img, self.reduction_map(img, degree))

    def _degree(self, degree: float | None) -> float:
        if degree is None:
            return self.degree
        if not 0.0 <= float(degree) <= 100.0:
            raise ValueError(f"degree must be a percentage in [0, 100], got {degree}")
        return float(degree)


class RandSimulateHypometabolism(RandomizableTransform):
    """Random variant: with probability ``prob``, a pattern drawn from ``masks`` at a degree drawn from
    ``degree_range`` (uniform, percent). Deterministic under ``set_random_state``.

    Args:
        masks: one mask, a sequence of masks, or a mapping name -> mask (arrays, NIfTI paths or atlas dementia
            mask names); the pattern is drawn uniformly among them.
        degree_range: ``(low, high)`` hypometabolism in percent, drawn uniformly.
        prob: probability of applying the transform (else the image passes unchanged).
        sigma_mm: Gaussian smoothing of the masks in mm (paper: 5).
        spacing: voxel size in mm; by default read from a MetaTensor's affine, else from ``grid``.
        grid: grid whose atlas resolves mask names (and gives the spacing of plain arrays).
    """

    backend = SimulateHypometabolism.backend

    def __init__(self, masks: MaskLike | Sequence[MaskLike] | Mapping[str, MaskLike] = ("ad",),
                 degree_range: tuple[float, float] = (15.0, 35.0), prob: float = 1.0, sigma_mm: float = 5.0,
                 spacing: Sequence[float] | None = None, grid: str = "clinicadl2"):
        RandomizableTransform.__init__(self, prob)
        low, high = degree_range
        if not 0.0 <= low <= high <= 100.0:
            raise ValueError(f"degree_range must satisfy 0 <= low <= high <= 100, got {degree_range}")
        self.degree_range, self.spacing, self.grid = (float(low), float(high)), spacing, grid
        self._masks = _SmoothedMasks(_as_mask_dict(masks), sigma_mm, grid)
        self.pattern: str = next(iter(self._masks.masks))
        self.degree: float = 0.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        names = list(self._masks.masks)
        self.pattern = names[self.R.randint(len(names))]
        self.degree = float(self.R.uniform(*self.degree_range))

    def reduction_map(self, img) -> np.ndarray:
        """Reduction map of the last drawn pattern and degree (zeros when the draw skipped the transform)."""
        shape = tuple(img.shape[-3:])
        if not self._do_transform:
            return np.zeros(shape, np.float32)
        spacing = _spacing_of(img, self.spacing, self.grid)
        return (self.degree / 100.0) * self._masks.get(self.pattern, spacing, shape)

    def __call__(self, img, randomize: bool = True):
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return _apply(img, self.reduction_map(img))


class SimulateHypometabolismd(MapTransform):
    """Dictionary version of :class:`SimulateHypometabolism`; stores the reduction map under ``anomaly_key``
    (channel-first, same type as the image) unless it is None.

    Args:
        keys: keys of the images to reduce.
        mask, degree, sigma_mm, spacing, grid: as :class:`SimulateHypometabolism`.
        anomaly_key: key the ground-truth reduction map is written to (``None``: not written).
        allow_missing_keys: skip keys a data item lacks instead of raising ``KeyError``.
    """

    backend = SimulateHypometabolism.backend

    def __init__(self, keys: KeysCollection, mask: MaskLike, degree: float = 30.0, sigma_mm: float = 5.0,
                 spacing: Sequence[float] | None = None, grid: str = "clinicadl2",
                 anomaly_key: str | None = "anomaly", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.simulator = SimulateHypometabolism(mask, degree, sigma_mm, spacing, grid)
        self.anomaly_key = anomaly_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            reduction = self.simulator.reduction_map(d[key])
            d[key] = _apply(d[key], reduction)
            if self.anomaly_key is not None:
                d[self.anomaly_key] = convert_to_dst_type(reduction[None], d[key])[0]
        return d


class RandSimulateHypometabolismd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandSimulateHypometabolism`; one draw per call shared by all keys.
    Stores the reduction map under ``anomaly_key`` and the drawn pattern and degree under
    ``<anomaly_key>_pattern`` / ``<anomaly_key>_degree``.

    Args:
        keys: keys of the images to reduce (all with the same draw).
        masks, degree_range, prob, sigma_mm, spacing, grid: as :class:`RandSimulateHypometabolism`.
        anomaly_key: key the ground-truth reduction map is written to (``None``: not written).
        allow_missing_keys: skip keys a data item lacks instead of raising ``KeyError``.
    """

    backend = SimulateHypometabolism.backend

    def __init__(self, keys: KeysCollection, masks=("ad",), degree_range: tuple[float, float] = (15.0, 35.0),
                 prob: float = 1.0, sigma_mm: float = 5.0, spacing: Sequence[float] | None = None,
                 grid: str = "clinicadl2", anomaly_key: str | None = "anomaly", allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.simulator = RandSimulateHypometabolism(masks, degree_range, 1.0, sigma_mm, spacing, grid)
        self.anomaly_key = anomaly_key

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.simulator.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            self.simulator.randomize()
        for key in self.key_iterator(d):
            if self._do_transform:
                reduction = self.simulator.reduction_map(d[key])
                d[key] = _apply(d[key], reduction)
            else:
                reduction = np.zeros(tuple(d[key].shape[-3:]), np.float32)
            if self.anomaly_key is not None:
                d[self.anomaly_key] = convert_to_dst_type(reduction[None], d[key])[0]
                d[f"{self.anomaly_key}_pattern"] = self.simulator.pattern if self._do_transform else "none"
                d[f"{self.anomaly_key}_degree"] = self.simulator.degree if self._do_transform else 0.0
        return d


SimulateHypometabolismD = SimulateHypometabolismDict = SimulateHypometabolismd
RandSimulateHypometabolismD = RandSimulateHypometabolismDict = RandSimulateHypometabolismd
