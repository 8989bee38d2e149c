"""Evaluation pipelines: control-quantile thresholds, per-ROI abnormality, simulation-based PET evaluation."""
