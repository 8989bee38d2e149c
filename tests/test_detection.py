"""Detection metrics of a split (common.evaluation.detection) and the normative baseline as a PD model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from common.evaluation.detection import detection_rows, ground_truth_mask, standardise_bank
from common.evaluation.pd import ErrorBank


def _bank(rng, n_controls=6, n_patients=4, shape=(6, 7, 5)):
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    bank = ErrorBank(mask)
    truth = {}
    lesion = np.zeros(shape, bool)
    lesion[2:4, 2:4, 1:3] = True
    for i in range(n_controls):
        bank.add(f"c{i}", "control", rng.normal(0, 1, shape).astype(np.float32))
    for i in range(n_patients):
        error = rng.normal(0, 1, shape).astype(np.float32) + 2.5 * lesion
        bank.add(f"p{i}", "patient", error)
        truth[f"p{i}"] = lesion.reshape(-1)[bank.voxels]
    return bank, truth, lesion


def test_ground_truth_is_the_core_of_a_graded_change_and_a_mask_itself():
    graded = np.zeros((10, 10, 10), np.float32)
    graded[3:7, 3:7, 3:7] = 0.09
    graded[4:6, 4:6, 4:6] = 0.2
    assert ground_truth_mask(graded).sum() == 8  # >= half of the peak (0.2): the inner cube only
    binary = graded > 0
    np.testing.assert_array_equal(ground_truth_mask(binary.astype(np.float32)), binary)
    assert not ground_truth_mask(np.zeros((3, 3, 3))).any()


def test_detection_rows_match_sklearn_and_the_calibration_definition(rng):
    bank, truth, lesion = _bank(rng)
    calib, test = ["c0", "c1", "c2"], ["c3", "c4", "c5", "p0", "p1", "p2", "p3"]
    roi = {"whole_brain": bank.mask, "lesion_box": lesion}
    pct = rng.uniform(0, 10, (len(test), 2))
    rows = {r["roi"]: r for r in detection_rows(bank, test, calib, roi, percent_abnormal=pct, ground_truth=truth,
                                                n_bootstrap=200)}
    values, rows_t = bank.values, bank.rows(test)
    patients = bank.rows(["p0", "p1", "p2", "p3"])
    controls = bank.rows(["c3", "c4", "c5"])
    scores = np.concatenate([values[patients].ravel(), values[controls].ravel()])
    labels = np.concatenate([np.stack([truth[p] for p in ("p0", "p1", "p2", "p3")]).ravel(),
                             np.zeros(values[controls].size, bool)])
    whole = rows["whole_brain"]
    assert whole["voxel_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert whole["voxel_ap"] == pytest.approx(average_precision_score(labels, scores))
    # the 1 % threshold leaves at most 1 % of the calibration voxels above it
    calib_values = values[bank.rows(calib)].ravel()
    assert np.mean(calib_values > whole["threshold_fpr1"]) <= 0.01
    assert whole["test_fpr1"] == pytest.approx(np.mean(values[controls].ravel() > whole["threshold_fpr1"]))
    predicted = values[patients].ravel() > whole["threshold_fpr5"]
    truth_all = np.stack([truth[p] for p in ("p0", "p1", "p2", "p3")]).ravel()
    dice = 2 * (predicted & truth_all).sum() / (predicted.sum() + truth_all.sum())
    assert whole["dice_fpr5"] == pytest.approx(dice)
    assert whole["oracle_dice"] >= whole["dice_fpr5"] - 1e-12
    labels_subject = np.array([bank.groups[r] == "patient" for r in rows_t])
    assert whole["subject_auroc"] == pytest.approx(roc_auc_score(labels_subject, pct[:, 0]))
    assert rows["lesion_box"]["voxel_prevalence"] > whole["voxel_prevalence"]
    with pytest.raises(ValueError, match="overlap"):
        detection_rows(bank, test, ["c3"], roi)


def test_standardised_bank_is_the_z_score_against_the_reference_controls(rng):
    bank, _, _ = _bank(rng)
    reference = ["c0", "c1", "c2", "c3"]
    z = standardise_bank(bank, reference)
    ref = bank.values[bank.rows(reference)].astype(np.float64)
    mean, sd = ref.mean(0), ref.std(0, ddof=1)
    floor = 0.01 * np.median(sd)
    expected = (bank.values - mean) / np.maximum(sd, floor)
    np.testing.assert_allclose(z.values, expected, rtol=1e-4, atol=1e-4)
    assert z.ids == bank.ids and z.groups == bank.groups
    with pytest.raises(ValueError, match="controls only"):
        standardise_bank(bank, ["c0", "p0"])


@pytest.mark.slow
def test_normative_baseline_runs_as_a_pd_model_and_finds_a_large_change(tmp_path):
    """experiment pd --bundle normative: fitted on the split's train+val controls, thresholds on calibration
    controls, the same files as a bundle; a 40 % putamen change is found in the putamen."""
    from common.app import main
    from common.data.synthetic import PDCohortConfig, make_pd_cohort

    cohort, _ = make_pd_cohort(tmp_path / "cohort", PDCohortConfig(10, 4, seed=5, effect_size=0.4, locations="nuclei",
                                                                   target_nuclei=("putamen",)), progress=False)
    main(["experiment", "pd", "--bundle", "normative", "--dataset_dir", str(cohort), "--out", str(tmp_path / "exp"),
          "--splits", "1", "--n_val", "1", "--n_calib", "2", "--progress", "False"])
    folder = tmp_path / "exp" / "split_00" / "eval" / "split_0"
    result = json.loads((folder / "pd_evaluation.json").read_text())
    assert result["model"] == "normative" and result["scoring"] == "zscore"
    assert len(result["reference_pool"]["ids"]) == 2 and result["reference_pool"]["overlaps_test"] == []
    detection = {r["roi"]: r for r in result["detection"]}
    assert detection["putamen"]["voxel_auroc"] > 0.8, detection["putamen"]
    assert detection["putamen"]["voxel_ap"] > detection["whole_brain"]["voxel_ap"]
    assert (folder / "detection.csv").is_file()
    assert (tmp_path / "exp" / "split_00" / "models" / "normative" / "normative.json").is_file()
