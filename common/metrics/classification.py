"""Subject-level classification metrics for anomaly scores: ROC, AUC with a bootstrap interval, g-mean.

Convention everywhere: patients are label 1, and a subject is called a patient when ``score >= threshold``
(higher scores are more abnormal, as the % of abnormal voxels of the PD evaluation).

The PD paper picks the g-mean-optimal threshold on the test set itself, which flatters small test sets
(15 controls); :func:`loo_gmean` is the out-of-sample ("nested") counterpart, and :func:`bootstrap_auc_ci`
says how much the AUC of such small sets can be trusted. All are vectorised: no per-threshold or
per-resample Python loops.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["bootstrap_auc_ap", "bootstrap_auc_ci", "gmean_operating_point", "loo_gmean", "percentile_interval",
           "resample_counts", "roc_summary"]


def _check_scores_labels(scores, labels, min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Scores as finite float64 (N,), labels as bool (N,) with at least ``min_per_class`` of each class."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got shapes {scores.shape} and {labels.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores contain {int((~np.isfinite(scores)).sum())} NaN/Inf value(s)")
    if labels.dtype != bool:
        values = set(np.unique(labels).tolist())
        if not values <= {0, 1}:
            raise ValueError(f"labels must be 0 (control) / 1 (patient) or boolean, got values {sorted(values)}")
        labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos < min_per_class or n_neg < min_per_class:
        raise ValueError(f"need at least {min_per_class} patient(s) and {min_per_class} control(s), "
                         f"got {n_pos} patient(s) and {n_neg} control(s)")
    return scores, labels


def _counts_by_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in decreasing order and, for each as threshold, the true-positive and true-negative
    counts (integers, so g-mean ties are compared exactly)."""
    thresholds, inverse = np.unique(scores, return_inverse=True)  # increasing
    pos = np.bincount(inverse, weights=labels, minlength=thresholds.size).astype(np.int64)
    neg = np.bincount(inverse, minlength=thresholds.size) - pos
    thresholds, pos, neg = thresholds[::-1], pos[::-1], neg[::-1]
    tp = np.cumsum(pos)                      # patients with score >= t
    tn = int(neg.sum()) - np.cumsum(neg)     # controls with score < t
    return thresholds, tp, tn


def gmean_operating_point(scores, labels) -> dict:
    """The threshold maximising g-mean = sqrt(sensitivity * specificity) on these subjects.

    Candidates are the distinct scores (every attainable split; "nobody is a patient" scores g-mean 0 and
    is never better). Ties in g-mean are broken towards the **highest** threshold, i.e. the most specific
    of the equally good points, deterministically (products of integer counts are compared, not floats).
    """
    scores, labels = _check_scores_labels(scores, labels)
    thresholds, tp, tn = _counts_by_threshold(scores, labels)
    best = int(np.argmax(tp * tn))  # first maximum = highest threshold
    sens, spec = tp[best] / labels.sum(), tn[best] / (~labels).sum()
    return {"threshold": float(thresholds[best]), "sensitivity": float(sens), "specificity": float(spec),
            "gmean": float(np.sqrt(sens * spec))}


def loo_gmean(scores, labels) -> dict:
    """Out-of-sample ("nested") g-mean: each subject is classified with the threshold that is g-mean optimal
    (as :func:`gmean_operating_point`, same tie rule) on all the *other* subjects.

    Sensitivity and specificity are those of these held-out calls; ``thresholds`` holds each subject's
    threshold. Vectorised over subjects x candidate thresholds (O(N^2), fine for N of a few hundred).
    Needs two subjects of each class, so that one of each remains when one is left out.
    """
    scores, labels = _check_scores_labels(scores, labels, min_per_class=2)
    thresholds, tp, tn = _counts_by_threshold(scores, labels)
    # Counts without subject i (rows) at each candidate (columns): remove i's own contribution.
    at_or_above = scores[:, None] >= thresholds[None, :]
    tp_i = tp[None, :] - (labels[:, None] & at_or_above)
    tn_i = tn[None, :] - (~labels[:, None] & ~at_or_above)
    product = tp_i * tn_i
    # A candidate equal to subject i's score exists among the others only if that score is not unique.
    _, inverse, multiplicity = np.unique(scores, return_inverse=True, return_counts=True)
    own = scores[:, None] == thresholds[None, :]
    product[own & (multiplicity[inverse] == 1)[:, None]] = -1
    chosen = thresholds[np.argmax(product, axis=1)]  # first maximum = highest threshold
    called = scores >= chosen
    sens, spec = float(called[labels].mean()), float((~called[~labels]).mean())
    return {"sensitivity": sens, "specificity": spec, "gmean": float(np.sqrt(sens * spec)), "thresholds": chosen}


