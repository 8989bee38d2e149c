"""Voxel- and subject-level anomaly-detection metrics: the common yardstick for every model and baseline.

Conventions: higher score = more abnormal; label 1 (or True) = anomalous voxel / patient; a voxel is called
abnormal when ``score > threshold``. Voxel metrics pool every voxel they are given (all subjects together,
any array shape, optionally restricted by a ``mask``); see ``docs/metrics.md`` for why.

Voxel inputs are large (10-20 million float32 voxels), so nothing here sorts more than once, loops over
voxels or thresholds in Python, or builds voxels x thresholds matrices: ranks come from one ``np.sort`` and
``np.searchsorted`` (a plain sort is several times faster than the ``argsort`` that scikit-learn uses).

Degenerate inputs: by default (``strict=True``) a metric that is undefined for the labels given (AUROC
without positives or without negatives, AP or Dice without positives) raises ValueError; with
``strict=False`` it is NaN instead. AP without negatives is 1 (every call is right), not undefined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.metrics.classification import (
    _check_bootstrap,
    _check_scores_labels,
    bootstrap_auc_ap,
    percentile_interval,
    resample_counts,
)

__all__ = [
    "best_dice",
    "dice_at_threshold",
    "false_positive_rate",
    "minimum_detectable_effect",
    "subject_auroc_ap",
    "threshold_at_fpr",
    "voxel_auroc_ap",
]


# ------------------------------------------------------------------------------------------------ validation


def _scores(scores, name: str = "scores") -> np.ndarray:
    """A finite, non-empty floating array (float32 kept as is: converting 20 M voxels costs time and memory;
    integers and bools become float64, so thresholds between them are representable)."""
    scores = np.asarray(scores)
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {scores.dtype}")
    if scores.dtype.kind != "f" or scores.dtype.itemsize < 4:
        scores = scores.astype(np.float64)
    if scores.size == 0:
        raise ValueError(f"{name} is empty")
    finite = np.isfinite(scores)
    if not finite.all():
        raise ValueError(f"{name} contain {int(finite.size - np.count_nonzero(finite))} NaN/Inf value(s)")
    return scores


def _labels(labels, shape: tuple[int, ...]) -> np.ndarray:
    """Labels as bool, of ``shape``, with values 0/1 only (checked in O(n), no np.unique sort)."""
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"scores and labels differ in shape: {shape} vs {labels.shape}")
    if labels.dtype == bool:
        return labels
    if labels.dtype.kind not in "iuf":
        raise ValueError(f"labels must be boolean or 0/1, got dtype {labels.dtype}")
    ones = labels == 1
    if not (ones | (labels == 0)).all():
        raise ValueError("labels must be 0 (normal) / 1 (anomalous) or boolean, found other values")
    return ones


def _apply_mask(arrays: Sequence[np.ndarray], mask) -> list[np.ndarray]:
    """The voxels of each array inside ``mask`` (broadcast to the arrays' shape, e.g. one brain mask for a
    (subjects, x, y, z) stack), or each array flattened when ``mask`` is None."""
    if mask is None:
        return [a.ravel() for a in arrays]
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    try:
        mask = np.broadcast_to(mask, arrays[0].shape)
    except ValueError:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to the scores' {arrays[0].shape}") from None
    if not mask.any():
        raise ValueError("the mask is empty")
    return [a[mask] for a in arrays]


def _pooled(scores, labels, mask) -> tuple[np.ndarray, np.ndarray]:
    """Flat float scores and bool labels of the voxels in ``mask``, after validating both."""
    scores = _scores(scores)
    labels = _labels(labels, scores.shape)
    return tuple(_apply_mask([scores, labels], mask))


def _undefined(strict: bool, problem: str) -> float:
    if strict:
        raise ValueError(f"{problem} (pass strict=False to get NaN instead)")
    return float("nan")


# ------------------------------------------------------------------------------------------------ voxel metrics


def voxel_auroc_ap(scores, labels, *, mask=None, strict: bool = True) -> dict:
    """Voxel AUROC and average precision of ``scores`` against ``labels``, pooled over all voxels given.

    Equal to sklearn's ``roc_auc_score`` and ``average_precision_score`` (ties included: a tie between an
    anomalous and a normal voxel counts half in the AUROC; AP steps once per distinct score). From one sort
    of the normal voxels, the rank of each anomalous voxel among them (``searchsorted`` left and right: below
    and tied) gives the Mann-Whitney AUROC in exact integer arithmetic, and, with the anomalous voxels'
    own ranks, the precision at each anomalous voxel's score for the AP.

    Returns ``auroc``, ``average_precision``, ``prevalence`` (fraction of anomalous voxels) and ``n_voxels``.
    """
    scores, labels = _pooled(scores, labels, mask)
    n = scores.size
    pos = np.sort(scores[labels])
    n_pos = pos.size
    n_neg = n - n_pos
    out = {"prevalence": n_pos / n, "n_voxels": int(n)}
    if n_pos == 0:
        out["auroc"] = _undefined(strict, f"no anomalous voxel among the {n} given: AUROC and AP are undefined")
        out["average_precision"] = float("nan")
        return out
    neg = np.sort(scores[~labels])
    below = np.searchsorted(neg, pos, side="left")   # normal voxels strictly below each anomalous voxel
    not_above = np.searchsorted(neg, pos, side="right")  # ... below or tied
    if n_neg == 0:
        out["auroc"] = _undefined(strict, f"no normal voxel among the {n} given: AUROC is undefined")
    else:
        # 2 * Mann-Whitney U = sum(2 * below + tied) = sum(below + not_above), an exact integer.
        twice_u = int(below.sum(dtype=np.int64)) + int(not_above.sum(dtype=np.int64))
        out["auroc"] = twice_u / (2.0 * n_pos * n_neg)
    # Precision when the threshold admits everything >= s (s = an anomalous voxel's score): anomalous voxels
    # >= s over all voxels >= s. Summed over the anomalous voxels = sum over distinct s of (recall step) x P.
    pos_at_or_above = n_pos - np.searchsorted(pos, pos, side="left")
    neg_at_or_above = n_neg - below
    precision = pos_at_or_above / (pos_at_or_above + neg_at_or_above)
    out["average_precision"] = float(precision.sum() / n_pos)
    out["auroc"] = float(out["auroc"])
    return out


def threshold_at_fpr(healthy_scores, fpr: float, *, mask=None) -> float:
    """The smallest voxel threshold t, among the healthy scores, whose false-positive rate on them (fraction
    of the pooled healthy voxels with ``score > t``) is at most ``fpr``.

    ``healthy_scores``: any array (all voxels pooled) or a list of per-subject arrays. With n voxels, at
    most k = floor(fpr * n) may exceed t: t is the (n - k)-th smallest score (an O(n) ``np.partition``).
    With ties at t fewer than k voxels exceed it, which is as close as these data allow: any lower t also
    calls every voxel tied at t. ``fpr`` must be in [0, 1) (0 gives the maximum: nothing exceeds it).
    """
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    if isinstance(healthy_scores, (list, tuple)):
        parts = [_apply_mask([_scores(s, f"healthy_scores[{i}]")], mask)[0] for i, s in enumerate(healthy_scores)]
        if not parts:
            raise ValueError("healthy_scores is an empty list")
        if len({p.dtype for p in parts}) > 1:
            parts = [p.astype(np.float64) for p in parts]
        pooled = np.concatenate(parts)
    else:
        pooled = _apply_mask([_scores(healthy_scores, "healthy_scores")], mask)[0]
    n = pooled.size
    # The relative nudge keeps exact products (0.29 * 100 = 28.999999999999996 in floats) from losing a voxel.
    k = min(int(np.floor(fpr * n * (1.0 + 1e-12))), n - 1)
    return float(np.partition(pooled, n - 1 - k)[n - 1 - k])


def _subject_rows(healthy_scores_by_subject, mask) -> list[np.ndarray]:
    if isinstance(healthy_scores_by_subject, np.ndarray):
        if healthy_scores_by_subject.ndim < 2:
            raise ValueError("an array of healthy scores must be (subjects, voxels...), got shape "
                             f"{healthy_scores_by_subject.shape}; pass a list for one subject")
        rows = list(healthy_scores_by_subject)
    else:
        rows = list(healthy_scores_by_subject)
    if not rows:
        raise ValueError("no healthy subject given")
    return [_apply_mask([_scores(r, f"healthy subject {i}'s scores")], mask)[0] for i, r in enumerate(rows)]


def false_positive_rate(healthy_scores_by_subject, threshold: float, n_bootstrap: int = 2000, seed: int = 0,
                        confidence: float = 0.95, *, mask=None) -> dict:
    """Pooled voxel false-positive rate of ``threshold`` on healthy subjects, with a subject bootstrap CI.

    ``fpr`` is the fraction of all the subjects' voxels with ``score > threshold``. The interval is the
    percentile bootstrap over **subjects** (voxels of one subject are not independent, so resampling voxels
    would be far too narrow): per-subject exceedance and voxel counts, then one (B, N) matrix of resample
    counts gives every resample's pooled rate as a ratio of two matrix-vector products.
    ``healthy_scores_by_subject``: an (N, V...) array or a list of N arrays (sizes may differ).
    """
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    _check_bootstrap(n_bootstrap, confidence)
    rows = _subject_rows(healthy_scores_by_subject, mask)
    threshold = np.float64(threshold)  # a float64 scalar compares float32 scores exactly, not rounded to float32
    exceed = np.array([np.count_nonzero(r > threshold) for r in rows], dtype=np.float64)
    voxels = np.array([r.size for r in rows], dtype=np.float64)
    weights = resample_counts(np.random.default_rng(seed), len(rows), n_bootstrap)
    low, high = percentile_interval((weights @ exceed) / (weights @ voxels), confidence)
    return {"fpr": float(exceed.sum() / voxels.sum()), "ci_low": low, "ci_high": high,
            "n_subjects": len(rows), "n_voxels": int(voxels.sum())}


def dice_at_threshold(scores, labels, threshold: float, *, mask=None, strict: bool = True) -> float:
    """Pooled Dice of the call ``score > threshold`` against ``labels``: 2 TP / (2 TP + FP + FN) over all
    voxels given (one ratio over all subjects, so small lesions weigh by their size, as in the field's
    pooled Dice). Undefined without anomalous voxels (see the module's ``strict``)."""
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    scores, labels = _pooled(scores, labels, mask)
    n_pos = int(np.count_nonzero(labels))
    if n_pos == 0:
        return _undefined(strict, f"no anomalous voxel among the {scores.size} given: Dice is undefined")
    called = scores > np.float64(threshold)  # exact comparison, as in false_positive_rate
    tp = int(np.count_nonzero(called & labels))
    return 2.0 * tp / (n_pos + int(np.count_nonzero(called)))


def best_dice(scores, labels, *, mask=None, strict: bool = True) -> dict:
    """The best pooled Dice over all thresholds, and the (highest) threshold that reaches it.

    ORACLE: the threshold is chosen by looking at the labels, so this is an upper bound on what the scores
    can reach, not a score achievable on new data (calibrate with :func:`threshold_at_fpr` for that).

    Every distinct score u is a candidate (calls ``score > u``), plus the float just below the minimum (calls
    every voxel). One sort gives the distinct scores and how many voxels exceed each, the sorted anomalous
    voxels how many of those are anomalous; Dice = 2 TP / (P + called) at all candidates at once. Ties in
    Dice go to the highest threshold (the smallest call). The threshold is exact in the scores' dtype.
    """
    scores, labels = _pooled(scores, labels, mask)
    pos = np.sort(scores[labels])
    n_pos = pos.size
    if n_pos == 0:
        _undefined(strict, f"no anomalous voxel among the {scores.size} given: Dice is undefined")
        return {"dice": float("nan"), "threshold": float("nan")}
    ordered = np.sort(scores)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    distinct = ordered[starts]
    n = ordered.size
    # Voxels (all / anomalous) strictly above each distinct score.
    called = n - np.r_[starts[1:], n]
    tp = n_pos - np.searchsorted(pos, distinct, side="right")
    below_min = np.nextafter(distinct[0], distinct.dtype.type(-np.inf))
    thresholds = np.r_[below_min, distinct]
    called = np.r_[n, called]
    tp = np.r_[n_pos, tp]
    # Float division is correctly rounded, so equal ratios give equal floats, and different ratios with
    # denominators below 2^26 (n < 33 M voxels) differ by 1 / (b d) > 1 ulp: the float comparison is exact.
    dice = 2.0 * tp / (n_pos + called)
    best = int(np.flatnonzero(dice == dice.max())[-1])  # the highest threshold among the equally good
    return {"dice": float(dice[best]), "threshold": float(thresholds[best])}


# ------------------------------------------------------------------------------------------------ subject level


def subject_auroc_ap(scores, labels, n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Subject-level AUROC and average precision (as sklearn's, ties included) with stratified percentile
    bootstrap intervals: controls and patients are resampled separately, all resamples at once
    (:func:`common.metrics.classification.bootstrap_auc_ap`). ``scores``: one per subject (e.g. a map's
    mean or top-percentile score); ``labels``: 1 = patient."""
    _check_bootstrap(n_bootstrap, confidence)
    scores, labels = _check_scores_labels(scores, labels)
    point = voxel_auroc_ap(scores, labels)
    boot = bootstrap_auc_ap(scores, labels, n_bootstrap, seed)
    auc_low, auc_high = percentile_interval(boot["auroc"], confidence)
    ap_low, ap_high = percentile_interval(boot["average_precision"], confidence)
    return {"auroc": point["auroc"], "auroc_ci_low": auc_low, "auroc_ci_high": auc_high,
            "average_precision": point["average_precision"], "ap_ci_low": ap_low, "ap_ci_high": ap_high,
            "n_controls": int((~labels).sum()), "n_patients": int(labels.sum())}


def minimum_detectable_effect(effects, ci_low, chance: float = 0.5) -> float | None:
    """The smallest tested effect from which on the subject AUROC's lower CI bound stays above ``chance``.

    An effect qualifies when its own ``ci_low > chance`` and so does every larger tested effect's: a lucky
    small effect followed by a miss does not count. None when the largest effect does not qualify. Effects
    may come in any order but must be finite and distinct; a NaN ``ci_low`` (interval not computable)
    counts as not above chance.
    """
    effects = np.asarray(effects, dtype=np.float64)
    ci_low = np.asarray(ci_low, dtype=np.float64)
    if effects.ndim != 1 or effects.shape != ci_low.shape:
        raise ValueError(f"effects and ci_low must be 1-D of equal length, got shapes {effects.shape} and "
                         f"{ci_low.shape}")
    if effects.size == 0:
        raise ValueError("no effect given")
    if not np.isfinite(effects).all():
        raise ValueError("effects contain NaN/Inf")
    order = np.argsort(effects, kind="stable")
    effects, ci_low = effects[order], ci_low[order]
    if (np.diff(effects) == 0).any():
        duplicates = sorted(set(effects[1:][np.diff(effects) == 0].tolist()))
        raise ValueError(f"effects must be distinct, got duplicates of {duplicates}")
    above = ci_low > chance  # NaN compares False
    holds = np.logical_and.accumulate(above[::-1])[::-1]  # above here and at every larger effect
    return float(effects[np.argmax(holds)]) if holds[-1] else None
