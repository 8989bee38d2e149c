"""Image and classification metrics (MSE, MAE, PSNR, SSIM, ROC / g-mean) used by the evaluations."""

from common.metrics.classification import (
    bootstrap_auc_ci,
    gmean_operating_point,
    loo_gmean,
    roc_summary,
)

__all__ = ["bootstrap_auc_ci", "gmean_operating_point", "loo_gmean", "roc_summary"]
