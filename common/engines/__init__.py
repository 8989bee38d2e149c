"""Helpers for MONAI/Ignite engines shared by the bundles' workflows."""

from common.engines.batches import prepare_reconstruction_batch
from common.engines.vae import (
    KL_LOSS,
    RECON_LOSS,
    KLWarmupHandler,
    VAETrainer,
    WarmupCosineFactor,
)

__all__ = ["KL_LOSS", "RECON_LOSS", "KLWarmupHandler", "VAETrainer", "WarmupCosineFactor",
           "prepare_reconstruction_batch"]
