"""Figures of the detection benchmark: a metric against effect size, one line per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullLocator

from common.visualize.pd import _save, _subplots, roi_label

__all__ = ["plot_ladder"]

_METRICS = {
    "subject_auroc": "subject AUROC (pooled over seeds, 95 % CI)",
    "subject_ap": "subject AP (pooled over seeds, 95 % CI)",
    "voxel_ap": "voxel average precision (mean over seeds)",
    "voxel_auroc": "voxel AUROC (mean over seeds)",
    "dice_fpr1": "Dice at the 1 % FPR threshold (mean over seeds)",
    "dice_fpr5": "Dice at the 5 % FPR threshold (mean over seeds)",
    "oracle_dice": "best Dice, oracle threshold (mean over seeds)",
    "test_fpr1": "voxel FPR on test controls at the 1 % threshold",
    "test_fpr5": "voxel FPR on test controls at the 5 % threshold",
}
_TARGET_ROI = {"nuclei": "planted_nuclei", "white_matter": "white_matter"}


def plot_ladder(rows: Sequence[Mapping], metric: str, out, rois: Mapping[str, str] | None = None) -> Path:
    """Panels per location (rows) x texture (columns) of ``metric`` against effect size in the ROI where the change
    was planted (``rois``: location -> ROI), one line per model; pooled rows carry a CI band. Chance (0.5) and
    the calibrated FPR are drawn where they apply."""
    rois = dict(_TARGET_ROI, **(rois or {}))
    pooled = metric.startswith("subject_")
    chosen = [r for r in rows if r["metric"] == metric and (r["seed"] == "pooled") == pooled]
    locations = list(dict.fromkeys(r["location"] for r in chosen))
    textures = list(dict.fromkeys(r["texture"] for r in chosen))
    models = list(dict.fromkeys(r["model"] for r in chosen))
    fig, axes = _subplots(max(1, len(locations)), max(1, len(textures)),
                          figsize=(4.2 * max(1, len(textures)), 3.3 * max(1, len(locations))), squeeze=False)
    colours = {m: f"C{k}" for k, m in enumerate(models)}
    for i, location in enumerate(locations):
        for j, texture in enumerate(textures):
            ax = axes[i][j]
            roi = rois.get(location, "whole_brain")
            for model in models:
                sel = [r for r in chosen if (r["model"], r["location"], r["texture"], r["roi"]) ==
                       (model, location, texture, roi) and r["value"] is not None]
                effects = sorted({r["effect"] for r in sel})
                if not effects:
                    continue
                value = [np.mean([r["value"] for r in sel if r["effect"] == e]) for e in effects]
                x = 100 * np.asarray(effects)
                ax.plot(x, value, "o-", color=colours[model], label=model, lw=1.6, ms=4)
                if pooled:
                    low = [next(r["ci_low"] for r in sel if r["effect"] == e) for e in effects]
                    high = [next(r["ci_high"] for r in sel if r["effect"] == e) for e in effects]
                    ax.fill_between(x, low, high, color=colours[model], alpha=0.12, lw=0)
            if metric.endswith("auroc"):
                ax.axhline(0.5, color="0.5", ls=":", lw=1)
                ax.set_ylim(0.0, 1.02)
            elif metric.startswith("test_fpr"):
                ax.axhline(0.01 if metric.endswith("1") else 0.05, color="0.5", ls=":", lw=1)
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())  # the log axis would label stray minor ticks (6 x 10^0)
            ax.set_xticks(sorted({100 * r["effect"] for r in chosen}))
            ax.set_xticklabels([f"{v:g}" for v in sorted({100 * r["effect"] for r in chosen})])
            ax.set_title(f"{location.replace('_', ' ')}, {texture}: {roi_label(roi)}", fontsize=9)
            ax.set_xlabel("planted effect (% FA decrease / MD increase)", fontsize=8)
            ax.set_ylabel(_METRICS.get(metric, metric), fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.subplots_adjust(hspace=0.45, wspace=0.3)  # panel titles clear of the x labels above them
    return _save(fig, Path(out))
