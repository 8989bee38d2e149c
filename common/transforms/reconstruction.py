"""The voxel error map of a reconstruction: ``e(v) = sqrt(sum_c (x_c(v) - xhat_c(v))^2)`` (PD paper 2.2).

Joint over channels (FA and MD), so one map scores both; it keeps the input's meta (affine, subject id)
so it is written on the input grid.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

__all__ = ["ReconstructionError", "ReconstructionErrorD", "ReconstructionErrorDict", "ReconstructionErrord"]


def _meta_of(image: MetaTensor) -> dict:
    """A copy of the image's meta (its affine included) for a derived tensor."""
    meta = dict(image.meta)
    meta["affine"] = image.affine.clone()
    return meta


class ReconstructionError(Transform):
    """``(image, reconstruction) -> (1, *spatial)`` joint error map; with ``signed`` the channel-wise
    difference ``reconstruction - image`` instead (same shape as the image).

    Args:
        signed: return the channel-wise signed difference instead of the joint (root of summed squares) map,
            for figures that show where the reconstruction is brighter or darker than the input.
    """

    def __init__(self, signed: bool = False):
        self.signed = signed

    def __call__(self, image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        image_t, recon_t = convert_to_tensor(image), convert_to_tensor(reconstruction, device=image.device)
        if image_t.shape != recon_t.shape:
            raise ValueError(f"image {tuple(image_t.shape)} and reconstruction {tuple(recon_t.shape)} differ in shape")
        diff = recon_t.float() - image_t.float()
        out = diff if self.signed else torch.sqrt(torch.sum(diff * diff, dim=0, keepdim=True))
        if isinstance(image, MetaTensor):
            out = MetaTensor(out.as_tensor() if isinstance(out, MetaTensor) else out, meta=_meta_of(image))
        return out


class ReconstructionErrord(MapTransform):
    """Dictionary version: reads ``image_key`` and ``pred_key``, writes ``error_key``. The prediction is
    given the image's meta too (a network returns plain tensors), so both save on the input grid.

    Args:
        image_key: key of the network input.
        pred_key: key of the reconstruction.
        error_key: key the error map is written to.
        signed: see :class:`ReconstructionError`.
        allow_missing_keys: an item that lacks ``image_key`` or ``pred_key`` passes through unchanged (no
            ``error_key``) instead of raising ``KeyError``, as MONAI's dictionary transforms do.
    """

    def __init__(self, image_key: str = "image", pred_key: str = "pred", error_key: str = "error",
                 signed: bool = False, allow_missing_keys: bool = False):
        super().__init__([image_key, pred_key], allow_missing_keys)
        self.image_key, self.pred_key, self.error_key = image_key, pred_key, error_key
        self.error = ReconstructionError(signed)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if len(list(self.key_iterator(d))) < 2:  # raises KeyError unless allow_missing_keys
            return d
        image, pred = d[self.image_key], d[self.pred_key]
        if isinstance(image, MetaTensor):
            plain = pred.as_tensor() if isinstance(pred, MetaTensor) else convert_to_tensor(pred)
            d[self.pred_key] = MetaTensor(plain, meta=_meta_of(image))
        d[self.error_key] = self.error(image, d[self.pred_key])
        return d


ReconstructionErrorD = ReconstructionErrorDict = ReconstructionErrord
