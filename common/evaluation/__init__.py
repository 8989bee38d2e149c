"""Evaluation pipelines: control-quantile thresholds, per-ROI abnormality, simulation-based PET evaluation."""

from common.evaluation.pd import (
    TEST_CONTROLS,
    ErrorBank,
    PDEvaluationSettings,
    aggregate_splits,
    brain_slab_mask,
    control_threshold,
    evaluate_rois,
    format_roi_table,
    pd_roi_masks,
    percent_abnormal,
    roi_info,
    run_pd_evaluation,
    write_split_aggregates,
)

__all__ = [
    "TEST_CONTROLS",
    "ErrorBank",
    "PDEvaluationSettings",
    "PETEvaluationSettings",
    "PETSimulationEvaluator",
    "aggregate_splits",
    "brain_slab_mask",
    "control_threshold",
    "evaluate_rois",
    "format_roi_table",
    "pd_roi_masks",
    "percent_abnormal",
    "roi_info",
    "run_pd_evaluation",
    "run_pet_evaluation",
    "write_split_aggregates",
]


def __getattr__(name: str):
    # lazy: the PET evaluation needs torch
    if name in ("run_pet_evaluation", "PETEvaluationSettings", "PETSimulationEvaluator"):
        from common.evaluation import pet

        return getattr(pet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
