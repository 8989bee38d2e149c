"""Figures. Matplotlib with the Agg backend, so they render on headless machines."""

from common.visualize.cohorts import plot_cohort_overview

__all__ = ["plot_cohort_overview"]
