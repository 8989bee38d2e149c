"""Image and classification metrics (MSE, MAE, PSNR, SSIM, ROC / g-mean) used by the evaluations."""
