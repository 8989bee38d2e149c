"""The :class:`Atlas` of a grid: template, tissue maps, brain mask and ROI masks, cached on disk."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np
from filelock import FileLock

from common.atlases.build import TISSUES, atlas_inputs, build_atlas
from common.cache import build_atomically, cache_root, manifest_is_current
from common.grids import Grid, get_grid

__all__ = ["Atlas", "atlas_folder", "load_atlas"]


def atlas_folder(grid: str | Grid) -> Path:
    """Cache folder of a grid's atlas."""
    return cache_root() / "atlases" / get_grid(grid).name


@dataclass
class Atlas:
    """Atlas of one grid. Arrays are in the grid's RAS voxel order; masks are loaded on first use.

    ``rois`` lists every mask with its group (``macro``, ``nuclei``, ``dementia``, ``reference``), voxel
    count and whether it is an approximation (e.g. the subthalamic nucleus).
    """

    grid: Grid
    folder: Path
    build_seconds: float | None = None
    _masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _read(self, name: str, dtype=np.float32) -> np.ndarray:
        return np.asarray(nib.load(self.folder / f"{name}.nii.gz").dataobj, dtype=dtype)

    @cached_property
    def t1(self) -> np.ndarray:
        return self._read("t1")

    @cached_property
    def gm(self) -> np.ndarray:
        return self._read("gm")

    @cached_property
    def wm(self) -> np.ndarray:
        return self._read("wm")

    @cached_property
    def csf(self) -> np.ndarray:
        return self._read("csf")

    @cached_property
    def brain(self) -> np.ndarray:
        return self._read("brain_mask", np.uint8).astype(bool)

    @property
    def affine(self) -> np.ndarray:
        return self.grid.affine

    @cached_property
    def rois(self) -> list[dict]:
        with open(self.folder / "rois.json") as fh:
            return json.load(fh)["rois"]

    def names(self, group: str | None = None) -> list[str]:
        """Mask names of a group (``macro``, ``nuclei``, ``dementia``, ``reference``), or all of them."""
        return [r["name"] for r in self.rois if group is None or r["group"] == group]

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of one ROI (``whole_brain`` is the brain mask)."""
        if name == "whole_brain":
            return self.brain
        if name not in self._masks:
            if name not in self.names():
                raise KeyError(f"no ROI {name!r} in the {self.grid.name} atlas; known: {', '.join(self.names())}")
            self._masks[name] = self._read(f"masks/{name}", np.uint8).astype(bool)
        return self._masks[name]

    def region_mask(self, region: str) -> np.ndarray:
        """Union of a region's masks, e.g. ``putamen`` = ``putamen_L | putamen_R``."""
        parts = [r["name"] for r in self.rois if r["region"] == region]
        if not parts:
            raise KeyError(f"no region {region!r} in the {self.grid.name} atlas")
        return np.logical_or.reduce([self.mask(p) for p in parts])

    def roi_masks(self, groups: tuple[str, ...] = ("macro", "nuclei"),
                  whole_brain: bool = True) -> dict[str, np.ndarray]:
        """Ordered ROI masks for evaluation tables: the whole brain first, then each group's masks."""
        out = {"whole_brain": self.brain} if whole_brain else {}
        for group in groups:
            out.update({n: self.mask(n) for n in self.names(group)})
        return out

    def tissue(self, name: str) -> np.ndarray:
        if name not in TISSUES:
            raise KeyError(f"unknown tissue {name!r}; known: {TISSUES}")
        return getattr(self, name)

    def nifti(self, data: np.ndarray) -> nib.Nifti1Image:
        """Wrap an array of this grid in a NIfTI image with the grid's affine."""
        return nib.Nifti1Image(np.asarray(data), self.affine)


def load_atlas(grid: str | Grid = "spm1p5", rebuild: bool = False) -> Atlas:
    """The cached atlas of ``grid``, built first when it is missing, stale or damaged (a few seconds)."""
    grid = get_grid(grid)
    folder = atlas_folder(grid)
    inputs = atlas_inputs(grid)
    seconds = None
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (parallel test workers, two bundles starting together); the others wait and reuse.
    with FileLock(str(folder) + ".lock"):
        if rebuild or not manifest_is_current(folder, inputs):
            print(f"building the {grid.name} atlas into {folder} (first use, a few seconds)", file=sys.stderr,
                  flush=True)
            start = time.perf_counter()
            build_atomically(folder, inputs, lambda tmp: build_atlas(grid, tmp))
            seconds = time.perf_counter() - start
    return Atlas(grid=grid, folder=folder, build_seconds=seconds)
