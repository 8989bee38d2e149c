"""Image, classification and detection metrics (MSE, MAE, PSNR, SSIM, ROC / g-mean, voxel and subject
AUROC / AP, Dice, calibrated false-positive rates) used by the evaluations."""

from common.metrics.classification import (
    bootstrap_auc_ap,
    bootstrap_auc_ci,
    gmean_operating_point,
    loo_gmean,
    roc_summary,
)
from common.metrics.image import SSIMMoments, mae, mse, psnr, ssim, ssim_by_region, ssim_map
from common.metrics.voxel import (
    best_dice,
    dice_at_threshold,
    false_positive_rate,
    minimum_detectable_effect,
    subject_auroc_ap,
    threshold_at_fpr,
    voxel_auroc_ap,
)

__all__ = ["SSIMMoments", "best_dice", "bootstrap_auc_ap", "bootstrap_auc_ci", "dice_at_threshold",
           "false_positive_rate", "gmean_operating_point", "loo_gmean", "mae", "minimum_detectable_effect", "mse",
           "psnr", "roc_summary", "ssim", "ssim_by_region", "ssim_map", "subject_auroc_ap", "threshold_at_fpr",
           "voxel_auroc_ap"]
