"""Overview figure of the synthetic (or a user's) cohorts: a control and a patient with atlas contours."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

from common.atlases import Atlas
from common.data._jsonio import atomic_path
from common.data.dataset_json import CohortDataset
from common.nifti import load_checked

__all__ = ["axial_index", "plot_cohort_overview"]

PD_CONTOURS = {"white_matter": "#4fa3ff", "putamen": "#ffd24f", "caudate": "#ff9f4f", "thalamus": "#b07cff",
               "gpi": "#4fff8f", "gpe": "#2fbf6f"}
PET_CONTOURS = {"ad": "#00e5ff"}


def axial_index(atlas: Atlas, z_mm: float) -> int:
    """Axial slice index of the MNI height ``z_mm`` on the atlas grid."""
    aff = atlas.affine
    return int(np.clip(round((z_mm - aff[2, 3]) / aff[2, 2]), 0, atlas.grid.shape[2] - 1))


def _show(ax, image: np.ndarray, z: int, title: str, cmap: str, vmax: float):
    ax.imshow(image[:, :, z].T, origin="lower", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)


def _contours(ax, atlas: Atlas, z: int, regions: dict[str, str], linewidth: float = 0.8):
    for region, colour in regions.items():
        try:
            mask = atlas.region_mask(region)
        except KeyError:
            mask = atlas.mask(region)
        if mask[:, :, z].any():
            ax.contour(mask[:, :, z].T.astype(float), levels=[0.5], colors=[colour], linewidths=linewidth)


def _first(subjects: list[dict], group: str) -> dict | None:
    return next((s for s in subjects if s["group"] == group), None)


def _load(ds: CohortDataset, subject: dict) -> list[np.ndarray]:
    return [load_checked(p, ds.grid, m)[0] for p, m in zip(subject["image"], ds.modalities)]


def plot_cohort_overview(pd_dataset: CohortDataset | None, pd_atlas: Atlas | None,
                         pet_dataset: CohortDataset | None, pet_atlas: Atlas | None, out: str | Path,
                         pd_z_mm: float = 3.0, pet_z_mm: float = 10.0, max_reference: int = 10) -> Path:
    """PNG with one row per cohort: a control and a patient on one axial slice with atlas contours, the
    patient against the mean of (up to ``max_reference``) controls, and the patient's ground-truth
    anomaly map as an axial maximum projection. Either cohort may be omitted."""
    rows = [r for r in (("pd", pd_dataset, pd_atlas), ("pet", pet_dataset, pet_atlas)) if r[1] is not None]
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 3.9 * len(rows)), squeeze=False, facecolor="black")
    for ax in axes.ravel():
        ax.set_facecolor("black")
        ax.set_axis_off()
    for row, (kind, ds, atlas) in zip(axes, rows):
        control, patient = _first(ds.subjects, "control"), _first(ds.subjects, "patient")
        z = axial_index(atlas, pd_z_mm if kind == "pd" else pet_z_mm)
        z_label = f"z = {atlas.affine[2, 3] + z * atlas.affine[2, 2]:+.0f} mm"
        contours = PD_CONTOURS if kind == "pd" else PET_CONTOURS
        name, cmap, vmax = ("FA", "gray", 0.8) if kind == "pd" else ("SUVR", "hot", 1.8)
        reference = np.mean([_load(ds, s)[0] for s in ds.controls[:max_reference]], axis=0)
        for col, subject in enumerate((control, patient)):
            if subject is None:
                continue
            _show(row[col], _load(ds, subject)[0], z, f"{subject['id']} {subject['group']}\n{name}, {z_label}",
                  cmap, vmax)
            _contours(row[col], atlas, z, contours)
        if patient is None:
            continue
        # Smoothed (sigma 3 mm) so the structured change, not voxel noise, shows.
        sigma = 3.0 / atlas.grid.spacing[0]
        smooth_ref = ndimage.gaussian_filter(reference, sigma)
        smooth_pat = ndimage.gaussian_filter(_load(ds, patient)[0], sigma)
        relative = np.where(atlas.brain, smooth_pat / np.maximum(smooth_ref, 1e-6) - 1, np.nan)
        row[2].imshow(relative[:, :, z].T, origin="lower", cmap="coolwarm", vmin=-0.15, vmax=0.15)
        row[2].set_title(f"{patient['id']} {name} / control mean - 1\n(smoothed 3 mm; blue = lower, +-15 %)",
                         fontsize=9)
        if patient.get("anomaly"):
            anomaly = load_checked(patient["anomaly"], ds.grid, "ANOMALY")[0]
            row[3].imshow(anomaly.max(axis=2).T, origin="lower", cmap="magma", vmin=0,
                          vmax=max(float(anomaly.max()), 1e-6))
            row[3].contour(atlas.brain.any(axis=2).T.astype(float), levels=[0.5], colors=["#808080"], linewidths=0.6)
            what = "planted FA decrease / MD increase" if kind == "pd" else "simulated uptake reduction"
            row[3].set_title(f"{patient['id']} ground truth, axial max projection\n{what}, max {anomaly.max():.1%}",
                             fontsize=9)
    for ax in axes.ravel():
        ax.title.set_color("white")
    legend = [plt.Line2D([], [], color=c, label=n) for n, c in {**PD_CONTOURS, "AD mask": PET_CONTOURS["ad"]}.items()]
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), frameon=False, labelcolor="white", fontsize=9)
    fig.suptitle("Synthetic cohorts on ICBM152 / AAL3 / HCPEx anatomy", color="white")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    out = Path(out)
    with atomic_path(out, ".png") as tmp:
        fig.savefig(tmp, dpi=110, facecolor="black", format="png")
    plt.close(fig)
    return out
