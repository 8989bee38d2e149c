"""Figures of the PD anomaly evaluation (paper figures 2-4): ROC curves, g-mean bars, % abnormal heat map,
a reconstruction showcase, and a model comparison over splits.

Each function takes plain rows/arrays (as :mod:`common.evaluation.pd` produces them), writes one PNG
atomically (temporary file, then rename) and returns its path. Figures are built with matplotlib's object
API (``Figure`` rendered by Agg), not pyplot: no global backend switch, no figure registry to leak.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from common.data._jsonio import atomic_path

__all__ = [
    "plot_gmean_bars",
    "plot_model_comparison",
    "plot_percent_abnormal_heatmap",
    "plot_reconstruction_showcase",
    "plot_roc_curves",
    "roi_label",
]

_LABELS = {
    "whole_brain": "Whole brain", "subcortical": "Subcortical", "white_matter": "WM", "frontal": "Frontal",
    "temporal": "Temporal", "parietal": "Parietal", "occipital": "Occipital", "cingulate_insular": "Cing./Insula",
    "cerebellum": "Cerebellum", "sn": "SN", "rn": "RN", "stn": "STN", "gpi": "GPi", "gpe": "GPe",
    "thalamus": "Thalamus", "putamen": "Putamen", "caudate": "Caudate",
}
_METRIC_LABELS = {"auc": "AUC", "paper_gmean": "g-mean (threshold on the test set)",
                  "nested_gmean": "g-mean (nested threshold)", "paper_sensitivity": "sensitivity (paper)",
                  "paper_specificity": "specificity (paper)", "nested_sensitivity": "sensitivity (nested)",
                  "nested_specificity": "specificity (nested)"}
_PAPER, _NESTED = "#1f5fa8", "#f29e38"


def roi_label(name: str, approximate: bool | None = False) -> str:
    """Short display name (``gpi_L`` -> ``GPi L``); approximate ROIs get a ``*``."""
    base, side = (name[:-2], " " + name[-1]) if name[-2:] in ("_L", "_R") else (name, "")
    return _LABELS.get(base, base.replace("_", " ")) + side + ("*" if approximate else "")


def _save(fig, out: str | os.PathLike) -> Path:
    out = Path(out)
    with atomic_path(out, ".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return out


def _subplots(nrows: int = 1, ncols: int = 1, figsize=(6.0, 4.0), facecolor="white", **kwargs):
    fig = Figure(figsize=figsize, facecolor=facecolor)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _micro_start(rows: Sequence[Mapping]) -> int | None:
    """Index of the first micro structure (PD nuclei) after macro ones, for the paper's dashed separator."""
    groups = [r.get("group") for r in rows]
    for k in range(1, len(groups)):
        if groups[k] == "nuclei" and groups[k - 1] in ("whole_brain", "macro"):
            return k
    return None


def _value(v) -> float:
    return np.nan if v is None else float(v)


