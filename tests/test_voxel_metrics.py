"""Voxel- and subject-level detection metrics against scikit-learn, brute force, hand-computed values and
their defining properties (tiny random maps with many ties: all fast)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from common.metrics import (
    best_dice,
    bootstrap_auc_ap,
    bootstrap_auc_ci,
    dice_at_threshold,
    false_positive_rate,
    minimum_detectable_effect,
    subject_auroc_ap,
    threshold_at_fpr,
    voxel_auroc_ap,
)


def tied_map(rng, shape, levels, prevalence=0.1, shift=1.0, dtype=np.float32):
    """Scores rounded to ``levels`` steps (many ties within and across classes), anomalous voxels shifted up."""
    labels = rng.random(shape) < prevalence
    scores = np.round((rng.normal(size=shape) + shift * labels) * levels) / levels
    return scores.astype(dtype), labels


# ------------------------------------------------------------------------------------------------ AUROC / AP


@pytest.mark.parametrize("levels, dtype", [(2, np.float32), (10, np.float32), (1000, np.float64)])
def test_voxel_auroc_ap_equals_sklearn_with_ties(levels, dtype):
    rng = np.random.default_rng(levels)
    scores, labels = tied_map(rng, (3, 12, 10, 8), levels, dtype=dtype)  # 3 subjects pooled
    out = voxel_auroc_ap(scores, labels)
    assert out["auroc"] == pytest.approx(roc_auc_score(labels.ravel(), scores.ravel()), abs=1e-12)
    assert out["average_precision"] == pytest.approx(average_precision_score(labels.ravel(), scores.ravel()),
                                                     abs=1e-12)
    assert out["prevalence"] == pytest.approx(labels.mean())
    assert out["n_voxels"] == labels.size
    # A brain mask shared by the subjects restricts the pooled voxels; 0/1 integer labels are accepted.
    brain = rng.random((12, 10, 8)) < 0.6
    masked = voxel_auroc_ap(scores, labels.astype(np.int64), mask=brain)
    sel = np.broadcast_to(brain, scores.shape)
    assert masked["auroc"] == pytest.approx(roc_auc_score(labels[sel], scores[sel]), abs=1e-12)
    assert masked["average_precision"] == pytest.approx(average_precision_score(labels[sel], scores[sel]),
                                                        abs=1e-12)
    assert masked["n_voxels"] == sel.sum()


def test_voxel_auroc_ap_many_small_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(2, 40))
        scores = rng.integers(0, rng.integers(1, 6), n)  # integer scores, heavy ties
        labels = rng.random(n) < rng.uniform(0.1, 0.9)
        if labels.all() or not labels.any():
            continue
        out = voxel_auroc_ap(scores, labels)
        assert out["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert out["average_precision"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_voxel_auroc_ap_hand_computed():
    # Patients score 1 and 3, controls 1 and 2: pairs (1,1) tie 0.5, (1,2) 0, (3,1) 1, (3,2) 1 -> 2.5 / 4.
    # AP: at >= 3 precision 1 for recall 1/2; at >= 1 precision 2/4 for the other half -> 0.75.
    out = voxel_auroc_ap(np.array([[1.0, 1.0], [2.0, 3.0]]), np.array([[1, 0], [0, 1]]))
    assert out == {"auroc": 0.625, "average_precision": 0.75, "prevalence": 0.5, "n_voxels": 4}
    constant = voxel_auroc_ap(np.zeros(10), np.arange(10) < 3)
    assert (constant["auroc"], constant["average_precision"]) == (0.5, pytest.approx(0.3))
    perfect = voxel_auroc_ap(np.arange(10.0), np.arange(10) >= 7)
    assert (perfect["auroc"], perfect["average_precision"]) == (1.0, 1.0)


def test_voxel_auroc_ap_degenerate_and_invalid_inputs():
    scores = np.arange(6, dtype=np.float32)
    with pytest.raises(ValueError, match="no anomalous voxel"):
        voxel_auroc_ap(scores, np.zeros(6, bool))
    with pytest.raises(ValueError, match="no normal voxel"):
        voxel_auroc_ap(scores, np.ones(6, bool))
    lax = voxel_auroc_ap(scores, np.zeros(6, bool), strict=False)
    assert np.isnan(lax["auroc"]) and np.isnan(lax["average_precision"]) and lax["prevalence"] == 0.0
    all_pos = voxel_auroc_ap(scores, np.ones(6, bool), strict=False)
    assert np.isnan(all_pos["auroc"]) and all_pos["average_precision"] == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        voxel_auroc_ap(scores, np.zeros(5, bool))
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        voxel_auroc_ap(np.r_[scores[:-1], np.nan], np.arange(6) < 3)
    with pytest.raises(ValueError, match="0 \\(normal\\) / 1"):
        voxel_auroc_ap(scores, np.r_[0, 1, 2, 0, 1, 0])
    with pytest.raises(ValueError, match="does not broadcast"):
        voxel_auroc_ap(scores, np.arange(6) < 3, mask=np.ones(4, bool))
    with pytest.raises(ValueError, match="mask is empty"):
        voxel_auroc_ap(scores, np.arange(6) < 3, mask=np.zeros(6, bool))


# ------------------------------------------------------------------------------------------------ thresholds / FPR


def test_threshold_at_fpr_hand_computed_and_ties():
    ramp = np.arange(1.0, 101.0)  # 1..100
    assert threshold_at_fpr(ramp, 0.05) == 95.0  # 96..100 exceed: exactly 5 %
    assert threshold_at_fpr(ramp, 0.29) == 71.0  # 0.29 * 100 is 28.999... in floats: still 29 voxels
    assert threshold_at_fpr(ramp, 0.0) == 100.0
    tied = np.r_[np.zeros(90), np.ones(10)]
    assert threshold_at_fpr(tied, 0.05) == 1.0  # 0 would call 10 %: the closest attainable rate is 0
    assert threshold_at_fpr(tied, 0.10) == 0.0
    with pytest.raises(ValueError, match="fpr must be in"):
        threshold_at_fpr(ramp, 1.0)


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.2])
def test_threshold_at_fpr_is_the_smallest_valid_threshold(fpr):
    rng = np.random.default_rng(3)
    subjects = [np.round(rng.normal(size=int(rng.integers(300, 600))), 1).astype(np.float32) for _ in range(4)]
    pooled = np.concatenate(subjects)
    t = threshold_at_fpr(subjects, fpr)
    assert (pooled > t).mean() <= fpr
    lower = pooled[pooled < t]
    assert lower.size and (pooled > lower.max()).mean() > fpr  # the next lower candidate breaks the target
    assert t == threshold_at_fpr(pooled.reshape(1, -1), fpr)  # list or array, any shape: same pooled voxels
    assert false_positive_rate(subjects, t)["fpr"] <= fpr


def test_false_positive_rate_pooled_value_and_bootstrap():
    rng = np.random.default_rng(4)
    subjects = [rng.normal(loc=rng.normal(0, 0.3), size=int(rng.integers(50, 150))) for _ in range(12)]
    out = false_positive_rate(subjects, 1.5, n_bootstrap=2000, seed=1)
    pooled = np.concatenate(subjects)
    assert out["fpr"] == pytest.approx((pooled > 1.5).mean(), rel=1e-12)
    assert (out["n_subjects"], out["n_voxels"]) == (12, pooled.size)
    assert out["ci_low"] <= out["fpr"] <= out["ci_high"]
    assert false_positive_rate(subjects, 1.5, n_bootstrap=2000, seed=1) == out
    assert false_positive_rate(subjects, 1.5, n_bootstrap=2000, seed=2) != out
    # Naive subject bootstrap (loop over resamples): same interval up to Monte Carlo error.
    naive = []
    for _ in range(1000):
        draw = [subjects[i] for i in rng.integers(0, 12, 12)]
        naive.append(np.mean(np.concatenate(draw) > 1.5))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(np.quantile(naive, [0.025, 0.975])), abs=0.01)
    # More subjects of the same population: a narrower interval. An (N, V) array works as the list does.
    many = rng.normal(loc=rng.normal(0, 0.3, size=(120, 1)), size=(120, 100))
    wide = false_positive_rate(many[:12], 1.5, seed=1)
    narrow = false_positive_rate(many, 1.5, seed=1)
    assert narrow["ci_high"] - narrow["ci_low"] < 0.6 * (wide["ci_high"] - wide["ci_low"])
    assert false_positive_rate(list(many[:12]), 1.5, seed=1) == wide


def test_false_positive_rate_compares_float32_scores_exactly():
    # float32(0.1) is a bit above 0.1: it exceeds the threshold 0.1 (no rounding of the threshold to float32).
    out = false_positive_rate(np.full((2, 5), 0.1, np.float32), 0.1, n_bootstrap=10)
    assert out["fpr"] == 1.0
    with pytest.raises(ValueError, match="subjects, voxels"):
        false_positive_rate(np.zeros(5), 0.1)


# ------------------------------------------------------------------------------------------------ Dice


def test_dice_at_threshold_hand_computed_and_against_f1():
    # Called: 0.9 (TP), 0.8 (FP); missed: 0.2 (FN) -> 2 / (2 + 1 + 1).
    assert dice_at_threshold([0.9, 0.8, 0.2, 0.1], [1, 0, 1, 0], 0.5) == 0.5
    assert dice_at_threshold([0.9, 0.8, 0.2, 0.1], [1, 0, 1, 0], 0.8) == pytest.approx(2 / 3)  # > is strict
    rng = np.random.default_rng(5)
    scores, labels = tied_map(rng, (4, 9, 9), 4, prevalence=0.2)
    for t in (-0.5, 0.25, 1.0, 2.0):
        assert dice_at_threshold(scores, labels, t) == pytest.approx(
            f1_score(labels.ravel(), scores.ravel() > t, zero_division=0.0), abs=1e-12)
    with pytest.raises(ValueError, match="Dice is undefined"):
        dice_at_threshold(scores, np.zeros_like(labels), 0.0)
    assert np.isnan(dice_at_threshold(scores, np.zeros_like(labels), 0.0, strict=False))


def test_best_dice_equals_brute_force_over_all_thresholds():
    rng = np.random.default_rng(6)
    for _ in range(30):
        n = int(rng.integers(3, 60))
        scores = (rng.integers(0, 8, n) / 4 + rng.random(n) * (rng.random() < 0.5)).astype(np.float32)
        labels = rng.random(n) < rng.uniform(0.05, 0.8)
        if not labels.any():
            continue
        out = best_dice(scores, labels)
        candidates = np.r_[np.nextafter(scores.min(), np.float32(-np.inf)), np.unique(scores)]
        brute = np.array([dice_at_threshold(scores, labels, float(t)) for t in candidates])
        assert out["dice"] == pytest.approx(brute.max(), abs=1e-12)
        assert out["threshold"] == float(candidates[np.flatnonzero(brute == brute.max())[-1]])
        assert dice_at_threshold(scores, labels, out["threshold"]) == out["dice"]


def test_best_dice_perfect_map_and_call_everything():
    scores = np.arange(20, dtype=np.float32).reshape(4, 5)
    out = best_dice(scores, scores >= 15)
    assert out == {"dice": 1.0, "threshold": 14.0}
    assert dice_at_threshold(scores, scores >= 15, out["threshold"]) == 1.0
    # Every voxel anomalous: only a threshold below the minimum calls them all.
    everything = best_dice(scores, np.ones_like(scores, bool))
    assert everything["dice"] == 1.0 and everything["threshold"] < 0.0
    assert (scores > np.float32(everything["threshold"])).all()  # also in float32 arithmetic


# ------------------------------------------------------------------------------------------------ subject level


def _subjects(rng, n_controls, n_patients, shift=0.8):
    labels = np.r_[np.zeros(n_controls, int), np.ones(n_patients, int)]
    return np.round(rng.normal(size=labels.size) + shift * labels, 1), labels


def test_subject_auroc_ap_against_sklearn_and_resampled_sklearn():
    rng = np.random.default_rng(7)
    scores, labels = _subjects(rng, 15, 25)
    out = subject_auroc_ap(scores, labels, n_bootstrap=500, seed=3)
    assert out["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert out["average_precision"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert (out["n_controls"], out["n_patients"]) == (15, 25)
    assert out["auroc_ci_low"] <= out["auroc"] <= out["auroc_ci_high"]
    assert out["ap_ci_low"] <= out["average_precision"] <= out["ap_ci_high"]
    # Each bootstrap value is sklearn's metric of the resampled subjects (counts expanded into repeats).
    boot = bootstrap_auc_ap(scores, labels, n_bootstrap=500, seed=3)
    counts = boot["weights"].astype(int)
    assert (counts[:, labels == 1].sum(1) == 25).all() and (counts[:, labels == 0].sum(1) == 15).all()
    for b in range(0, 500, 25):
        s, y = np.repeat(scores, counts[b]), np.repeat(labels, counts[b])
        assert boot["auroc"][b] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert boot["average_precision"][b] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert (out["auroc_ci_low"], out["auroc_ci_high"]) == bootstrap_auc_ci(scores, labels, 500, seed=3)
    lo, hi = np.quantile(boot["average_precision"], [0.025, 0.975])
    assert (out["ap_ci_low"], out["ap_ci_high"]) == (lo, hi)


def test_subject_bootstrap_determinism_and_shrinkage():
    rng = np.random.default_rng(8)
    scores, labels = _subjects(rng, 20, 20)
    out = subject_auroc_ap(scores, labels, seed=1)
    assert subject_auroc_ap(scores, labels, seed=1) == out
    assert subject_auroc_ap(scores, labels, seed=2) != out
    big = subject_auroc_ap(*_subjects(rng, 200, 200), seed=1)
    assert big["auroc_ci_high"] - big["auroc_ci_low"] < 0.6 * (out["auroc_ci_high"] - out["auroc_ci_low"])
    assert big["ap_ci_high"] - big["ap_ci_low"] < 0.6 * (out["ap_ci_high"] - out["ap_ci_low"])
    with pytest.raises(ValueError, match="at least 1 patient"):
        subject_auroc_ap(scores[:20], labels[:20])
    with pytest.raises(ValueError, match="confidence"):
        subject_auroc_ap(scores, labels, confidence=0.0)


# ------------------------------------------------------------------------------------------------ MDE


def test_minimum_detectable_effect():
    effects = [30, 5, 20, 10, 15]  # unsorted on purpose
    assert minimum_detectable_effect(effects, [0.9, 0.4, 0.7, 0.45, 0.6]) == 15.0
    # A fluke at 5 % followed by a miss at 10 % does not count; the run above chance starts at 15 %.
    assert minimum_detectable_effect(effects, [0.9, 0.55, 0.7, 0.5, 0.6]) == 15.0
    assert minimum_detectable_effect(effects, [0.9, 0.55, 0.7, 0.51, 0.6]) == 5.0
    # Above chance at 20 % but not at 30 %: nothing qualifies.
    assert minimum_detectable_effect(effects, [0.49, 0.4, 0.7, 0.45, 0.6]) is None
    assert minimum_detectable_effect(effects, [0.9, 0.4, np.nan, 0.6, 0.6]) == 30.0  # NaN is not above chance
    assert minimum_detectable_effect([1, 2], [0.6, 0.7], chance=0.65) == 2.0
    with pytest.raises(ValueError, match="distinct"):
        minimum_detectable_effect([1, 1], [0.6, 0.7])
    with pytest.raises(ValueError, match="equal length"):
        minimum_detectable_effect([1, 2], [0.6])
