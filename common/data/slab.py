"""The analysed slab: the axial slices around the brain centre that pd_ae trains on (PD paper: 40).

Training slices and the evaluation's ROI restriction use this one definition, so "within the analysed
slab" means the same slices everywhere.
"""

from __future__ import annotations

import numpy as np

__all__ = ["analysed_slab"]


def analysed_slab(brain_mask: np.ndarray, n_slices: int = 40) -> slice:
    """``n_slices`` consecutive axial (last-axis) slices centred on the brain mask's centre of mass."""
    depth = brain_mask.shape[-1]
    if not 1 <= n_slices <= depth:
        raise ValueError(f"n_slices must be in [1, {depth}], got {n_slices}")
    z_counts = brain_mask.reshape(-1, depth).sum(0)
    if z_counts.sum() == 0:
        raise ValueError("the brain mask is empty")
    centre = float((np.arange(depth) * z_counts).sum() / z_counts.sum())
    start = int(np.clip(round(centre - n_slices / 2), 0, depth - n_slices))
    return slice(start, start + n_slices)
