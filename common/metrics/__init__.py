"""Image and classification metrics (MSE, MAE, PSNR, SSIM, ROC / g-mean) used by the evaluations."""

from common.metrics.classification import (
    bootstrap_auc_ci,
    gmean_operating_point,
    loo_gmean,
    roc_summary,
)
from common.metrics.image import mae, mse, psnr, ssim, ssim_map

__all__ = ["bootstrap_auc_ci", "gmean_operating_point", "loo_gmean", "mae", "mse", "psnr", "roc_summary", "ssim",
           "ssim_map"]
