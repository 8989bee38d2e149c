"""PD anomaly evaluation: classification metrics, error bank, threshold, % abnormal, the pipeline, the handler.

Every result is checked against an independent reference: sklearn for ROC/AUC, ``np.quantile`` on pools
gathered here, brute-force Python loops for % abnormal, g-mean search and leave-one-out. A small synthetic
grid with box-shaped ROIs stands in for the atlas; one test uses the real 1.5 mm atlas.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from sklearn.metrics import roc_auc_score, roc_curve

from common.data.slab import analysed_slab
from common.evaluation import (
    ErrorBank,
    aggregate_splits,
    brain_slab_mask,
    control_threshold,
    evaluate_rois,
    percent_abnormal,
    run_pd_evaluation,
    write_split_aggregates,
)
from common.handlers import PDAnomalyEvaluationHandler
from common.metrics import (
    bootstrap_auc_ci,
    gmean_operating_point,
    loo_gmean,
    roc_summary,
)

PNG = b"\x89PNG\r\n\x1a\n"
SHAPE = (18, 20, 16)
N_SLICES = 8


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def space():
    """A small brain (ellipsoid), its slab, and ROI masks: two boxes, a 4-voxel nucleus, one outside the slab."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    brain = ((x - 8.5) / 8) ** 2 + ((y - 9.5) / 9) ** 2 + ((z - 7.5) / 7) ** 2 <= 1
    slab = analysed_slab(brain, N_SLICES)
    rois = {
        "roi_a": brain & (x < 8) & (y < 10),
        "roi_b": brain & (x >= 8) & (y >= 10),
        "nucleus": np.zeros(SHAPE, bool),
        "outside": brain & (z < slab.start),
    }
    rois["nucleus"][9:11, 4:6, slab.start + 3] = True
    return {"brain": brain, "slab": slab, "mask": brain_slab_mask(brain, slab), "rois": rois}


def cohort(rng, n_ref=20, n_test_controls=12, n_patients=15, boost=1.6, roi=None):
    """Gamma-distributed error maps; patients' errors multiplied by ``boost`` inside ``roi``."""
    maps, groups = {}, {}
    for k in range(n_ref + n_test_controls + n_patients):
        sid = f"r{k:02d}" if k < n_ref else (f"c{k:02d}" if k < n_ref + n_test_controls else f"p{k:02d}")
        error = rng.gamma(2.0, 0.05, size=SHAPE).astype(np.float32)
        if sid.startswith("p") and roi is not None:
            error[roi] *= boost
        maps[sid], groups[sid] = error, ("patient" if sid.startswith("p") else "control")
    ref = [s for s in maps if s.startswith("r")]
    test = [s for s in maps if not s.startswith("r")]
    return maps, groups, ref, test


# ------------------------------------------------------------------------ brute-force references


def brute_gmean(scores, labels):
    """Pure-Python search over thresholds, highest threshold kept among equal g-means."""
    n_pos, n_neg = sum(labels), len(labels) - sum(labels)
    best = None
    for t in sorted(set(scores), reverse=True):
        tp = sum(1 for s, y in zip(scores, labels) if y and s >= t)
        tn = sum(1 for s, y in zip(scores, labels) if not y and s < t)
        g = math.sqrt(tp / n_pos * tn / n_neg)
        if best is None or g > best[0] + 1e-12:
            best = (g, t, tp / n_pos, tn / n_neg)
    return {"gmean": best[0], "threshold": best[1], "sensitivity": best[2], "specificity": best[3]}


def brute_loo(scores, labels):
    calls, thresholds = [], []
    for i in range(len(scores)):
        others = [k for k in range(len(scores)) if k != i]
        thresholds.append(brute_gmean([scores[k] for k in others], [labels[k] for k in others])["threshold"])
        calls.append(scores[i] >= thresholds[-1])
    sens = np.mean([c for c, y in zip(calls, labels) if y])
    spec = np.mean([not c for c, y in zip(calls, labels) if not y])
    return {"sensitivity": sens, "specificity": spec, "gmean": math.sqrt(sens * spec), "thresholds": thresholds}


def score_sets():
    rng = np.random.default_rng(3)
    for n in (7, 25, 60):
        labels = (np.arange(n) % 3 == 0).astype(int)
        yield rng.normal(size=n) + labels, labels  # continuous, no ties
        yield rng.integers(0, 5, size=n).astype(float) + labels, labels  # many ties


# -------------------------------------------------------------------------- classification metrics


