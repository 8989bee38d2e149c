"""Networks of the bundles (auto-encoders); each bundle's network lives here so bundles and tests share it."""

from common.networks.siamese_ae import PatchAE2d, SiamesePatchAE
from common.networks.spatial_ae import SpatialAE2d
from common.networks.vae3d import VAE3d, VAEReconstructor, mean_intensity, vae_parameter_groups

__all__ = ["PatchAE2d", "SiamesePatchAE", "SpatialAE2d", "VAE3d", "VAEReconstructor", "mean_intensity",
           "vae_parameter_groups"]
