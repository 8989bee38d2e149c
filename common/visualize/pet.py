"""Figures of the PET simulation-based evaluation (AD paper Fig. 1 and Fig. 2, plus voxel detection).

Same conventions as :mod:`common.visualize.pd`: plain arrays and rows in, one PNG written atomically, its path
returned; matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from common.visualize.pd import _save, _subplots

__all__ = ["plot_degree_sweep", "plot_reconstructions", "plot_voxel_detection"]


def plot_degree_sweep(degrees: Sequence[float], values: np.ndarray, stat_rows: Sequence[Mapping], out,
                      normalised: bool = True, title: str | None = None, seed: int = 0):
    """Paper Fig. 1: per degree a box of the subjects' (normalised) MSE, the subjects as jittered points, the
    mean as a line, and ``*`` over degrees whose Bonferroni-corrected p-value is significant."""
    values = np.asarray(values, float)
    if values.ndim != 2 or values.shape[1] != len(degrees):
        raise ValueError(f"values must be (subjects, degrees={len(degrees)}), got {values.shape}")
    fig, ax = _subplots(figsize=(max(6.0, 0.6 * len(degrees) + 2), 4.2))
    x = np.arange(len(degrees))
    ax.boxplot([values[:, j] for j in range(len(degrees))], positions=x, widths=0.55, showfliers=False,
               medianprops={"color": "#444444"}, boxprops={"color": "#888888"}, whiskerprops={"color": "#888888"},
               capprops={"color": "#888888"})
    jitter = np.random.default_rng(seed).uniform(-0.15, 0.15, values.shape)
    ax.scatter((x[None, :] + jitter).ravel(), values.ravel(), s=9, alpha=0.6, color="#1f5fa8", zorder=3,
               label="subjects")
    ax.plot(x, values.mean(axis=0), "o-", color="#d62728", zorder=4, label="mean")
    if normalised:
        ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    for j, row in enumerate(stat_rows):
        if row.get("significant"):
            ax.text(x[j], top * 1.04 + 1e-12, "*", ha="center", va="bottom", fontsize=14, color="#d62728")
    ax.set_xticks(x, ["healthy" if d == 0 else f"{d:g}" for d in degrees])
    ax.set_xlabel("degree of simulated hypometabolism (%)")
    ax.set_ylabel("MSE / mean MSE of healthy inputs" if normalised else "MSE (input vs reconstruction)")
    ax.set_ylim(top=top * 1.15 + 1e-12)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title((title + "\n" if title else "") + "* significant after Bonferroni correction", fontsize=10, loc="left")
    fig.tight_layout()
    return _save(fig, out)


def plot_voxel_detection(table: Sequence[Mapping], sweep_mask: str, out, title: str | None = None):
    """AUROC and average precision (mean ± sd over subjects) of each model's voxel anomaly map against the
    simulated mask: per model (``model`` of the rows; one model when absent) a line over the sweep's degrees and
    one marker per other dementia; the AP panel shows the prevalence."""
    fig, axes = _subplots(1, 2, figsize=(10.0, 3.8))
    models = list(dict.fromkeys(r.get("model", "") for r in table))
    colours = ("#1f5fa8", "#d62728", "#2ca02c", "#9467bd")
    for ax, metric, label in ((axes[0], "auroc", "voxel AUROC"), (axes[1], "average_precision", "average precision")):
        prevalence = None
        for m, model in enumerate(models):
            rows = [r for r in table if r.get("model", "") == model]
            sweep = sorted((r for r in rows if r["mask"] == sweep_mask), key=lambda r: r["degree"])
            others = [r for r in rows if r["mask"] != sweep_mask]
            colour, prefix = colours[m % len(colours)], (f"{model}: " if model else "")
            if sweep:
                prevalence = sweep[0]["prevalence_mean"]
                d = [r["degree"] for r in sweep]
                ax.errorbar(d, [r[f"{metric}_mean"] for r in sweep],
                            yerr=np.nan_to_num([r[f"{metric}_sd"] for r in sweep]), fmt="o-", capsize=2,
                            color=colour, label=f"{prefix}{sweep_mask} mask")
            markers = "sD^v<>p*"
            for k, r in enumerate(others):
                ax.errorbar([r["degree"] + (k - len(others) / 2) * 0.4 + 0.15 * m], [r[f"{metric}_mean"]],
                            yerr=[np.nan_to_num(r[f"{metric}_sd"])], fmt=markers[k % len(markers)], capsize=2,
                            color=colour, alpha=0.7, label=f"{prefix}{r['mask']}")
        if metric == "auroc":
            ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
        elif prevalence is not None:
            ax.axhline(prevalence, color="0.6", lw=0.8, ls="--", label=f"prevalence ({sweep_mask})")
        ax.set_xlabel("degree (%)")
        ax.set_ylabel(label)
        ax.legend(fontsize=6, frameon=False, ncol=max(1, len(models)))
    fig.suptitle((title + ": " if title else "") + "anomaly map vs simulated mask (brain voxels), one line per model",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def plot_reconstructions(examples: Sequence[tuple], out, brain: np.ndarray | None = None,
                         centre: Sequence[int] | None = None, title: str | None = None):
    """Paper Fig. 2: one row per example ``(label, input, reconstruction)`` (3D arrays in [0, 1]); per plane
    (sagittal, coronal, axial through ``centre``, default the brain's centre of mass) the input, the
    reconstruction and the difference reconstruction - input (symmetric colour scale shared by all rows)."""
    if not examples:
        raise ValueError("no example to plot")
    shape = np.asarray(examples[0][1]).shape
    if centre is None:
        centre = (np.argwhere(brain).mean(axis=0) if brain is not None else np.asarray(shape) / 2).astype(int)
    cx, cy, cz = (int(c) for c in centre)
    planes = (("sagittal", lambda v: v[cx, :, :]), ("coronal", lambda v: v[:, cy, :]), ("axial", lambda v: v[:, :, cz]))
    diffs = [np.asarray(r, float) - np.asarray(i, float) for _, i, r in examples]
    dmax = max(float(np.percentile(np.abs(d), 99.5)) for d in diffs) or 1.0
    fig, axes = _subplots(len(examples), 9, figsize=(15.0, 1.9 * len(examples) + 0.6), squeeze=False)
    for row, ((label, image, recon), diff) in enumerate(zip(examples, diffs)):
        for p, (plane, cut) in enumerate(planes):
            for k, (vol, cmap, lo, hi, name) in enumerate(((image, "gray", 0.0, 1.0, "input"),
                                                           (recon, "gray", 0.0, 1.0, "reconstruction"),
                                                           (diff, "seismic", -dmax, dmax, "rec. - input"))):
                ax = axes[row, 3 * p + k]
                handle = ax.imshow(np.asarray(cut(np.asarray(vol, float))).T, origin="lower", cmap=cmap, vmin=lo,
                                   vmax=hi, interpolation="nearest")
                ax.set_axis_off()
                if row == 0:
                    ax.set_title(f"{plane}: {name}", fontsize=8)
        axes[row, 0].text(-0.08, 0.5, label, transform=axes[row, 0].transAxes, rotation=90, ha="right", va="center",
                          fontsize=8)
    cbar = fig.colorbar(handle, ax=axes[:, -1].tolist(), fraction=0.05, pad=0.02)
    cbar.ax.tick_params(labelsize=7)
    cbar.set_label("reconstruction - input (normalised uptake, a.u.)", fontsize=8)
    fig.suptitle((title + ": " if title else "") + f"input, reconstruction and difference (planes through {cx}, "
                 f"{cy}, {cz})", fontsize=10)
    return _save(fig, out)
