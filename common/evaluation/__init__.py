"""Evaluation pipelines: control-quantile thresholds, per-ROI abnormality, simulation-based PET evaluation."""

from common.evaluation.pd import (
    TEST_CONTROLS,
    ErrorBank,
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
    "aggregate_splits",
    "brain_slab_mask",
    "control_threshold",
    "evaluate_rois",
    "format_roi_table",
    "pd_roi_masks",
    "percent_abnormal",
    "roi_info",
    "run_pd_evaluation",
    "write_split_aggregates",
]
