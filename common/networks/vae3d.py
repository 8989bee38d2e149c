"""ad_vae3d's 3D variational auto-encoder (AD paper section 2.3; ClinicaDL ``CVAE_3D_half``; DESIGN.md 3.3).

Encoder: three Conv3d 3x3x3 stride 2 (BatchNorm + LeakyReLU 0.2), 32/64/128 channels, take a 1x80x96x80
PET volume to 128x10x12x10; two dense layers give the posterior mean and log-variance (latent 128).
Decoder: a dense layer to 256x10x12x10 (ReLU), then ConvTranspose3d 3x3x3 stride 2 256->128->64 with
BatchNorm + ReLU and a last one to 1 channel with a sigmoid. About 80 M parameters, 79 M of them dense.

Two fixes over ClinicaDL: the reparameterisation noise is drawn per sample (ClinicaDL draws one vector
and shares it across the batch), and evaluation decodes the mean, so a reconstruction is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["VAE3d", "VAEReconstructor"]


class VAE3d(nn.Module):
    """Convolutional VAE on whole 3D volumes.

    ``forward`` returns ``(reconstruction, mu, logvar)``: in training mode the latent code is sampled with
    the reparameterisation trick (independent noise for every sample of the batch), in eval mode it is
    ``mu``. :meth:`reconstruct` always decodes ``mu``.

    Args:
        spatial_shape: input volume shape; each size must be divisible by ``2 ** len(channels)`` so the
            stride-2 decoder restores it exactly (80x96x80: 10x12x10 at the bottleneck).
        in_channels: input (and output) channels.
        channels: encoder widths (paper: 32/64/128).
        decoder_channels: decoder widths, deepest first (paper: 256/128/64); as many as ``channels``.
        latent_size: dimension of the latent space (paper: 128).
        negative_slope: slope of the encoder's LeakyReLU (0.2).
    """

    def __init__(
        self,
        spatial_shape: Sequence[int] = (80, 96, 80),
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128),
        decoder_channels: Sequence[int] = (256, 128, 64),
        latent_size: int = 128,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        channels, decoder_channels = tuple(int(c) for c in channels), tuple(int(c) for c in decoder_channels)
        depth = len(channels)
        if len(self.spatial_shape) != 3:
            raise ValueError(f"spatial_shape must have 3 sizes, got {self.spatial_shape}")
        if depth < 1 or len(decoder_channels) != depth:
            raise ValueError(f"channels {channels} and decoder_channels {decoder_channels} need the same non-zero length")
        if any(s % 2**depth for s in self.spatial_shape):
            raise ValueError(f"spatial_shape {self.spatial_shape} must be divisible by 2**{depth} = {2**depth} per axis")
        self.in_channels, self.latent_size = int(in_channels), int(latent_size)
        self.bottleneck_shape = tuple(s // 2**depth for s in self.spatial_shape)
        n_bottleneck = math.prod(self.bottleneck_shape)

        widths = (self.in_channels, *channels)
        self.encoder = nn.Sequential(*(
            nn.Sequential(
                nn.Conv3d(widths[i], widths[i + 1], kernel_size=3, stride=2, padding=1),
                nn.BatchNorm3d(widths[i + 1]),
                nn.LeakyReLU(negative_slope, inplace=True),
            )
            for i in range(depth)
        ))
        self.mu = nn.Linear(channels[-1] * n_bottleneck, self.latent_size)
        self.logvar = nn.Linear(channels[-1] * n_bottleneck, self.latent_size)

        self.decoder_input = nn.Sequential(nn.Linear(self.latent_size, decoder_channels[0] * n_bottleneck), nn.ReLU(inplace=True))
        ups = (*decoder_channels, self.in_channels)
        blocks = []
        for i in range(depth):
            last = i == depth - 1
            up = nn.ConvTranspose3d(ups[i], ups[i + 1], kernel_size=3, stride=2, padding=1, output_padding=1)
            post = [nn.Sigmoid()] if last else [nn.BatchNorm3d(ups[i + 1]), nn.ReLU(inplace=True)]
            blocks.append(nn.Sequential(up, *post))
        self.decoder = nn.Sequential(*blocks)
        # plain lists: TorchScript (MONAI's ckpt_export) scripts the forward passes
        self._input_shape = [self.in_channels, *self.spatial_shape]
        self._decoder_shape = [decoder_channels[0], *self.bottleneck_shape]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or list(x.shape[1:]) != self._input_shape:
            raise ValueError("VAE3d expects (B, C, X, Y, Z) volumes with (C, X, Y, Z) = " + str(self._input_shape)
                             + ", got " + str(list(x.shape)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (B, latent_size)."""
        self._check_input(x)
        h = self.encoder(x).flatten(1)
        return self.mu(h), self.logvar(h)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``mu + sigma * eps`` with ``eps ~ N(0, I)`` drawn independently for every sample and dimension."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.decoder_input(z).view([z.shape[0]] + self._decoder_shape))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z), mu, logvar

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction: the decoded posterior mean."""
        return self.decode(self.encode(x)[0])


class VAEReconstructor(nn.Module):
    """One-tensor view of a :class:`VAE3d`: ``x -> decode(mu(x))``, for evaluators, inference, MONAI's
    ``verify_net_in_out``, MONAI Deploy and MONAI Label, which all expect a single output tensor.

    It shares the VAE's parameters (no copy); a ``DistributedDataParallel``/``DataParallel`` wrapper is
    looked through, so the state dict is always the VAE's own under ``vae.``.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae.module if isinstance(vae, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else vae
        if not hasattr(self.vae, "reconstruct"):
            raise TypeError(f"VAEReconstructor needs a VAE with a reconstruct() method, got {type(self.vae).__name__}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.reconstruct(x)
