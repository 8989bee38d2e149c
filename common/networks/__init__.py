"""Networks of the bundles (auto-encoders); each bundle's network lives here so bundles and tests share it."""

from common.networks.siamese_ae import PatchAE2d, SiamesePatchAE
from common.networks.spatial_ae import SpatialAE2d

__all__ = ["SpatialAE2d", "PatchAE2d", "SiamesePatchAE"]