@pytest.mark.parametrize("scores, labels", list(score_sets()))
def test_gmean_point_and_loo_match_brute_force(scores, labels):
    got = gmean_operating_point(scores, labels)
    ref = brute_gmean(scores.tolist(), labels.tolist())
    assert got == pytest.approx(ref, abs=1e-12)
    loo = loo_gmean(scores, labels)
    ref = brute_loo(scores.tolist(), labels.tolist())
    np.testing.assert_array_equal(loo.pop("thresholds"), ref.pop("thresholds"))
    assert loo == pytest.approx(ref, abs=1e-12)
    assert loo["gmean"] <= got["gmean"] + 1e-12  # out of sample cannot beat the in-sample optimum


def test_gmean_ties_choose_highest_threshold():
    # Thresholds 3 and 2 both give g-mean sqrt(1/2 * 1); 3 is the more specific one and is chosen.
    scores, labels = np.array([1.0, 2.0, 3.0, 3.0]), np.array([0, 0, 1, 1])
    assert gmean_operating_point(scores, labels)["threshold"] == 3.0
    scores, labels = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 1, 0, 1])
    assert gmean_operating_point(scores, labels) == brute_gmean(scores.tolist(), labels.tolist())
    # Inverted scores: every g-mean is 0; each left-out subject's threshold is still one of the others' scores.
    scores, labels = np.array([5.0, 4.0, 1.0, 0.0]), np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(loo_gmean(scores, labels)["thresholds"], [4.0, 5.0, 5.0, 5.0])
    assert loo_gmean(scores, labels)["gmean"] == 0.0


