"""Losses of the bundles' networks."""

from common.losses.siamese import SiameseReconstructionLoss

__all__ = ["SiameseReconstructionLoss"]
