"""``prepare_batch`` functions for auto-encoders: the target of a reconstruction is its input."""

from __future__ import annotations

import torch
from monai.utils import CommonKeys

__all__ = ["prepare_reconstruction_batch"]


def prepare_reconstruction_batch(batchdata: dict, device: str | torch.device | None = None,
                                 non_blocking: bool = False, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, image) for MONAI's Supervised{Trainer,Evaluator}: the loss and metrics compare the
    reconstruction with the input, without a duplicated "label" tensor in every batch."""
    image = batchdata[CommonKeys.IMAGE].to(device=device, non_blocking=non_blocking, **kwargs)
    return image, image
