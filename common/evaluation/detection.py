"""Detection metrics of one model on one split, from its bank of per-voxel anomaly scores (docs/evaluation.md).

The PD evaluation (:mod:`common.evaluation.pd`) asks the paper's question: does the % of abnormal voxels of an
ROI separate patients from controls? This module adds the questions the field asks of any anomaly detector,
with thresholds set on *healthy calibration controls* that neither training nor testing used:

- voxel level, pooled over the test subjects of an ROI: AUROC and average precision against the ground-truth
  change maps, Dice at voxel thresholds calibrated to a fixed false-positive rate (1 %, 5 %) on the
  calibration controls, the false-positive rate those thresholds actually reach on the test controls (with a
  bootstrap interval over subjects), and the best Dice any threshold could give (an oracle: it looks at the
  answers);
- subject level: AUROC and AP of the ROI's % abnormal voxels, with bootstrap intervals.

Standardising a model's scores against healthy controls' scores (:func:`standardise_bank`) is also here: it
turns a reconstruction-error map into an error z-map, so that voxels where every reconstruction is poor
(edges, small nuclei) stop dominating the counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from common.evaluation.pd import ErrorBank

__all__ = [
    "DEFAULT_FPRS",
    "DETECTION_FIELDS",
    "GROUND_TRUTH_FRACTION",
    "detection_rows",
    "ground_truth_mask",
    "load_ground_truth",
    "standardise_bank",
]

#: Voxel false-positive rates at which thresholds are calibrated on healthy controls.
DEFAULT_FPRS = (0.01, 0.05)
#: A voxel is truly abnormal where its change is at least this fraction of the subject's typical peak change.
GROUND_TRUTH_FRACTION = 0.5


def _pct(fpr: float) -> str:
    return f"{100 * fpr:g}".replace(".", "p")


def detection_fields(fprs: Sequence[float] = DEFAULT_FPRS) -> tuple[str, ...]:
    """Columns of a detection row, in CSV order."""
    per_fpr = []
    for f in fprs:
        p = _pct(f)
        per_fpr += [f"threshold_fpr{p}", f"dice_fpr{p}", f"test_fpr{p}", f"test_fpr{p}_ci_low", f"test_fpr{p}_ci_high"]
    return ("roi", "n_voxels", "n_test_controls", "n_test_patients", "n_patients_with_truth", "voxel_prevalence",
            "voxel_auroc", "voxel_ap", *per_fpr, "oracle_dice", "oracle_threshold",
            "subject_auroc", "subject_auroc_ci_low", "subject_auroc_ci_high",
            "subject_ap", "subject_ap_ci_low", "subject_ap_ci_high")


DETECTION_FIELDS = detection_fields()


# ----------------------------------------------------------------------------------------- ground truth


def ground_truth_mask(anomaly: np.ndarray, fraction: float = GROUND_TRUTH_FRACTION) -> np.ndarray:
    """Binary truth from a graded change map: voxels whose change reaches ``fraction`` of the 99th percentile of
    the subject's positive changes (a robust peak; a binary mask maps to itself). All False without a change."""
    anomaly = np.asarray(anomaly, dtype=np.float32)
    positive = anomaly[anomaly > 0]
    if positive.size == 0:
        return np.zeros(anomaly.shape, bool)
    return anomaly >= fraction * float(np.percentile(positive, 99))


def load_ground_truth(subjects: Iterable[Mapping], bank: ErrorBank, grid: str, key: str = "anomaly",
                      fraction: float = GROUND_TRUTH_FRACTION) -> dict[str, np.ndarray]:
    """``{id: bool (V,)}``: the truth at the bank's voxels for every subject that names a ``key`` map
    (dataset.json's ``anomaly``), read and checked on ``grid`` like any input. The threshold is taken over the
    whole map, so the truth does not depend on which slab is analysed."""
    from common.nifti import load_checked

    truth = {}
    for s in subjects:
        path = s.get(key)
        if not path:
            continue
        data, _ = load_checked(path, grid, "anomaly")
        truth[str(s["id"])] = ground_truth_mask(data, fraction).reshape(-1)[bank.voxels]
    return truth


# ------------------------------------------------------------------------------------ standardisation


def standardise_bank(bank: ErrorBank, reference_ids: Sequence[str], robust: bool = False,
                     save_to: str | Path | None = None, affine: np.ndarray | None = None) -> ErrorBank:
    """Every subject's scores as z against the reference controls' scores at the same voxel (upper tail: a
    large error is abnormal); the reference controls' own rows are in-sample, so thresholds should come from
    other controls. Returns a new bank with the same subjects and voxels.

    With ``save_to``, the fitted model (centre and scale of the errors over the bank's voxels: the brain of the
    analysed slab) is saved there with ``affine``, so inference can write error z-maps (``--zmap true``)."""
    from common.normative import NormativeModel

    rows = bank.rows(reference_ids)
    patients = [i for i, r in zip(reference_ids, rows) if bank.groups[r] != "control"]
    if patients:
        raise ValueError(f"the standardisation pool must hold controls only; it holds patient(s) {patients[:5]}")
    values = bank.values
    grid = {} if affine is None else {"affine": np.asarray(affine, float),
                                      "spacing": tuple(np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0))}
    model = NormativeModel(bank.mask, robust=robust, tail="upper", channel_names=["error"], **grid)
    model.fit_values(values[rows][:, None, :])
    if save_to is not None:
        model.save(save_to, affine=affine)
    return bank.with_values(model.score_values(values[:, None, :]))


