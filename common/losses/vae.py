"""The VAE loss (AD paper eq. 1): reconstruction L2 + beta * KL(N(mu, sigma^2) || N(0, I)).

``KL = -0.5 * sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j))``, summed over the latent dimensions.

Reductions (``reduction``):

- ``"sum"`` (default): squared error summed over the voxels of a volume, KL summed over the latent
  dimensions, both averaged over the batch. With ``beta = 1`` this is the negative ELBO per sample for a
  Gaussian decoder of variance 1/2, and it does not change with the batch size.
- ``"mean"``: the same divided by the number of voxels (the reconstruction term is the voxel MSE); same
  optimum, values on the MSE scale.

ClinicaDL sums the squared error over voxels *and* batch but averages KL over the batch: that equals
``batch_size`` x this loss with ``reduction="sum"`` and ``beta = 1 / batch_size``, i.e. a KL weight that
shrinks with the batch. Use ``beta`` to reproduce it if needed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["VAELoss", "VAELossTerms", "gaussian_kl", "kl_warmup_weight"]


class VAELossTerms(NamedTuple):
    """The loss and its two terms (before ``beta``), each a scalar tensor in the loss's reduction."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent dimensions: shape (B,)."""
    return -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp(), dim=tuple(range(1, mu.ndim)))


def kl_warmup_weight(iteration: int, warmup_iterations: int) -> float:
    """Weight of the KL term at training iteration ``iteration`` (0-based) under a linear KL warm-up:
    ``iteration / warmup_iterations`` up to 1 (0 at the first iteration), 1 when ``warmup_iterations`` is 0."""
    if iteration < 0 or warmup_iterations < 0:
        raise ValueError(f"iteration and warmup_iterations must be >= 0, got {iteration}, {warmup_iterations}")
    return 1.0 if warmup_iterations == 0 else min(1.0, iteration / warmup_iterations)


class VAELoss(_Loss):
    """``prediction = (reconstruction, mu, logvar)`` from :class:`~common.networks.VAE3d`, ``target`` the
    input. ``forward`` returns the scalar loss; :meth:`terms` also returns the reconstruction and KL
    terms, for logging them separately. ``beta`` is an attribute, so a schedule can change it between
    iterations (:class:`~common.engines.vae.KLWarmupHandler`)."""

    def __init__(self, beta: float = 1.0, reduction: str = "sum"):
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        super().__init__(reduction=reduction)
        self.beta = float(beta)

    def terms(self, prediction: tuple[torch.Tensor, torch.Tensor, torch.Tensor], target: torch.Tensor) -> VAELossTerms:
        reconstruction, mu, logvar = prediction
        if reconstruction.shape != target.shape:
            raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} "
                             "differ in shape")
        squared_error = (reconstruction.float() - target.float()).pow(2).flatten(1).sum(1)  # (B,)
        kl = gaussian_kl(mu.float(), logvar.float())  # (B,)
        recon_term, kl_term = squared_error.mean(), kl.mean()
        if self.reduction == "mean":
            n_voxels = target[0].numel()
            recon_term, kl_term = recon_term / n_voxels, kl_term / n_voxels
        return VAELossTerms(recon_term + self.beta * kl_term, recon_term, kl_term)

    def forward(self, prediction: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                target: torch.Tensor) -> torch.Tensor:
        return self.terms(prediction, target).loss
