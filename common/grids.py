"""Image grids the bundles work on (docs/design.md section 1).

One place defines each grid's shape and RAS affine; loaders, atlases and synthetic cohorts all take a
grid by name from :data:`GRIDS`, so a grid mismatch is caught against the same definition everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GRIDS", "Grid", "get_grid"]


@dataclass(frozen=True)
class Grid:
    """A voxel grid: its shape and its voxel-to-mm affine in RAS orientation."""

    name: str
    shape: tuple[int, int, int]
    affine_rows: tuple[tuple[float, ...], ...]
    description: str = ""

    @property
    def affine(self) -> np.ndarray:
        """4x4 RAS affine (a fresh array, safe to modify)."""
        aff = np.eye(4)
        aff[:3, :] = np.asarray(self.affine_rows, dtype=float)
        return aff

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def x_flipped_affine(self) -> np.ndarray:
        """The same voxel centres stored with x decreasing along axis 0, as SPM writes them."""
        aff = self.affine
        aff[0, 3] = aff[0, 3] + aff[0, 0] * (self.shape[0] - 1)
        aff[0, 0] = -aff[0, 0]
        return aff

    def world_coordinates(self) -> np.ndarray:
        """(3, X, Y, Z) array of voxel-centre coordinates in mm (float32)."""
        aff = self.affine
        axes = [aff[i, i] * np.arange(n, dtype=np.float32) + aff[i, 3] for i, n in enumerate(self.shape)]
        return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)


GRIDS: dict[str, Grid] = {
    "spm1p5": Grid(
        name="spm1p5",
        shape=(121, 145, 121),
        affine_rows=((1.5, 0, 0, -90), (0, 1.5, 0, -126), (0, 0, 1.5, -72)),
        description="SPM/CAT12 MNI 1.5 mm grid (DTI FA/MD maps of pd_ae and pd_sae)",
    ),
    "clinicadl2": Grid(
        name="clinicadl2",
        shape=(80, 96, 80),
        affine_rows=((2, 0, 0, -80), (0, 2, 0, -111), (0, 0, 2, -70)),
        description="ClinicaDL-reduced MNI 2 mm PET grid (ad_vae3d); affine inferred, see docs/design.md 1.2",
    ),
    "clinica_pet_linear": Grid(
        name="clinica_pet_linear",
        shape=(169, 208, 179),
        affine_rows=((1, 0, 0, -84), (0, 1, 0, -119), (0, 0, 1, -78)),
        description="Clinica pet-linear output, MNI 1 mm crop; ClinicaDL's img[4:164:2, 8:200:2, 8:168:2] of it is "
                    "exactly the clinicadl2 grid (affine inferred with it, see docs/design.md 1.2)",
    ),
}


def get_grid(grid: str | Grid) -> Grid:
    """Return a :class:`Grid` given its name (or the grid itself), with a clear error for unknown names."""
    if isinstance(grid, Grid):
        return grid
    try:
        return GRIDS[grid]
    except KeyError:
        raise ValueError(f"unknown grid {grid!r}; known grids: {', '.join(GRIDS)}") from None