# ------------------------------------------------------------------------------------------- metrics


def detection_rows(bank: ErrorBank, test_ids: Sequence[str], calibration_ids: Sequence[str],
                   roi_masks: Mapping[str, np.ndarray], percent_abnormal: np.ndarray | None = None,
                   ground_truth: Mapping[str, np.ndarray] | None = None, fprs: Sequence[float] = DEFAULT_FPRS,
                   n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95) -> list[dict]:
    """One row per ROI (:func:`detection_fields`): voxel AUROC/AP, calibrated Dice and achieved FPR, the oracle
    Dice, and subject AUROC/AP of ``percent_abnormal`` ((N_test, R) in ``roi_masks`` order, optional).

    Voxel thresholds are quantiles of the calibration controls' scores over the whole analysed brain, so each
    FPR names one threshold per model; an ROI's Dice and test FPR are measured with it inside the ROI. Voxel
    metrics need truth for the test patients (``ground_truth``); patients without it are left out of them.
    """
    from common.metrics.voxel import (
        best_dice,
        dice_at_threshold,
        false_positive_rate,
        subject_auroc_ap,
        threshold_at_fpr,
        voxel_auroc_ap,
    )

    test_ids = [str(i) for i in test_ids]
    test_rows = bank.rows(test_ids)
    is_patient = np.array([bank.groups[r] == "patient" for r in test_rows])
    calib_rows = bank.rows(calibration_ids)
    if any(bank.groups[r] != "control" for r in calib_rows):
        raise ValueError("calibration subjects must be controls")
    overlap = set(map(str, calibration_ids)) & set(test_ids)
    if overlap:
        raise ValueError(f"calibration and test subjects overlap ({sorted(overlap)[:5]}): thresholds would be tuned "
                         "on the test set")
    values = bank.values
    thresholds = {f: threshold_at_fpr(values[calib_rows], f) for f in fprs}
    truth = ground_truth or {}
    control_rows = test_rows[~is_patient]
    truth_ids = [i for i, p in zip(test_ids, is_patient) if p and i in truth]
    truth_rows = bank.rows(truth_ids)
    names = list(roi_masks)
    out = []
    for j, name in enumerate(names):
        cols = bank.columns(roi_masks[name])
        row: dict = {"roi": name, "n_voxels": int(cols.size), "n_test_controls": int(control_rows.size),
                     "n_test_patients": int(is_patient.sum()), "n_patients_with_truth": len(truth_ids)}
        controls = values[np.ix_(control_rows, cols)]
        for f in fprs:
            p = _pct(f)
            fp = false_positive_rate(controls, thresholds[f], n_bootstrap=n_bootstrap, seed=seed,
                                     confidence=confidence)
            row.update({f"threshold_fpr{p}": thresholds[f], f"test_fpr{p}": fp["fpr"],
                        f"test_fpr{p}_ci_low": fp["ci_low"], f"test_fpr{p}_ci_high": fp["ci_high"]})
        labels_p = np.stack([truth[i][cols] for i in truth_ids]) if truth_ids else None
        if labels_p is not None and labels_p.any():
            patients = values[np.ix_(truth_rows, cols)]
            scores = np.concatenate([patients.reshape(-1), controls.reshape(-1)])
            labels = np.concatenate([labels_p.reshape(-1), np.zeros(controls.size, bool)])
            voxel = voxel_auroc_ap(scores, labels)
            oracle = best_dice(patients.reshape(-1), labels_p.reshape(-1))
            row.update({"voxel_prevalence": voxel["prevalence"], "voxel_auroc": voxel["auroc"],
                        "voxel_ap": voxel["average_precision"], "oracle_dice": oracle["dice"],
                        "oracle_threshold": oracle["threshold"]})
            for f in fprs:
                row[f"dice_fpr{_pct(f)}"] = dice_at_threshold(patients.reshape(-1), labels_p.reshape(-1),
                                                              thresholds[f])
        if percent_abnormal is not None:
            subject = subject_auroc_ap(np.asarray(percent_abnormal)[:, j], is_patient, n_bootstrap=n_bootstrap,
                                       seed=seed, confidence=confidence)
            row.update({"subject_auroc": subject["auroc"], "subject_auroc_ci_low": subject["auroc_ci_low"],
                        "subject_auroc_ci_high": subject["auroc_ci_high"], "subject_ap": subject["average_precision"],
                        "subject_ap_ci_low": subject["ap_ci_low"], "subject_ap_ci_high": subject["ap_ci_high"]})
        out.append({k: row.get(k) for k in detection_fields(fprs)})
    return out