def test_roc_summary_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(15, int), np.ones(40, int)]
    scores = np.round(rng.normal(size=55) + 0.8 * labels, 1)  # rounded: ties across classes
    summary = roc_summary(scores, labels, n_bootstrap=500)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(summary["fpr"], fpr)
    np.testing.assert_allclose(summary["tpr"], tpr)
    np.testing.assert_array_equal(summary["thresholds"], thr)
    assert summary["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert summary["paper"] == gmean_operating_point(scores, labels)
    assert summary["nested"]["gmean"] == pytest.approx(loo_gmean(scores, labels)["gmean"])
    assert (summary["n_controls"], summary["n_patients"]) == (15, 40)


@pytest.mark.slow  # thousands of resamples
def test_bootstrap_ci_properties_and_naive_reference():
    rng = np.random.default_rng(1)

    def draw(n):
        labels = np.r_[np.zeros(n, int), np.ones(n, int)]
        return rng.normal(size=2 * n) + 0.7 * labels, labels

    scores, labels = draw(20)
    auc = roc_auc_score(labels, scores)
    low, high = bootstrap_auc_ci(scores, labels, n_bootstrap=2000, seed=5)
    assert low <= auc <= high
    assert bootstrap_auc_ci(scores, labels, n_bootstrap=2000, seed=5) == (low, high)
    assert bootstrap_auc_ci(scores, labels, n_bootstrap=2000, seed=6) != (low, high)
    # Naive stratified bootstrap with sklearn: same interval up to Monte Carlo error.
    con, pat = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    naive = []
    for _ in range(1000):
        idx = np.r_[rng.choice(con, con.size), rng.choice(pat, pat.size)]
        naive.append(roc_auc_score(labels[idx], scores[idx]))
    assert (low, high) == pytest.approx(tuple(np.quantile(naive, [0.025, 0.975])), abs=0.04)
    big_scores, big_labels = draw(200)
    big_low, big_high = bootstrap_auc_ci(big_scores, big_labels, seed=5)
    assert big_high - big_low < 0.6 * (high - low)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_auc_ci(scores, labels, confidence=1.0)


def test_classification_input_errors():
    with pytest.raises(ValueError, match="equal length"):
        gmean_operating_point([1, 2, 3], [0, 1])
    with pytest.raises(ValueError, match="at least 1 patient"):
        gmean_operating_point([1, 2, 3], [0, 0, 0])
    with pytest.raises(ValueError, match="at least 2"):
        loo_gmean([1, 2, 3], [0, 0, 1])
    with pytest.raises(ValueError, match="labels must be"):
        gmean_operating_point([1, 2, 3], [0, 2, 1])
    with pytest.raises(ValueError, match="NaN"):
        gmean_operating_point([1, np.nan, 3], [0, 1, 1])
    assert roc_summary([1, 2, 3], [0, 1, 1], n_bootstrap=10)["nested"] is None  # one control: no LOO


# -------------------------------------------------------------------- bank, threshold, % abnormal


def test_error_bank_keeps_brain_slab_voxels(space, rng):
    mask = space["mask"]
    expected = np.zeros(SHAPE, bool)
    expected[..., space["slab"]] = space["brain"][..., space["slab"]]
    np.testing.assert_array_equal(mask, expected)
    bank = ErrorBank(mask, capacity=1)  # forces the buffer to grow
    maps = [rng.random(SHAPE, dtype=np.float32) for _ in range(5)]
    for k, m in enumerate(maps):
        bank.add(f"s{k}", "control" if k % 2 else "patient", torch.from_numpy(m)[None] if k == 3 else m)
    assert bank.values.shape == (5, mask.sum())
    for k, m in enumerate(maps):
        np.testing.assert_array_equal(bank.values[k], m[mask])
    np.testing.assert_array_equal(bank.labels, [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(bank.rows(["s4", "s1"]), [4, 1])
    with pytest.raises(ValueError, match=r"shape \(18, 20\), expected \(18, 20, 16\)"):
        bank.add("x", "control", maps[0][..., 0])
    with pytest.raises(ValueError, match="already added"):
        bank.add("s0", "control", maps[0])
    with pytest.raises(ValueError, match="group must be"):
        bank.add("y", "healthy", maps[0])
    bad = maps[0].copy()
    bad[mask] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        bank.add("z", "control", bad)
    with pytest.raises(KeyError, match="not in the error bank: nobody"):
        bank.rows(["nobody"])


def test_control_threshold_against_pooled_quantile(space, rng):
    maps, groups, ref, _ = cohort(rng)
    bank = ErrorBank.from_maps(space["mask"], maps, groups)
    before = bank.values.copy()
    pool = np.concatenate([maps[s][space["mask"]] for s in ref])
    assert control_threshold(bank, ref) == pytest.approx(float(np.quantile(pool, 0.98)), rel=1e-6)
    np.testing.assert_array_equal(bank.values, before)  # the in-place quantile worked on a copy
    assert control_threshold(bank, ref[:3], q=0.5) == pytest.approx(
        float(np.quantile(np.concatenate([maps[s][space["mask"]] for s in ref[:3]]), 0.5)), rel=1e-6)
    rois = {k: v for k, v in space["rois"].items() if k != "outside"}
    taus = control_threshold(bank, ref, q=0.9, per_roi=True, roi_masks=rois)
    for name, roi in rois.items():
        pooled = np.concatenate([maps[s][roi & space["mask"]] for s in ref])
        assert taus[name] == pytest.approx(float(np.quantile(pooled, 0.9)), rel=1e-6)
    with pytest.raises(ValueError, match=r"controls only; it contains 1 patient\(s\): p40"):
        control_threshold(bank, [*ref, "p40"])
    with pytest.raises(ValueError, match="reference pool is empty"):
        control_threshold(bank, [])
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="open interval"):
            control_threshold(bank, ref, q=q)
    with pytest.raises(KeyError, match=r"reference pool: .*ghost.*collected too"):
        control_threshold(bank, ["ghost"])
    with pytest.raises(ValueError, match="'outside' has no voxel"):
        control_threshold(bank, ref, per_roi=True, roi_masks=space["rois"])


def test_percent_abnormal_against_brute_force(space, rng):
    maps, groups, *_ = cohort(rng, n_ref=4, n_test_controls=3, n_patients=3)
    bank = ErrorBank.from_maps(space["mask"], maps, groups)
    rois = {"whole_brain": space["brain"], **{k: v for k, v in space["rois"].items() if k != "outside"}}
    per_roi_tau = {name: 0.1 + 0.05 * k for k, name in enumerate(rois)}
    for tau in (0.2, per_roi_tau):
        table = percent_abnormal(bank, rois, tau, chunk=4)
        for i, sid in enumerate(bank.ids):
            for j, (name, roi) in enumerate(rois.items()):
                region = roi & space["brain"] & space["mask"]
                t = tau[name] if isinstance(tau, dict) else tau
                values = maps[sid][region].astype(np.float64)
                expected = 100.0 * np.count_nonzero(values > t) / np.count_nonzero(region)
                assert table[i, j] == pytest.approx(expected, abs=1e-9)
    # e == tau is not abnormal; e just above a tau that float32 cannot represent is (a float32 comparison
    # against tau rounded to float32 would miss it).
    edge = ErrorBank(space["mask"])
    v = np.float32(0.1)
    edge.add("v", "control", np.full(SHAPE, v))
    edge.add("below", "control", np.full(SHAPE, np.nextafter(v, np.float32(0))))
    edge.add("quarter", "control", np.full(SHAPE, np.float32(0.25)))
    for tau in (float(v) - 1e-12, dict.fromkeys(rois, float(v) - 1e-12)):
        np.testing.assert_array_equal(percent_abnormal(edge, rois, tau)[:, 0], [100.0, 0.0, 100.0])
    for tau in (0.25, dict.fromkeys(rois, 0.25)):
        np.testing.assert_array_equal(percent_abnormal(edge, rois, tau)[:, 0], [0.0, 0.0, 0.0])
    sub = percent_abnormal(bank, rois, 0.2, ids=[bank.ids[2], bank.ids[0]])
    np.testing.assert_array_equal(sub, percent_abnormal(bank, rois, 0.2)[[2, 0]])
    with pytest.raises(ValueError, match="without any voxel in the brain slab: outside"):
        percent_abnormal(bank, space["rois"], 0.2)
    with pytest.raises(ValueError, match="does not match the grid"):
        percent_abnormal(bank, {"bad": np.ones((3, 3, 3), bool)}, 0.2)
    with pytest.raises(KeyError, match="lacks ROI"):
        percent_abnormal(bank, rois, {"roi_a": 0.2})
    with pytest.raises(ValueError, match="finite"):
        percent_abnormal(bank, rois, float("nan"))


def test_evaluate_rois_rows_and_shape_errors():
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(10, int), np.ones(12, int)]
    table = rng.random((22, 2)) * 5 + np.c_[labels * 2, np.zeros(22)]
    rows = evaluate_rois(table, labels, ["a", "b"], [100, 7], n_bootstrap=200, seed=1)
    assert [r["roi"] for r in rows] == ["a", "b"] and rows[1]["n_voxels"] == 7
    for j, row in enumerate(rows):
        assert row["auc"] == pytest.approx(roc_auc_score(labels, table[:, j]))
        assert row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"]
        assert row["paper_gmean"] == pytest.approx(brute_gmean(table[:, j].tolist(), labels.tolist())["gmean"])
        assert row["mean_abnormal_patients"] == pytest.approx(table[labels == 1, j].mean())
    with pytest.raises(ValueError, match="must match"):
        evaluate_rois(table[:, :1], labels, ["a", "b"], [1, 2])
    with pytest.raises(ValueError, match="must match"):
        evaluate_rois(table, labels[:-1], ["a", "b"], [1, 2])


# -------------------------------------------------------------------------------------- pipeline


def test_run_pd_evaluation_end_to_end(space, rng, tmp_path, capsys):
    maps, groups, ref, test = cohort(rng, roi=space["rois"]["roi_a"])
    showcase = {"image": rng.random((2, *SHAPE)), "reconstruction": rng.random((2, *SHAPE)),
                "error": maps["p40"], "id": "p40"}
    res = run_pd_evaluation(maps, groups, test, ref, atlas=None, out_dir=tmp_path / "out", n_slices=N_SLICES,
                            n_bootstrap=300, brain=space["brain"], roi_masks=space["rois"], showcase=showcase,
                            model_name="pd_test", split=3)
    rows = {r["roi"]: r for r in res["rois"]}
    assert list(rows) == ["whole_brain", "roi_a", "roi_b", "nucleus"] and res["skipped_rois"] == ["outside"]
    assert rows["roi_a"]["auc"] > 0.95 and rows["roi_a"]["paper_gmean"] > 0.9
    assert 0.2 < rows["roi_b"]["auc"] < 0.8
    assert rows["nucleus"]["n_voxels"] == 4
    pool = np.concatenate([maps[s][space["mask"]] for s in ref])
    assert res["threshold"] == pytest.approx(float(np.quantile(pool, 0.98)), rel=1e-6)
    assert res["test"] == {"ids": test, "n_controls": 12, "n_patients": 15}
    assert res["metrics"]["roi_a_auc"] == rows["roi_a"]["auc"]

    out = tmp_path / "out"
    doc = json.loads((out / "pd_evaluation.json").read_text())
    assert doc["reference_pool"]["ids"] == ref and doc["q"] == 0.98 and doc["split"] == 3
    assert doc["rois"][1]["roc"]["thresholds"][0] is None  # +inf stored as null
    assert len(doc["subjects"]) == len(test)
    csv_rows = (out / "roi_results.csv").read_text().splitlines()
    assert len(csv_rows) == 5 and csv_rows[0].startswith("model,roi,group")
    table = (out / "percent_abnormal.csv").read_text().splitlines()
    assert table[0] == "id,group,whole_brain,roi_a,roi_b,nucleus" and len(table) == 1 + len(test)
    for name in ("roc_curves", "gmean_bars", "percent_abnormal_heatmap", "reconstruction_showcase"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == PNG
    assert not list(out.rglob("*.tmp*"))
    printed = capsys.readouterr().out
    assert "roi_a" in printed and "g-mean paper" in printed

    # Per-ROI tau, the test controls as pool (flagged), and a given tau.
    res2 = run_pd_evaluation(maps, groups, test, "test_controls", atlas=None, out_dir=tmp_path / "o2",
                             n_slices=N_SLICES, n_bootstrap=50, brain=space["brain"], roi_masks=space["rois"],
                             per_roi_threshold=True, figures=False, verbose=False)
    assert res2["threshold_mode"] == "per_roi" and len(res2["reference_pool"]["overlaps_test"]) == 12
    res3 = run_pd_evaluation(maps, groups, test, None, atlas=None, out_dir=tmp_path / "o3", n_slices=N_SLICES,
                             n_bootstrap=50, brain=space["brain"], roi_masks=space["rois"], threshold=res["threshold"],
                             figures=False, verbose=False)
    assert res3["rois"][1]["auc"] == rows["roi_a"]["auc"] and res3["threshold_source"] == "given"

    with pytest.raises(ValueError, match="controls only"):
        run_pd_evaluation(maps, groups, test, [*ref, "p40"], atlas=None, out_dir=tmp_path / "bad",
                          n_slices=N_SLICES, brain=space["brain"], roi_masks=space["rois"])
    with pytest.raises(ValueError, match="needs controls and patients"):
        run_pd_evaluation(maps, groups, ref[5:], ref[:5], atlas=None, out_dir=tmp_path / "bad",
                          n_slices=N_SLICES, brain=space["brain"], roi_masks=space["rois"])
    assert not (tmp_path / "bad").exists()


def test_aggregate_splits_and_model_comparison(tmp_path):
    def result(model, split, aucs, gmeans):
        return {"model": model, "split": split, "rois": [
            {"roi": roi, "group": grp, "approximate": False, "n_voxels": 10, "auc": a, "paper_gmean": g,
             "nested_gmean": g - 0.1, "paper_sensitivity": 0.5, "paper_specificity": 0.5,
             "nested_sensitivity": None, "nested_specificity": None}
            for roi, grp, a, g in zip(("whole_brain", "sn"), ("whole_brain", "nuclei"), aucs, gmeans)]}

    results = [result("pd_ae", s, (0.6 + 0.1 * s, 0.5), (0.6 + 0.05 * s, 0.7 - 0.1 * s)) for s in range(3)]
    results.append(result("pd_sae", 0, (0.7, 0.6), (0.65, 0.55)))
    rows = {(r["model"], r["roi"]): r for r in aggregate_splits(results)}
    wb = rows["pd_ae", "whole_brain"]
    assert wb["n_splits"] == 3
    assert wb["auc_mean"] == pytest.approx(np.mean([0.6, 0.7, 0.8]))
    assert wb["auc_sd"] == pytest.approx(np.std([0.6, 0.7, 0.8], ddof=1))
    assert wb["best_split"] == 2 and wb["best_paper_gmean"] == pytest.approx(0.7)
    assert rows["pd_ae", "sn"]["best_split"] == 0
    assert rows["pd_ae", "sn"]["nested_sensitivity_mean"] is None
    assert rows["pd_sae", "sn"]["auc_sd"] is None  # one split: no sd
    files = write_split_aggregates(list(rows.values()), tmp_path)
    assert Path(files["figure"]).read_bytes()[:8] == PNG
    assert json.loads(Path(files["json"]).read_text())["rows"][0]["model"] == "pd_ae"


@pytest.mark.slow
def test_run_pd_evaluation_on_the_real_atlas(tmp_path):
    from common.atlases import load_atlas

    atlas = load_atlas("spm1p5")
    rng = np.random.default_rng(0)
    putamen = atlas.region_mask("putamen")
    maps, groups = {}, {}
    for k in range(18):
        group = "patient" if k >= 12 else "control"
        error = rng.standard_gamma(2.0, size=atlas.grid.shape, dtype=np.float32)
        if group == "patient":
            error[putamen] *= 1.5
        maps[f"s{k}"], groups[f"s{k}"] = error, group
    ref = [f"s{k}" for k in range(6)]
    res = run_pd_evaluation(maps, groups, None, ref, atlas, tmp_path, n_bootstrap=100, figures=False, verbose=False)
    rows = {r["roi"]: r for r in res["rois"]}
    assert len(rows) == 17 and rows["stn"]["approximate"] and rows["white_matter"]["group"] == "macro"
    slab = analysed_slab(atlas.brain, 40)
    assert rows["putamen"]["n_voxels"] == int((putamen & atlas.brain)[..., slab].sum())
    assert rows["whole_brain"]["n_voxels"] == int(atlas.brain[..., slab].sum()) == res["n_brain_slab_voxels"]
    assert rows["putamen"]["auc"] == 1.0
    assert res["test"]["n_controls"] == 6 and res["test"]["n_patients"] == 6


# --------------------------------------------------------------------------------------- handler


def test_handler_collects_outputs_and_reports_metrics(space, rng, tmp_path):
    maps, groups, ref, test = cohort(rng, n_ref=6, n_test_controls=5, n_patients=5, roi=space["rois"]["roi_a"])
    ids = list(maps)
    images = {s: rng.random((2, *SHAPE), dtype=np.float32) for s in ids}

    def item(k, sid):
        if k % 3 == 0:  # error map given, id and group as keys
            return {"id": sid, "group": groups[sid], "error": torch.from_numpy(maps[sid])[None]}
        image = MetaTensor(torch.from_numpy(images[sid]), meta={"subject_id": sid})
        # pred such that sqrt(sum_c (image - pred)^2) == the subject's error map
        pred = image - torch.from_numpy(maps[sid])[None] / math.sqrt(2)
        return {"image": image, "pred": pred, **({"group": groups[sid]} if k % 3 == 1 else {})}

    batches = [[item(k + j, ids[k + j]) for j in range(min(4, len(ids) - k))] for k in range(0, len(ids), 4)]
    batches.append([{"id": "stranger", "group": "control", "error": torch.zeros(SHAPE)}])  # not in any set: skipped
    engine = Engine(lambda eng, batch: batch)
    handler = PDAnomalyEvaluationHandler(atlas_grid=None, reference_ids=ref, test_ids=test, out_dir=tmp_path,
                                         n_slices=N_SLICES, groups=groups, n_bootstrap=100, brain=space["brain"],
                                         roi_masks=space["rois"], verbose=False)
    handler.attach(engine)
    engine.run(batches, max_epochs=1)

    direct = run_pd_evaluation(maps, groups, test, ref, atlas=None, out_dir=tmp_path / "direct", n_slices=N_SLICES,
                               n_bootstrap=100, brain=space["brain"], roi_masks=space["rois"], figures=False,
                               verbose=False)
    metrics = engine.state.metrics
    assert metrics["whole_brain_auc"] == pytest.approx(direct["metrics"]["whole_brain_auc"])
    assert metrics["roi_a_auc"] > 0.95
    assert metrics["tau"] == pytest.approx(direct["threshold"], rel=1e-5)
    assert engine.state.pd_evaluation["test"]["ids"] == test
    assert (tmp_path / "figures" / "reconstruction_showcase.png").read_bytes()[:8] == PNG
    assert handler.bank is None  # released after the evaluation

    # A batched dict is decollated; an item without any id is a clear error.
    engine2 = Engine(lambda eng, batch: batch)
    h2 = PDAnomalyEvaluationHandler(atlas_grid=None, reference_ids=ref, out_dir=tmp_path / "b", n_slices=N_SLICES,
                                    n_bootstrap=20, brain=space["brain"], roi_masks=space["rois"], verbose=False,
                                    figures=False)
    h2.attach(engine2)
    stacked = [{"id": ids[k:k + 8], "group": [groups[s] for s in ids[k:k + 8]],
                "error": torch.stack([torch.from_numpy(maps[s]) for s in ids[k:k + 8]])} for k in range(0, len(ids), 8)]
    engine2.run(stacked, max_epochs=1)
    assert engine2.state.metrics["whole_brain_auc"] == pytest.approx(direct["metrics"]["whole_brain_auc"])
    with pytest.raises(KeyError, match="no subject id"):
        h2.collect(SimpleNamespace(state=SimpleNamespace(output=[{"error": torch.zeros(SHAPE)}])))
    with pytest.raises(ValueError, match="reference_ids"):
        PDAnomalyEvaluationHandler(atlas_grid=None, brain=space["brain"], roi_masks=space["rois"])
