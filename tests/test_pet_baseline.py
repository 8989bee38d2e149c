"""The PET evaluation's detection benchmark: the normative baseline, calibrated voxel thresholds, subject-level
detection, both t-tests and the paper's numbers side by side, against independent numpy / scipy / sklearn
computations on the small grid of test_pet_evaluation.py.

The stand-in model ``0.9 * x`` makes the VAE's anomaly map ``|x - 0.9 x| = 0.1 x`` known in closed form.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import write_nifti
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score
from test_pet_evaluation import (  # noqa: F401 - fixtures (setup, small_grid) are requested by name
    DEGREES,
    SMALL,
    evaluate,
    normalised,
    numpy_gaussian,
    read_csv,
    setup,
    small_grid,
)

from common.evaluation import paper_values

FPRS = (0.01, 0.05)


def scaled(x):
    return 0.9 * x


@pytest.fixture
def cohort(setup, tmp_path):  # noqa: F811 - the imported fixture, requested by name
    """``setup`` with the masks renamed after the paper's dementias (so its numbers apply), plus 4 training
    and 3 calibration controls drawn like the test controls."""
    brain = setup["brain"]
    rng = np.random.default_rng(11)

    def subject(name: str) -> dict:
        pattern = numpy_gaussian(rng.standard_normal(SMALL.shape), 1.5)
        image = np.where(brain, 1.4 + 2.0 * pattern, 0.05).clip(0.0, None).astype(np.float32)
        path = write_nifti(tmp_path / "extra" / f"{name}.nii.gz", image, SMALL.affine)
        return {"id": name, "image": str(path), "volume": image}

    setup["masks"] = {"ad": setup["masks"]["left"], "pca": setup["masks"]["front"]}
    setup["train"] = [subject(f"t{k}") for k in range(4)]
    setup["calibration"] = [subject(f"v{k}") for k in range(3)]
    return setup


def run(cohort, **kwargs):
    options = {"sweep_mask": "ad", "dementias": ("ad", "pca"), "masks": cohort["masks"],
               "train_subjects": cohort["train"], "calibration_subjects": cohort["calibration"], "fprs": FPRS,
               "n_bootstrap": 200}
    options.update(kwargs)
    return evaluate(cohort, scaled, **options)


@pytest.mark.slow  # quick lane: the t-test comparison on the same cohort
def test_baseline_thresholds_dice_and_subject_detection_match_independent_computations(cohort):
    result = run(cohort, figures=True)
    out, brain = cohort["out"], cohort["brain"]
    mask = cohort["masks"]["ad"]
    n, n_cond = len(cohort["controls"]), len(DEGREES) + 1  # the sweep in 'ad' and 'pca' at 30 %
    rows = read_csv(out / "voxel_detection.csv")
    assert sorted({r["model"] for r in rows}) == ["ad_vae3d", "normative"]
    assert len(rows) == 2 * n * n_cond
    assert (out / "figures" / "voxel_detection.png").is_file()

    # the baseline: -z of the input against the training controls' normalised images (mean, sd ddof 1)
    train = np.stack([normalised(s["volume"]) for s in cohort["train"]])
    centre, sd = train.mean(axis=0), train.std(axis=0, ddof=1)
    subject = cohort["controls"][1]
    g = numpy_gaussian(mask.astype(float), 2.5)
    x50 = normalised(subject["volume"], subject["volume"] * (1 - 0.5 * g))
    with np.errstate(divide="ignore", invalid="ignore"):  # constant background: only brain voxels are used
        z = -(x50 - centre) / sd
    row = next(r for r in rows if r["model"] == "normative" and r["id"] == subject["id"] and r["mask"] == "ad"
               and float(r["degree"]) == 50)
    assert float(row["auroc"]) == pytest.approx(roc_auc_score(mask[brain], z[brain]), abs=1e-5)
    assert float(row["average_precision"]) == pytest.approx(average_precision_score(mask[brain], z[brain]), abs=1e-4)

    # calibrated thresholds of the model 0.9 x: anomaly 0.1 x on the calibration controls' brain voxels, pooled
    pooled = np.concatenate([0.1 * normalised(s["volume"])[brain] for s in cohort["calibration"]])
    thresholds = {(r["model"], float(r["target_fpr"])): r for r in read_csv(out / "voxel_thresholds.csv")}
    assert set(thresholds) == {(m, f) for m in ("ad_vae3d", "normative") for f in FPRS}
    healthy = np.stack([0.1 * normalised(s["volume"])[brain] for s in cohort["controls"]])
    for f in FPRS:
        r = thresholds[("ad_vae3d", f)]
        k = int(np.floor(f * pooled.size))
        assert float(r["threshold"]) == pytest.approx(np.sort(pooled)[pooled.size - 1 - k], rel=1e-5)
        assert float(r["calibration_fpr"]) <= f and r["calibration_pool"] == "validation controls"
        thr = float(r["threshold"])
        assert float(r["test_fpr"]) == pytest.approx(np.mean(healthy > thr), abs=1e-6)
        assert float(r["test_fpr_ci_low"]) <= float(r["test_fpr"]) <= float(r["test_fpr_ci_high"])
        # Dice of 0.1 x' > threshold against the mask on the 50 % simulation
        called = 0.1 * x50[brain] > thr
        dice = 2 * np.sum(called & mask[brain]) / (called.sum() + mask[brain].sum())
        vae = next(v for v in rows if v["model"] == "ad_vae3d" and v["id"] == subject["id"] and v["mask"] == "ad"
                   and float(v["degree"]) == 50)
        assert float(vae[f"dice_fpr_{f:g}"]) == pytest.approx(dice, abs=1e-6)
        assert float(vae["dice_oracle"]) >= float(vae[f"dice_fpr_{f:g}"]) - 1e-12

    # subject level: mean anomaly in the AD mask, CN vs AD as sklearn computes it
    scores = {(r["id"], r["model"], r["mask"], float(r["degree"])): float(r["score"])
              for r in read_csv(out / "subject_scores.csv")}
    everyone = cohort["controls"] + cohort["patients"]
    expected = [0.1 * normalised(s["volume"])[mask].mean() for s in everyone]
    got = [scores[(s["id"], "ad_vae3d", "", 0.0)] for s in everyone]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    labels = [0] * len(cohort["controls"]) + [1] * len(cohort["patients"])
    detection = {(r["model"], r["comparison"]): r for r in read_csv(out / "subject_detection.csv")}
    cn_ad = detection[("ad_vae3d", "CN vs AD")]
    assert float(cn_ad["auroc"]) == pytest.approx(roc_auc_score(labels, got))
    assert float(cn_ad["average_precision"]) == pytest.approx(average_precision_score(labels, got))
    assert float(cn_ad["auroc_ci_low"]) <= float(cn_ad["auroc"]) <= float(cn_ad["auroc_ci_high"])
    # the simulation lowers uptake in the mask: each simulated image's normative score exceeds its healthy one's
    ids_ = [s["id"] for s in cohort["controls"]]
    for i in ids_:
        series = [scores[(i, "normative", "ad" if d else "", float(d))] for d in DEGREES]
        assert np.all(np.diff(series) > 0), series
    assert float(detection[("normative", "ad 70 % vs healthy")]["auroc"]) == 1.0
    assert len(ids_) == float(detection[("normative", "ad 70 % vs healthy")]["n_positive"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["calibration"]["pool"] == "validation controls"
    assert summary["settings"]["baseline"]["n_train"] == 4
    assert summary["settings"]["models"] == ["ad_vae3d", "normative"]
    assert result["voxel_thresholds"] and result["subject_detection"]


def test_both_t_tests_and_the_papers_numbers_side_by_side(cohort, capsys):
    result = run(cohort, train_subjects=(), calibration_subjects=(), verbose=True)
    out = cohort["out"]
    by = {(r["id"], r["degree"]): r["mse"] for r in result["rows"]["sweep"]}
    ids = [s["id"] for s in cohort["controls"]]
    healthy = [by[(i, 0.0)] for i in ids]
    for row in result["sweep"]["degrees"][1:]:
        values = [by[(i, row["degree"])] for i in ids]
        for test, p in (("paired", stats.ttest_rel(values, healthy).pvalue),
                        ("welch", stats.ttest_ind(values, healthy, equal_var=False).pvalue)):
            assert row[f"p_{test}"] == pytest.approx(p, rel=1e-9)
            assert row[f"p_bonferroni_{test}"] == pytest.approx(min(1.0, 4 * p), rel=1e-9)
        assert row["p"] == row["p_paired"]  # the default test's columns are unchanged
    assert {"p_bonferroni_paired", "significant_welch"} <= set(read_csv(out / "sweep_stats.csv")[0])
    assert set(result["sweep"]["first_significant_degree_by_test"]) == {"paired", "welch"}

    # Table 1 (dementias at 30 %) and Table 2 with a source column; the values typed from the paper
    table1 = {(r["dementia"], r["source"]): r for r in read_csv(out / "dementia_table.csv")}
    assert float(table1[("ad", "paper (real ADNI)")]["mse_image_mean"]) == 0.00356
    assert float(table1[("pca", "paper (real ADNI)")]["ssim_image_mean"]) == 0.749
    run_ad = result["dementias"][0]
    assert float(table1[("ad", "this run")]["mse_image_mean"]) == pytest.approx(run_ad["mse_image_mean"], rel=1e-5)
    table2 = {(r["group"], r["source"]): r for r in read_csv(out / "cn_vs_ad_table.csv")}
    assert float(table2[("patient", "paper (real ADNI)")]["psnr_mean"]) == 24.5
    assert float(table2[("control", "paper (real ADNI)")]["mse_mean"]) == 0.00292
    assert float(table2[("control", "this run")]["n"]) == len(ids)
    comparison = read_csv(out / "paper_comparison.csv")
    paper_first = [r for r in comparison if r["quantity"].startswith("first significant") and r["source"] != "this run"]
    assert [float(r["value"]) for r in paper_first] == [25.0]
    ssim = {r["source"]: float(r["value"]) for r in comparison if r["quantity"] == "SSIM between reconstructions"}
    assert ssim["paper (real ADNI)"] == 0.993
    assert ssim["this run"] == pytest.approx(result["dementias"][0]["ssim_reconstructions_image_mean"], rel=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["paper"]["label"] == "paper (real ADNI)"
    assert all(isinstance(d, str) and d for d in summary["paper"]["protocol_differences"])
    assert all(entry["source"] for entry in summary["paper"]["values"]["dementias"]["ad"].values())
    printed = capsys.readouterr().out
    assert "[paper (real ADNI)]" in printed and "paired" in printed and "welch" in printed
    # without a baseline or calibration: one model, no thresholds file
    assert {r["model"] for r in read_csv(out / "voxel_detection.csv")} == {"ad_vae3d"}
    assert not (out / "voxel_thresholds.csv").exists()


def test_paper_values_are_the_papers_tables():
    assert paper_values.paper_value("dementias", "svppa", "psnr") == 25.5
    assert paper_values.paper_value("cn_vs_ad", "patient", "ssim") == 0.709
    assert [r["dementia"] for r in paper_values.paper_dementia_rows(["pca", "left", "ad"])] == ["pca", "ad"]
    assert {r["source"] for r in paper_values.paper_group_rows()} == {paper_values.PAPER_SOURCE}


@pytest.mark.parametrize("change, message", [
    ({"train_subjects": "test"}, "both in test_subjects and train_subjects"),
    ({"calibration_subjects": "train"}, "both in calibration_subjects and train_subjects"),
    ({"fprs": (0.0, 0.05)}, "fprs must be"),
    ({"n_bootstrap": 0}, "n_bootstrap"),
    ({"model_name": "normative"}, "baseline's name"),
])
def test_bad_baseline_arguments_fail_before_any_work(cohort, change, message):
    change = {k: (cohort["controls"][:1] if v == "test" else cohort["train"][:1] if v == "train" else v)
              for k, v in change.items()}
    with pytest.raises(ValueError, match=message):
        run(cohort, **change)
    assert not cohort["out"].exists()
