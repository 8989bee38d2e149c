"""End to end: pd_ae trained on synthetic controls separates patients from controls in the planted nuclei.

Cohort: 20 controls, 10 patients, planted FA decrease / MD increase of 20 % x U(0.5, 1.5) (``effect_size``
0.2; the demo cohort's 5 % is too subtle for a CPU-sized schedule). Split 0 of the PD protocol (14 train,
1 validation, 5 test controls), 60 epochs (the paper's 160 take hours on a CPU), threshold q = 0.98 of the
training controls' errors. Measured when this test was written (2-core CPU): AUC SN 0.77, putamen 0.79,
GPi 0.87, STN 0.55 (mean 0.75); whole brain 0.36 and white matter 0.40, where the threshold is set by CSF-edge
errors that the planted white-matter changes do not exceed. The floor below is well under the measurement.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.data.synthetic import PDCohortConfig, make_pd_cohort
from common.evaluation.experiment import run_pd_experiment

PLANTED_NUCLEI = ("sn", "putamen", "gpi", "stn")
FLOOR = 0.6


@pytest.mark.slow
def test_pd_ae_separates_patients_in_the_planted_nuclei(tmp_path):
    cohort, _ = make_pd_cohort(tmp_path / "cohort", PDCohortConfig(20, 10, seed=21, effect_size=0.2), progress=False)
    summary = run_pd_experiment("pd_ae", dataset_dir=str(cohort), out=tmp_path / "experiment", splits=1, n_val=1,
                                epochs=60, progress=False, overrides={"n_bootstrap": 500})
    result = json.loads((tmp_path / "experiment" / "split_00" / "eval" / "split_0" / "pd_evaluation.json").read_text())
    auc = {row["roi"]: row["auc"] for row in result["rois"]}
    planted = float(np.mean([auc[r] for r in PLANTED_NUCLEI]))
    print("AUC per ROI:", {k: round(v, 3) for k, v in auc.items()}, f"mean over planted nuclei {planted:.3f}")
    assert planted >= FLOOR, auc
    assert max(auc[r] for r in PLANTED_NUCLEI) >= 0.7, auc
    # the aggregate table of the driver carries the same figures
    rows = {r["roi"]: r for r in summary["rows"]}
    assert rows["putamen"]["auc_mean"] == pytest.approx(auc["putamen"])
    assert (tmp_path / "experiment" / "split_aggregates.csv").is_file()


def test_experiment_resumes_finished_splits(tmp_path, monkeypatch):
    """A split whose evaluation JSON exists is neither retrained nor re-evaluated."""
    from common.evaluation import experiment

    result = {"model": "pd_ae", "split": 0, "rois": [{"roi": "whole_brain", "auc": 0.7, "paper_gmean": 0.6,
                                                      "nested_gmean": 0.5, "n_voxels": 10}]}
    done = tmp_path / "split_00" / "eval" / "split_0" / "pd_evaluation.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps(result))
    calls = []
    monkeypatch.setattr(experiment, "_run_workflow", lambda *args, **kwargs: calls.append(args))
    summary = experiment.run_pd_experiment("pd_ae", dataset_dir="unused", out=tmp_path, splits=1)
    assert calls == [] and summary["rows"][0]["auc_mean"] == pytest.approx(0.7)
