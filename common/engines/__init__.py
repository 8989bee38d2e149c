"""Helpers for MONAI/Ignite engines shared by the bundles' workflows."""

from common.engines.batches import prepare_reconstruction_batch

__all__ = ["prepare_reconstruction_batch"]
