"""``python -m common atlas``: build the cached atlases and print their ROI voxel counts."""

from __future__ import annotations

import time

import numpy as np

from common.atlases.atlas import load_atlas
from common.grids import GRIDS


def format_atlas_table(atlas) -> str:
    """A plain-text table of the atlas's ROIs: group, voxels, volume in mL, and a mark on approximations (the
    evaluation's per-ROI results table is :func:`common.evaluation.format_roi_table`)."""
    voxel_ml = float(np.prod(atlas.grid.spacing)) / 1000.0
    lines = [f"{'roi':<20}{'group':<11}{'voxels':>9}{'mL':>9}  note"]
    lines.append(f"{'whole_brain':<20}{'brain':<11}{int(atlas.brain.sum()):>9}{atlas.brain.sum() * voxel_ml:>9.1f}")
    for roi in atlas.rois:
        note = "approximate" if roi["approximate"] else ""
        lines.append(f"{roi['name']:<20}{roi['group']:<11}{roi['voxels']:>9}{roi['voxels'] * voxel_ml:>9.2f}  "
                     f"{note}".rstrip())
    return "\n".join(lines)


def atlas_command(grid: str = "all", rebuild: bool = False, quiet: bool = False) -> None:
    names = list(GRIDS) if grid == "all" else [grid]
    for name in names:
        start = time.perf_counter()
        atlas = load_atlas(name, rebuild=rebuild)
        elapsed = time.perf_counter() - start
        state = (f"built in {atlas.build_seconds:.1f} s" if atlas.build_seconds is not None
                 else f"cached, checked in {elapsed:.1f} s")
        print(f"{name}: {atlas.grid.shape} {atlas.grid.spacing[0]:g} mm atlas at {atlas.folder} ({state})")
        if not quiet:
            print(format_atlas_table(atlas))
