"""Helpers for MONAI/Ignite engines shared by the bundles' workflows."""

from common.engines.batches import prepare_reconstruction_batch
from common.engines.vae import KL_LOSS, RECON_LOSS, VAETrainer

__all__ = ["prepare_reconstruction_batch", "VAETrainer", "RECON_LOSS", "KL_LOSS"]