def plot_roc_curves(rows: Sequence[Mapping], out, title: str | None = None, max_cols: int = 5) -> Path:
    """One ROC panel per ROI, AUC [CI] in the legend, the paper's g-mean point marked."""
    n = len(rows)
    cols = min(max_cols, n)
    nrows = math.ceil(n / cols)
    fig, axes = _subplots(nrows, cols, figsize=(2.7 * cols, 2.8 * nrows), squeeze=False,
                             sharex=True, sharey=True)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    for ax, r in zip(axes.ravel(), rows):
        roc = r["roc"]
        ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls="--")
        ax.step(roc["fpr"], roc["tpr"], where="post", color=_PAPER, lw=1.5,
                label=f"AUC {r['auc']:.2f} [{r['auc_ci_low']:.2f}, {r['auc_ci_high']:.2f}]")
        ax.plot(1 - r["paper_specificity"], r["paper_sensitivity"], "o", color="#d62728", ms=4,
                label=f"g-mean {r['paper_gmean']:.2f}")
        ax.set_title(f"{roi_label(r['roi'], r.get('approximate'))} ({r['n_voxels']} vox)", fontsize=9)
        ax.legend(loc="lower right", fontsize=7, frameon=False)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal")
    for ax in axes[-1]:
        ax.set_xlabel("1 - specificity", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("sensitivity", fontsize=8)
    fig.suptitle(f"ROC per ROI (% abnormal voxels){': ' + title if title else ''}", fontsize=11)
    fig.tight_layout()
    return _save(fig, out)


def plot_gmean_bars(rows: Sequence[Mapping], out, title: str | None = None) -> Path:
    """Paper Fig. 4 style: g-mean per ROI, threshold chosen on the test set (paper) and nested (leave-one-out);
    a dashed line separates macro from micro structures."""
    x = np.arange(len(rows))
    fig, ax = _subplots(figsize=(max(7.0, 0.55 * len(rows) + 2), 4.2))
    paper = [100 * _value(r["paper_gmean"]) for r in rows]
    nested = [100 * _value(r.get("nested_gmean")) for r in rows]
    ax.bar(x - 0.2, paper, 0.4, color=_PAPER, label="threshold on the test set (paper)")
    ax.bar(x + 0.2, nested, 0.4, color=_NESTED, label="nested (leave-one-out threshold)")
    _finish_roi_axis(ax, rows, "g-mean (%)")
    ax.set_title(f"g-mean per ROI{': ' + title if title else ''}", fontsize=11, loc="left")
    fig.tight_layout()
    return _save(fig, out)


def _finish_roi_axis(ax, rows: Sequence[Mapping], ylabel: str):
    x = np.arange(len(rows))
    ax.set_xticks(x, [roi_label(r["roi"], r.get("approximate")) for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylim(0, 100)
    ax.axhline(50, color="0.6", lw=0.6, ls=":")
    split = _micro_start(rows)
    if split is not None:
        ax.axvline(split - 0.5, color="k", lw=1, ls="--")
    ax.set_ylabel(ylabel)
    # Above the axes, right-aligned: bars reach 100 % and would hide an inner legend.
    ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def plot_percent_abnormal_heatmap(table: np.ndarray, groups: Sequence[str], roi_names: Sequence[str], out,
                                  ids: Sequence[str] | None = None, title: str | None = None,
                                  approximate: Mapping[str, bool] | None = None, max_labels: int = 60) -> Path:
    """Paper Fig. 3 style: subjects x ROIs % abnormal voxels, controls on top, patients below.

    The colour scale stops at the 99th percentile so one extreme subject does not wash out the rest.
    """
    table = np.asarray(table, dtype=float)
    groups = np.asarray(groups)
    order = np.concatenate([np.flatnonzero(groups == "control"), np.flatnonzero(groups != "control")])
    n_controls = int((groups == "control").sum())
    data = table[order]
    n, r = data.shape
    fig, ax = _subplots(figsize=(max(6.0, 0.45 * r + 2.5), min(9.0, max(4.0, 0.14 * n + 2))))
    vmax = max(float(np.percentile(data, 99)), 1e-6)
    im = ax.imshow(data, aspect="auto", cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
    ax.axhline(n_controls - 0.5, color="w", lw=1.5)
    approximate = approximate or {}
    ax.set_xticks(np.arange(r), [roi_label(nm, approximate.get(nm)) for nm in roi_names], rotation=45, ha="right",
                  fontsize=8)
    if ids is not None and n <= max_labels:
        ax.set_yticks(np.arange(n), [str(ids[k]) for k in order], fontsize=6)
    else:
        ax.set_yticks([(n_controls - 1) / 2, n_controls + (n - n_controls - 1) / 2],
                      [f"controls ({n_controls})", f"patients ({n - n_controls})"], rotation=90, va="center")
    cbar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cbar.set_label("% abnormal voxels")
    ax.set_title(f"% abnormal voxels, controls (top) / patients (bottom){': ' + title if title else ''}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def plot_reconstruction_showcase(showcase: Mapping, out, mask: np.ndarray | None = None, tau: float | None = None,
                                 z: int | None = None, title: str | None = None,
                                 channel_names: Sequence[str] = ("FA", "MD"),
                                 error_label: str = "e(v), FA and MD (a.u.)") -> Path:
    """Paper Fig. 2 style on one axial slice: each input channel and its reconstruction, the error map and,
    with a global ``tau``, the abnormal voxels (e > tau) of the brain slab ``mask``.

    ``showcase``: ``image`` (C, X, Y, Z), ``reconstruction`` (C, X, Y, Z), ``error`` (X, Y, Z), ``id``,
    optionally ``z`` (default: the middle of ``mask``'s slab, else of the volume) and ``error_label`` (the error's
    colour-bar label with its unit, e.g. ``"|z|"``; default ``error_label``: the joint error over the channels).
    """
    image = np.asarray(showcase["image"], dtype=float)
    recon = np.asarray(showcase["reconstruction"], dtype=float)
    error = np.asarray(showcase["error"], dtype=float)
    error = error[0] if error.ndim == 4 else error
    if image.ndim != 4 or recon.shape != image.shape or error.shape != image.shape[1:]:
        raise ValueError(f"showcase shapes: image {image.shape} and reconstruction {recon.shape} must be (C, X, Y, Z), "
                         f"error {error.shape} must be (X, Y, Z) on the same grid")
    z = showcase.get("z", z)
    error_label = showcase.get("error_label", error_label)
    if z is None:
        zs = np.flatnonzero(mask.any(axis=(0, 1))) if mask is not None else np.arange(error.shape[2])
        z = int(zs[len(zs) // 2])
    names = list(channel_names)[: image.shape[0]] + [f"channel {c}" for c in range(len(channel_names), image.shape[0])]
    panels = []
    for c, name in enumerate(names):
        vmax = float(np.percentile(image[c], 99.5)) or 1.0
        panels += [(image[c], name, "gray", vmax), (recon[c], f"{name} reconstruction", "gray", vmax)]
    evmax = float(np.percentile(error[mask] if mask is not None else error, 99.5)) or 1.0
    panels.append((error, "error e(v)", "inferno", evmax))
    abnormal = tau is not None and mask is not None
    if abnormal:  # abnormal voxels of the brain slab in red over the first channel
        panels.append((image[0], f"abnormal: e > {tau:.3g}", "gray", panels[0][3]))
    fig, axes = _subplots(1, len(panels), figsize=(2.3 * len(panels), 3.2), facecolor="black")
    for ax, (vol, name, cmap, vmax) in zip(axes, panels):
        handle = ax.imshow(np.asarray(vol[:, :, z], dtype=float).T, origin="lower", cmap=cmap, vmin=0, vmax=vmax,
                           interpolation="nearest")
        ax.set_title(name, color="w", fontsize=9)
        ax.set_axis_off()
        if cmap == "inferno":
            cbar = fig.colorbar(handle, ax=ax, fraction=0.046, pad=0.02)
            cbar.ax.tick_params(colors="w", labelsize=7)
            cbar.set_label(error_label, color="w", fontsize=8)
    if abnormal:
        hits = ((error > tau) & mask)[:, :, z].T
        axes[-1].imshow(np.ma.masked_where(~hits, hits.astype(float)), origin="lower", interpolation="nearest",
                        cmap=matplotlib.colors.ListedColormap(["#ff2d2d"]), vmin=0, vmax=1)
    fig.suptitle(f"{title + ': ' if title else ''}{showcase.get('id', '')}, axial slice {z}", color="w", fontsize=10)
    return _save(fig, out)


def plot_model_comparison(aggregates_by_model: Mapping[str, Sequence[Mapping]] | Sequence[Mapping], out,
                          metric: str = "paper_gmean", title: str | None = None) -> Path:
    """Paper Fig. 4 over splits: per ROI one bar per model (mean) with sd error bars; dashed line between
    macro and micro structures. ``metric`` is one of the fractions aggregated (``auc``, ``paper_gmean``,
    ``nested_gmean``, ...; shown in %). Takes ``{model: rows}`` or :func:`~common.evaluation.pd.aggregate_splits`
    rows (grouped by their ``model``)."""
    if not isinstance(aggregates_by_model, Mapping):
        grouped: dict[str, list] = {}
        for row in aggregates_by_model:
            grouped.setdefault(row["model"], []).append(row)
        aggregates_by_model = grouped
    if not aggregates_by_model:
        raise ValueError("no aggregates to plot")
    models = list(aggregates_by_model)
    rois = list(dict.fromkeys(r["roi"] for rows in aggregates_by_model.values() for r in rows))
    info = {r["roi"]: r for rows in aggregates_by_model.values() for r in rows}
    ordered = [info[roi] for roi in rois]
    width = 0.8 / len(models)
    x = np.arange(len(rois))
    fig, ax = _subplots(figsize=(min(20.0, max(7.0, 0.3 * len(rois) * (1 + len(models)) / 2 + 2)), 4.4))
    colours = matplotlib.colormaps["tab10"]
    for k, model in enumerate(models):
        rows = {r["roi"]: r for r in aggregates_by_model[model]}
        mean = [100 * _value(rows.get(roi, {}).get(f"{metric}_mean")) for roi in rois]
        sd = [100 * _value(rows.get(roi, {}).get(f"{metric}_sd")) for roi in rois]
        n = max((rows[roi].get("n_splits", 0) for roi in rois if roi in rows), default=0)
        ax.bar(x + (k - (len(models) - 1) / 2) * width, mean, width, yerr=np.nan_to_num(sd), capsize=2,
               color=colours(k), label=f"{model} (mean ± sd, {n} splits)", error_kw={"lw": 0.8})
    _finish_roi_axis(ax, ordered, f"{_METRIC_LABELS.get(metric, metric)} (%)")
    ax.set_title(title or f"{_METRIC_LABELS.get(metric, metric)} per ROI over splits", fontsize=11, loc="left")
    fig.tight_layout()
    return _save(fig, out)
