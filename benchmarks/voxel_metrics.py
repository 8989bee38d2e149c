"""Wall time of the voxel detection metrics against scikit-learn on a pooled float32 map with ties.

The map imitates a few subjects' anomaly maps pooled: ``--voxels`` float32 scores rounded to ``--levels``
steps per unit (ties within and across classes), ``--prevalence`` of them anomalous and shifted up. Prints
each method's seconds, the speed-up, and the largest difference from sklearn (must stay below 1e-9).

    python benchmarks/voxel_metrics.py [--voxels 10000000] [--prevalence 0.02] [--levels 1000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from common.metrics import best_dice, threshold_at_fpr, voxel_auroc_ap


def best_of(repeats: int, fn):
    """(result, fastest seconds) of ``repeats`` calls: the least disturbed by other load on the machine."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voxels", type=int, default=10_000_000)
    parser.add_argument("--prevalence", type=float, default=0.02)
    parser.add_argument("--levels", type=int, default=1000, help="score steps per unit (fewer: more ties)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    labels = rng.random(args.voxels) < args.prevalence
    scores = rng.standard_normal(args.voxels, dtype=np.float32) + 1.5 * labels
    scores = np.round(scores * args.levels) / args.levels
    print(f"{args.voxels:,} float32 voxels, prevalence {labels.mean():.4f}, "
          f"{np.unique(scores).size:,} distinct scores")

    ours, t_ours = best_of(args.repeats, lambda: voxel_auroc_ap(scores, labels))
    (auc, ap), t_sk = best_of(args.repeats, lambda: (roc_auc_score(labels, scores),
                                                   average_precision_score(labels, scores)))
    diff = max(abs(ours["auroc"] - auc), abs(ours["average_precision"] - ap))
    print(f"{'':24s}{'AUROC':>12s}{'AP':>12s}{'seconds':>10s}")
    print(f"{'sklearn':24s}{auc:12.8f}{ap:12.8f}{t_sk:10.2f}")
    print(f"{'voxel_auroc_ap':24s}{ours['auroc']:12.8f}{ours['average_precision']:12.8f}{t_ours:10.2f}")
    print(f"speed-up {t_sk / t_ours:.1f}x, largest difference {diff:.1e}")

    _, t_thr = best_of(args.repeats, lambda: threshold_at_fpr(scores[~labels], 0.01))
    _, t_dice = best_of(args.repeats, lambda: best_dice(scores, labels))
    print(f"threshold_at_fpr (healthy voxels, 1 %) {t_thr:.2f} s, best_dice {t_dice:.2f} s")


if __name__ == "__main__":
    main()
