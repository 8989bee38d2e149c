"""The detection benchmark (common.app.benchmark): pooling, minimum detectable effect, outputs."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common.app.benchmark import (
    LadderSettings,
    _minimum_detectable_effects,
    _pooled_subject_rows,
    format_ladder,
    run_detection_benchmark,
)
from common.errors import SettingsError


def test_pooled_rows_put_the_subjects_of_every_seed_into_one_auroc(rng):
    settings = LadderSettings(n_bootstrap=200)
    parts = []
    for _ in range(3):  # three seeds of 4 controls and 6 patients
        labels = np.array([0] * 4 + [1] * 6, bool)
        parts.append((rng.normal(0, 1, 10) + 1.5 * labels, labels))
    rows = _pooled_subject_rows({("m", "nuclei", "smooth", 0.1, "putamen"): parts}, settings)
    auroc = next(r for r in rows if r["metric"] == "subject_auroc")
    values = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    assert auroc["value"] == pytest.approx(roc_auc_score(labels, values))
    assert auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"] and auroc["seed"] == "pooled"


def test_minimum_detectable_effect_per_model_location_texture_and_roi():
    def row(model, effect, low):
        return {"model": model, "location": "nuclei", "texture": "smooth", "roi": "putamen", "effect": effect,
                "metric": "subject_auroc", "seed": "pooled", "value": 0.8, "ci_low": low, "ci_high": 1.0}

    rows = [row("a", 0.05, 0.3), row("a", 0.1, 0.6), row("a", 0.2, 0.7),
            row("b", 0.05, 0.55), row("b", 0.1, 0.45), row("b", 0.2, 0.8)]
    mde = {m["model"]: m["mde"] for m in _minimum_detectable_effects(rows)}
    assert mde == {"a": 0.1, "b": 0.2}  # b's fluke at 5 % does not count: it drops below 0.5 at 10 %
    text = format_ladder(rows, _minimum_detectable_effects(rows),
                         LadderSettings(seeds=(0,), effects=(0.05, 0.1, 0.2), textures=("smooth",),
                                        locations=("nuclei",)))
    assert "| a | nuclei | smooth |" in text and "10 %" in text


@pytest.mark.slow
def test_a_tiny_ladder_of_the_baseline_writes_every_output(tmp_path):
    """One seed, one rung, the baseline alone: detection.csv holds the baseline's voxel AP, calibrated Dice and the
    FPR reached on test controls, with intervals; the figures and the MDE table exist; a rerun reuses the cohort."""
    settings = LadderSettings(seeds=(0,), effects=(0.3,), textures=("smooth",), locations=("nuclei",), n_controls=10,
                              n_patients=3, n_val=1, n_calib=2, models=("normative",), n_bootstrap=100)
    result = run_detection_benchmark(tmp_path, settings, progress=False)
    with open(tmp_path / "detection.csv") as fh:
        rows = list(csv.DictReader(fh))
    metrics = {(r["seed"], r["roi"], r["metric"]) for r in rows if r["model"] == "normative"}
    for metric in ("voxel_ap", "voxel_auroc", "dice_fpr1", "oracle_dice", "test_fpr1", "subject_auroc"):
        assert ("0", "planted_nuclei", metric) in metrics, metric
    assert ("pooled", "planted_nuclei", "subject_auroc") in metrics
    fpr = next(r for r in rows if r["metric"] == "test_fpr1" and r["roi"] == "whole_brain" and r["seed"] == "0")
    assert 0 <= float(fpr["ci_low"]) <= float(fpr["value"]) <= float(fpr["ci_high"]) <= 1
    ap = next(float(r["value"]) for r in rows if r["metric"] == "voxel_ap" and r["roi"] == "planted_nuclei")
    whole = next(float(r["value"]) for r in rows if r["metric"] == "voxel_ap" and r["roi"] == "whole_brain")
    assert ap > whole  # a 30 % nuclear change is found where it was planted
    for name in ("mde.csv", "detection.md", "settings.json", "timings.json", "figures/detection_subject_auroc.png",
                 "figures/detection_voxel_ap.png"):
        assert (tmp_path / name).is_file(), name
    assert "cohort_seed0" in result["timings"]
    first_csv = (tmp_path / "detection.csv").read_bytes()
    again = run_detection_benchmark(tmp_path, settings, progress=False)
    assert again["timings"] == {}  # every model x seed is read back from its per-rung files: nothing recomputed
    assert (tmp_path / "detection.csv").read_bytes() == first_csv
    # A run killed before its last rung was written is evaluated again, and gives the same numbers.
    (tmp_path / "seed_0" / "normative" / "eval" / "zscore" / "nuc-smooth-e300" / "detection.csv").unlink()
    resumed = run_detection_benchmark(tmp_path, settings, progress=False)
    assert "normative_seed0" in resumed["timings"]
    assert (tmp_path / "detection.csv").read_bytes() == first_csv
    # Results made with other ladder settings are never pooled with these: refused before any work.
    with pytest.raises(SettingsError, match="n_patients: 3 there, 4 now"):
        run_detection_benchmark(tmp_path, replace(settings, n_patients=4), progress=False)
    assert (tmp_path / "detection.csv").read_bytes() == first_csv
