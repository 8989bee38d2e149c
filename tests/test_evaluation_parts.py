"""The evaluations in parts: settings objects, pure computing, files, logged summaries and rank-aware writers."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from ignite.engine import Engine
from test_pd_evaluation import N_SLICES, SHAPE, cohort, space  # noqa: F401
from test_pet_evaluation import SMALL, evaluate, setup, small_grid  # noqa: F401

from common.evaluation.pd import (
    ErrorBank,
    PDEvaluationSettings,
    compute_pd_evaluation,
    control_threshold,
    percent_abnormal,
    run_pd_evaluation,
)
from common.evaluation.reporting import SUMMARY_LOGGER
from common.handlers import PDAnomalyEvaluationHandler


def test_pd_settings_are_one_checked_object():
    s = PDEvaluationSettings(q=0.9, fprs=[0.05, 0.01], n_slices=8)
    assert s.fprs == (0.05, 0.01) and dataclasses.replace(s, split=2).title == "pd_ae, split 2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.q = 0.5
    with pytest.raises(ValueError, match="open interval"):
        PDEvaluationSettings(q=1.0)
    with pytest.raises(ValueError, match="nuclei"):
        PDEvaluationSettings(nuclei="left")
    handler = PDAnomalyEvaluationHandler(atlas_grid=None, reference_ids=["r"], brain=np.ones(SHAPE, bool),
                                         roi_masks={}, q=0.9, n_slices=8, seed=3, model_name="m", fprs=[0.01])
    assert handler.settings == PDEvaluationSettings(q=0.9, n_slices=8, seed=3, model_name="m", fprs=(0.01,))
    with pytest.raises(TypeError, match="unexpected keyword"):
        PDAnomalyEvaluationHandler(atlas_grid=None, reference_ids=["r"], brain=np.ones(SHAPE, bool), roi_masks={},
                                   quantile=0.9)


def test_pd_computing_is_pure_and_matches_the_run(space, rng, tmp_path, capsys, caplog):  # noqa: F811
    maps, groups, ref, test = cohort(rng, roi=space["rois"]["roi_a"])
    rois = {k: v for k, v in space["rois"].items() if k != "outside"}
    settings = PDEvaluationSettings(n_slices=N_SLICES, n_bootstrap=200, model_name="m", verbose=False)
    bank = ErrorBank.from_maps(space["mask"], maps, groups, slab=space["slab"])
    ev = compute_pd_evaluation(bank, test, ref, rois, None, settings)
    assert not list(tmp_path.iterdir())
    # independent of the pipeline: tau is the pooled quantile, the table the % of voxels above it
    pool = np.concatenate([maps[s][space["mask"]] for s in ref])
    assert ev.tau == pytest.approx(float(np.quantile(pool, 0.98)), rel=1e-6)
    expected = np.array([[100.0 * np.mean(maps[s][space["mask"] & rois[n]] > ev.tau) if n != "whole_brain" else
                          100.0 * np.mean(maps[s][space["mask"]] > ev.tau) for n in ev.names] for s in test])
    np.testing.assert_allclose(ev.table, expected, atol=1e-9)
    np.testing.assert_allclose(ev.table, percent_abnormal(bank, {"whole_brain": bank.mask, **rois},
                                                          control_threshold(bank, ref), ids=test))
    # the run = the same computation, then files; settings as one object or as keywords
    with caplog.at_level(logging.DEBUG, logger="common.evaluation.pd"):
        run = run_pd_evaluation(maps, groups, test, ref, atlas=None, out_dir=tmp_path / "a", settings=settings,
                                brain=space["brain"], roi_masks=rois)
    assert capsys.readouterr().out == ""  # verbose=False: the summary only at DEBUG on the module's logger
    assert "g-mean paper" in caplog.text and "PD evaluation of m" in caplog.text
    by_keywords = run_pd_evaluation(maps, groups, test, ref, atlas=None, out_dir=None, n_slices=N_SLICES,
                                    n_bootstrap=200, model_name="m", verbose=True, brain=space["brain"], roi_masks=rois)
    assert capsys.readouterr().out == "" and by_keywords["files"] == {}  # out_dir=None: nothing written or shown
    assert [r["auc"] for r in run["rois"]] == [r["auc"] for r in ev.rows] == [r["auc"] for r in by_keywords["rois"]]
    assert (tmp_path / "a" / "roi_results.csv").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    # verbose=True: the summary through the summary logger, shown on stdout unless that logger is silenced
    run_pd_evaluation(maps, groups, test, ref, atlas=None, out_dir=tmp_path / "b", settings=settings, verbose=True,
                      figures=False, brain=space["brain"], roi_masks=rois)
    assert "g-mean paper" in capsys.readouterr().out
    summary_logger = logging.getLogger(SUMMARY_LOGGER)
    level = summary_logger.level
    summary_logger.setLevel(logging.WARNING)
    try:
        run_pd_evaluation(maps, groups, test, ref, atlas=None, out_dir=tmp_path / "c", settings=settings,
                          verbose=True, figures=False, brain=space["brain"], roi_masks=rois)
    finally:
        summary_logger.setLevel(level)
    assert capsys.readouterr().out == ""


def test_only_rank_zero_writes(space, rng, tmp_path, monkeypatch):  # noqa: F811
    import torch.distributed as dist

    maps, groups, ref, test = cohort(rng, roi=space["rois"]["roi_a"])
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # a rank other than 0 of a process group
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    engine = Engine(lambda eng, batch: batch)
    handler = PDAnomalyEvaluationHandler(atlas_grid=None, reference_ids=ref, test_ids=test, out_dir=tmp_path / "out",
                                         n_slices=N_SLICES, groups=groups, n_bootstrap=50, brain=space["brain"],
                                         roi_masks=space["rois"])
    handler.attach(engine)
    engine.run([[{"id": s, "error": maps[s]} for s in ids] for ids in (ref, test)], max_epochs=1)
    assert engine.state.metrics["roi_a_auc"] > 0.95  # every rank gets its metrics
    assert not (tmp_path / "out").exists()


def test_pet_settings_fail_before_any_work_and_rank_one_writes_nothing(setup, tmp_path, monkeypatch):  # noqa: F811
    import torch
    import torch.distributed as dist

    from common.evaluation.pet import PETEvaluationSettings, PETSimulationEvaluator

    with pytest.raises(ValueError, match="test must be one of"):
        PETEvaluationSettings(grid=SMALL.name, test="one-sided")
    s = PETEvaluationSettings(grid=SMALL.name, degrees=(70, 10), dementias=("left", "left", "front"), fprs=(0.05, 0.01))
    assert s.degrees == (0.0, 10.0, 70.0) and s.dementias == ("left", "front") and s.fprs == (0.01, 0.05)
    assert s.mask_names == ["ad", "left", "front"] and s.normative_options == {"tail": "lower"}
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # a rank other than 0 of a process group
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    evaluator = PETSimulationEvaluator(torch.nn.Identity(), setup["controls"], setup["patients"], tmp_path / "pet",
                                       grid=SMALL.name, degrees=(0, 30), sweep_mask="left", dementias=("front",),
                                       masks=setup["masks"], brain=setup["brain"], progress=False,
                                       voxel_subsample=None, n_bootstrap=20)
    result = evaluator.run()
    assert result["files"] == {} and not (tmp_path / "pet").exists()
    assert result["sweep"]["baseline_mse"] == 0.0  # the identity reconstructs perfectly
