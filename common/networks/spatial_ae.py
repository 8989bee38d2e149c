"""pd_ae's spatial 2D auto-encoder (PD paper section 2.1 / 3.2; docs/design.md section 3.1).

Five stride-2 3x3 convolutions (BatchNorm + ReLU) take a 2x121x145 FA/MD slice to a 256x4x5 bottleneck;
five 3x3 stride-2 transposed convolutions bring it back, BatchNorm + ReLU after each but the last, and a
sigmoid at the end. The decoder is given the encoder's stored sizes (``output_size``), so odd sizes such
as 121x145 come back exactly, and any other slice size works too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["SpatialAE2d"]


class _UpBlock(nn.Module):
    """Transposed convolution to an exact output size, then its activation (BN + ReLU, or sigmoid last)."""

    def __init__(self, in_channels: int, out_channels: int, last: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.post = nn.Sigmoid() if last else nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        return self.post(self.up(x, output_size=size))


class SpatialAE2d(nn.Module):
    """Fully convolutional 2D auto-encoder. Channel widths before the 256-channel bottleneck are not given
    by the paper; ``channels`` defaults to 32/64/128/256/256."""

    def __init__(self, in_channels: int = 2, channels: Sequence[int] = (32, 64, 128, 256, 256)):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 1:
            raise ValueError("channels must list at least one encoder width")
        widths = (int(in_channels), *channels)
        self.encoder = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, stride=2, padding=1),
                nn.BatchNorm2d(widths[i + 1]),
                nn.ReLU(inplace=True),
            )
            for i in range(len(channels))
        )
        self.decoder = nn.ModuleList(_UpBlock(widths[i], widths[i - 1], last=i == 1)
                                     for i in range(len(channels), 0, -1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[list[int]]]:
        """Bottleneck code and the spatial sizes the decoder must restore, deepest first."""
        sizes: list[list[int]] = []
        for block in self.encoder:
            sizes.append([int(x.shape[-2]), int(x.shape[-1])])
            x = block(x)
        sizes.reverse()
        return x, sizes

    def decode(self, z: torch.Tensor, sizes: list[list[int]]) -> torch.Tensor:
        x = z
        for i, block in enumerate(self.decoder):
            x = block(x, sizes[i])
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, sizes = self.encode(x)
        return self.decode(z, sizes)
