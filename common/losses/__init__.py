"""Losses of the bundles' networks."""

from common.losses.siamese import SiameseReconstructionLoss
from common.losses.vae import VAELoss, VAELossTerms, gaussian_kl

__all__ = ["SiameseReconstructionLoss", "VAELoss", "VAELossTerms", "gaussian_kl"]