def _auc_kernel(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mann-Whitney kernel (P, C): 1 where a patient scores above a control, 0.5 on ties, 0 below."""
    pat, con = scores[labels][:, None], scores[~labels][None, :]
    return (pat > con) + 0.5 * (pat == con)


def _check_bootstrap(n_bootstrap: int, confidence: float) -> None:
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def resample_counts(rng: np.random.Generator, n: int, n_bootstrap: int) -> np.ndarray:
    """(B, n) float64 bootstrap resamples of n units, each row how often each unit is drawn (sums to n).

    Every bootstrap of this package is one of these count matrices: a weighted statistic over its rows is
    the statistic of the resampled data, without building the resampled data."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap).astype(np.float64)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Equal-tailed percentile interval of bootstrap ``values`` (numpy's default linear quantiles)."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _weighted_average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's step-wise definition, exact on ties) of each row of ``weights`` (B, N):
    ``sum_k (TP_k - TP_{k-1}) / TP_total * TP_k / (TP_k + FP_k)`` over the distinct scores k in decreasing
    order, with TP/FP the weights of patients/controls scoring >= k. A row of integer counts gives the AP
    of the resample that draws each subject that often. NaN for a row without patient weight."""
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])  # last subject of each distinct score
    w = weights[:, order]
    pat = labels[order]
    tp = np.cumsum(w * pat, axis=1)[:, last]
    fp = np.cumsum(w * ~pat, axis=1)[:, last]
    gain = np.diff(tp, axis=1, prepend=0.0)
    called = tp + fp
    precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)  # gain is 0 where called is
    total = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (gain * precision).sum(axis=1) / total, np.nan)


def bootstrap_auc_ap(scores, labels, n_bootstrap: int = 2000, seed: int = 0) -> dict:
    """AUC and average precision of every stratified bootstrap resample (arrays of length ``n_bootstrap``).

    Controls and patients are resampled separately (each resample keeps the class sizes, so every resample
    has an AUC). A resample is represented by how often it draws each subject (multinomial counts), so its
    AUC is the count-weighted Mann-Whitney statistic ``w_p @ K @ w_c / (P * C)`` and its AP the count-weighted
    :func:`_weighted_average_precision`: all resamples at once, exact on ties like sklearn's
    ``roc_auc_score`` / ``average_precision_score`` of the resampled subjects. ``weights`` (B, N) holds the
    counts in the subjects' order, for checks.
    """
    scores, labels = _check_scores_labels(scores, labels)
    _check_bootstrap(n_bootstrap, 0.5)
    kernel = _auc_kernel(scores, labels)
    n_pat, n_con = kernel.shape
    rng = np.random.default_rng(seed)
    w_pat = resample_counts(rng, n_pat, n_bootstrap)
    w_con = resample_counts(rng, n_con, n_bootstrap)
    aucs = np.einsum("bc,bc->b", w_pat @ kernel, w_con) / (n_pat * n_con)
    weights = np.empty((n_bootstrap, labels.size))
    weights[:, labels], weights[:, ~labels] = w_pat, w_con
    return {"auroc": aucs, "average_precision": _weighted_average_precision(scores, labels, weights),
            "weights": weights}


def bootstrap_auc_ci(scores, labels, n_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0
                     ) -> tuple[float, float]:
    """Percentile confidence interval of the AUC over stratified bootstrap resamples
    (:func:`bootstrap_auc_ap`, whose AP side costs little next to the AUC kernel)."""
    _check_bootstrap(n_bootstrap, confidence)
    return percentile_interval(bootstrap_auc_ap(scores, labels, n_bootstrap, seed)["auroc"], confidence)


def roc_summary(scores, labels, n_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """ROC curve, AUC with its bootstrap interval, and the g-mean operating points of one score.

    ``paper``: threshold chosen on these subjects themselves (as the PD paper; optimistic on small sets).
    ``nested``: leave-one-out thresholds (:func:`loo_gmean`); None when a class has fewer than 2 subjects.
    ``thresholds[0]`` of the curve is +inf (nobody called a patient), as in sklearn.
    """
    scores, labels = _check_scores_labels(scores, labels)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    nested = None
    if min(labels.sum(), (~labels).sum()) >= 2:
        nested = loo_gmean(scores, labels)
        nested = {k: nested[k] for k in ("sensitivity", "specificity", "gmean")}
    return {
        "fpr": fpr, "tpr": tpr, "thresholds": thresholds,
        "auc": float(roc_auc_score(labels, scores)),
        "auc_ci": bootstrap_auc_ci(scores, labels, n_bootstrap, confidence, seed),
        "confidence": confidence,
        "paper": gmean_operating_point(scores, labels),
        "nested": nested,
        "n_controls": int((~labels).sum()), "n_patients": int(labels.sum()),
    }
