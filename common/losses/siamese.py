"""The siamese auto-encoder's loss (PD paper eq. 2; Alaverdyan et al. 2020).

Per pair ``L = sum_t ||x_t - xhat_t||^2 - alpha * cos(z_1, z_2)``: reconstruct both patches, pull the codes
of the two patches (same location, two healthy subjects) together. Whether ``||.||^2`` is a mean or a sum
over the 450 values of a patch changes the effective alpha 450-fold: the default is the mean (Keras' MSE,
the paper's implementation), ``reconstruction="sum"`` gives the sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["SiameseReconstructionLoss"]


class SiameseReconstructionLoss(_Loss):
    """Loss of a batch of pairs laid out as ``(2B, ...)``: rows ``i`` and ``B + i`` are the two patches of pair ``i``.

    ``pred`` is the network's ``(reconstruction, codes)`` (:class:`~common.networks.SiamesePatchAE`), ``target`` the
    input patches. Returns the mean over pairs.
    """

    def __init__(self, alpha: float = 0.005, reconstruction: str = "mean"):
        super().__init__()
        if reconstruction not in ("mean", "sum"):
            raise ValueError(f"reconstruction must be 'mean' or 'sum', got {reconstruction!r}")
        self.alpha, self.reconstruction = float(alpha), reconstruction

    def forward(self, pred: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        recon, codes = pred
        if recon.shape[0] % 2 or recon.shape != target.shape:
            raise ValueError(f"expected (2B, ...) pairs with matching target, got {tuple(recon.shape)} and "
                             f"{tuple(target.shape)}")
        squared = (recon - target).pow(2).flatten(1)
        per_patch = squared.mean(1) if self.reconstruction == "mean" else squared.sum(1)
        half = recon.shape[0] // 2
        similarity = F.cosine_similarity(codes[:half], codes[half:], dim=1)
        return (per_patch[:half] + per_patch[half:] - self.alpha * similarity).mean()
