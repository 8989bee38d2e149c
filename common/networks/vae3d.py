"""ad_vae3d's 3D variational auto-encoder (AD paper section 2.3; ClinicaDL ``CVAE_3D_half``; docs/design.md 3.3).

Encoder: three Conv3d 3x3x3 stride 2 (BatchNorm + LeakyReLU 0.2), 32/64/128 channels, take a 1x80x96x80
PET volume to 128x10x12x10; two dense layers give the posterior mean and log-variance (latent 128).
Decoder: a dense layer to 256x10x12x10 (ReLU), then ConvTranspose3d 3x3x3 stride 2 256->128->64 with
BatchNorm + ReLU and a last one to 1 channel with a sigmoid. About 80 M parameters, 79 M of them dense.

Two fixes over ClinicaDL: the reparameterisation noise is drawn per sample (ClinicaDL draws one vector
and shares it across the batch), and evaluation decodes the mean, so a reconstruction is deterministic.

Training options that leave the layout unchanged (used by the bundle's short CPU schedule, off by default):
``batchnorm_momentum``, ``output_bias_init`` (with :func:`mean_intensity`) and :func:`vae_parameter_groups`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["VAE3d", "VAEReconstructor", "mean_intensity", "vae_parameter_groups"]


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
        batchnorm_momentum: momentum of the BatchNorm running statistics (PyTorch's 0.1 by default). A
            larger value makes the statistics used in eval mode follow weights that change quickly (short,
            high learning-rate schedules); it changes no parameter.
        output_bias_init: if given, the mean intensity the untrained output starts at
            (:meth:`init_output_bias_`; e.g. :func:`mean_intensity` of the training set); ``None`` keeps
            PyTorch's initialisation.
    """

    def __init__(
        self,
        spatial_shape: Sequence[int] = (80, 96, 80),
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128),
        decoder_channels: Sequence[int] = (256, 128, 64),
        latent_size: int = 128,
        negative_slope: float = 0.2,
        batchnorm_momentum: float = 0.1,
        output_bias_init: float | None = None,
    ):
        super().__init__()
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        channels, decoder_channels = tuple(int(c) for c in channels), tuple(int(c) for c in decoder_channels)
        depth = len(channels)
        if len(self.spatial_shape) != 3:
            raise ValueError(f"spatial_shape must have 3 sizes, got {self.spatial_shape}")
        if depth < 1 or len(decoder_channels) != depth:
            raise ValueError(f"channels {channels} and decoder_channels {decoder_channels} need the same "
                             "non-zero length")
        if not 0 < batchnorm_momentum <= 1:
            raise ValueError(f"batchnorm_momentum must be in (0, 1], got {batchnorm_momentum}")
        if any(s % 2**depth for s in self.spatial_shape):
            raise ValueError(f"spatial_shape {self.spatial_shape} must be divisible by 2**{depth} = {2**depth} "
                             "per axis")
        self.in_channels, self.latent_size = int(in_channels), int(latent_size)
        self.bottleneck_shape = tuple(s // 2**depth for s in self.spatial_shape)
        n_bottleneck = math.prod(self.bottleneck_shape)

        widths = (self.in_channels, *channels)
        self.encoder = nn.Sequential(*(
            nn.Sequential(
                nn.Conv3d(widths[i], widths[i + 1], kernel_size=3, stride=2, padding=1),
                nn.BatchNorm3d(widths[i + 1], momentum=batchnorm_momentum),
                nn.LeakyReLU(negative_slope, inplace=True),
            )
            for i in range(depth)
        ))
        self.mu = nn.Linear(channels[-1] * n_bottleneck, self.latent_size)
        self.logvar = nn.Linear(channels[-1] * n_bottleneck, self.latent_size)

        self.decoder_input = nn.Sequential(nn.Linear(self.latent_size, decoder_channels[0] * n_bottleneck),
                                           nn.ReLU(inplace=True))
        ups = (*decoder_channels, self.in_channels)
        blocks = []
        for i in range(depth):
            last = i == depth - 1
            up = nn.ConvTranspose3d(ups[i], ups[i + 1], kernel_size=3, stride=2, padding=1, output_padding=1)
            post = ([nn.Sigmoid()] if last
                    else [nn.BatchNorm3d(ups[i + 1], momentum=batchnorm_momentum), nn.ReLU(inplace=True)])
            blocks.append(nn.Sequential(up, *post))
        self.decoder = nn.Sequential(*blocks)
        # plain lists: TorchScript (MONAI's ckpt_export) scripts the forward passes
        self._input_shape = [self.in_channels, *self.spatial_shape]
        self._decoder_shape = [decoder_channels[0], *self.bottleneck_shape]
        if output_bias_init is not None:
            self.init_output_bias_(output_bias_init)

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
        # list concatenation, not unpacking: TorchScript (MONAI's ckpt_export) cannot script [a, *b]
        return self.decoder(self.decoder_input(z).view([z.shape[0]] + self._decoder_shape))  # noqa: RUF005

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z), mu, logvar

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction: the decoded posterior mean."""
        return self.decode(self.encode(x)[0])

    @property
    def latent_heads(self) -> tuple[nn.Linear, nn.Linear]:
        """The two dense layers from the flattened bottleneck to mu and log-variance."""
        return self.mu, self.logvar

    @torch.no_grad()
    def init_output_bias_(self, mean_intensity: float) -> None:
        """Set the last layer's bias to ``logit(mean_intensity)``, so the untrained sigmoid output starts at the
        mean training intensity instead of 0.5 (most of a PET volume is background near 0; with Adam each
        step moves the bias by about the learning rate, so it would take many steps to get there)."""
        m = float(mean_intensity)
        if not 0 < m < 1:
            raise ValueError(f"the mean intensity must be in (0, 1) (min-max normalised inputs), got {m}")
        self.decoder[-1][0].bias.fill_(math.log(m / (1 - m)))


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


def vae_parameter_groups(network: nn.Module, learning_rate: float, latent_head_lr_scale: float = 1.0) -> list[dict]:
    """Optimiser parameter groups: the latent heads (mu and log-variance layers) at ``learning_rate *
    latent_head_lr_scale``, everything else at ``learning_rate``; a DDP/DataParallel wrapper is looked through.

    Why: each head reads the 153,600 bottleneck values, and Adam's first steps move every weight by about the
    learning rate with the sign of its gradient, which for one sample is ``sign(delta * h_i)``: the output
    moves by ``lr * sum_i |h_i|``, about 10^5 x lr. At lr 1e-3 the log-variance jumps by tens per step and
    ``exp(logvar)`` overflows the KL; scaling the heads' rate (e.g. 1e-3) keeps their steps O(lr x 100) while
    the rest of the network (fan-in <= 6,912) trains at the full rate. ``1.0`` gives one group (plain Adam).
    """
    vae = network.module if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else network
    if not isinstance(vae, VAE3d):
        raise TypeError(f"vae_parameter_groups needs a VAE3d, got {type(vae).__name__}")
    if learning_rate <= 0 or latent_head_lr_scale <= 0:
        raise ValueError(f"learning_rate and latent_head_lr_scale must be > 0, got {learning_rate}, "
                         f"{latent_head_lr_scale}")
    if latent_head_lr_scale == 1.0:
        return [{"params": list(vae.parameters()), "lr": float(learning_rate)}]
    heads = [p for layer in vae.latent_heads for p in layer.parameters()]
    ids = {id(p) for p in heads}
    rest = [p for p in vae.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": float(learning_rate)},
            {"params": heads, "lr": float(learning_rate) * float(latent_head_lr_scale)}]


def mean_intensity(dataset, key: str = "image") -> float:
    """Mean voxel value over the ``key`` images of a dataset (e.g. the bundle's cached, normalised training
    set; every item is read once), for ``VAE3d(output_bias_init=...)``."""
    total, count = 0.0, 0
    for item in dataset:
        image = torch.as_tensor(item[key])
        total, count = total + float(image.double().sum()), count + image.numel()
    if count == 0:
        raise ValueError("mean_intensity needs a non-empty dataset")
    return total / count
