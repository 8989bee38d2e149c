"""The per-subject QC figure of ``prepare``: each output map in three planes over the template's brain outline.

One look tells a registration that slipped (the outline off the brain's edge) from a good one; the figure is small
(a PNG of a few tens of kB) so a cohort's figures can be paged through quickly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.data._jsonio import atomic_path
from common.grids import get_grid

__all__ = ["qc_figure"]


def _planes(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Sagittal, coronal and axial slices through ``centre``, rotated for display (superior / anterior up)."""
    x, y, z = centre
    return [np.rot90(volume[x, :, :]), np.rot90(volume[:, y, :]), np.rot90(volume[:, :, z])]


def qc_figure(path: str | os.PathLike, maps: dict[str, np.ndarray], grid: str, title: str = "",
              outline: np.ndarray | None = None, limits: dict[str, tuple[float, float]] | None = None) -> Path:
    """Write ``path`` (PNG): one row per map (name -> array on ``grid``), three planes through the outline's centre,
    the outline (default: the atlas brain mask of ``grid``) drawn in red. ``limits``: display range per map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if outline is None:
        from common.atlases import load_atlas

        outline = load_atlas(get_grid(grid).name).brain > 0.5
    outline = np.asarray(outline, bool)
    centre = tuple(round(float(c)) for c in np.argwhere(outline).mean(0)) if outline.any() else tuple(
        n // 2 for n in outline.shape)
    limits = limits or {}
    fig, axes = plt.subplots(len(maps), 3, figsize=(6.0, 2.1 * len(maps)), squeeze=False)
    for row, (name, values) in enumerate(maps.items()):
        volume = np.asarray(values, np.float32)
        lo, hi = limits.get(name, (0.0, float(np.percentile(volume[outline], 99)) if outline.any() else 1.0))
        for col, (img, edge) in enumerate(zip(_planes(volume, centre), _planes(outline.astype(np.float32), centre))):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            ax.contour(edge, levels=[0.5], colors="red", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=72)
    plt.close(fig)
    return Path(path)
