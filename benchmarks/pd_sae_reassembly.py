"""pd_sae voxel-wise reconstruction: dense patch reassembly against a naive per-patch loop.

Measures, side by side in one run, on one full 121x145x121 two-channel volume with the analysed slab
(40 axial slices) and the spm1p5 atlas brain mask (the voxels pd_sae's evaluation reads):

- ``naive loop``: a Python loop over voxels, one 15x15 patch at a time through the network, keeping the
  centre pixel; only ``--naive-voxels`` voxels are timed and the rate is extrapolated to the subject;
- ``patches, centre`` / ``patches, mean``: :class:`common.inferers.PatchReassemblyInferer` on the patch
  path (``use_dense=False``), both reassembly modes, on the whole slab;
- ``dense, centre``: the same inferer on the network's ``dense_centre_reconstruction`` fast path, when the
  network has one (the stand-in does), with the largest difference from the patch path's centre result.

and prints voxels/s, seconds per subject and the speed-up over the naive loop. The network defaults to
:class:`StandInSAE`, a **stand-in** with the layer shapes of docs/design.md section 3.2 and random weights (the real
pd_sae network lives in ``common.networks``); point the script at another with ``--network module:factory``
(a module path or a ``.py`` file, and a callable returning the ``torch.nn.Module``), e.g.

    python benchmarks/pd_sae_reassembly.py [--network common.networks:SiamesePatchAE] [--checkpoint model.pt]
    python benchmarks/pd_sae_reassembly.py --rounds 2 --naive-voxels 3000 --threads 2

The values of the volume are random inside the brain (timing does not depend on them). Each figure is the
best of ``--rounds`` (the machine's noise only ever slows a run down). On a CPU shared with other work,
``--threads 1`` is the stable setting: two OpenMP threads on two busy cores stall each other (2-thread runs
of the same step varied 8-55 s there).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.atlases import load_atlas
from common.inferers import PatchReassemblyInferer

PATCH = 15


class StandInSAE(nn.Module):
    """STAND-IN for the pd_sae patch auto-encoder (benchmarks and tests only): the layer shapes of
    docs/design.md section 3.2, random weights. 2x15x15 -> 16x13x13 -> pool 16x6x6 -> 16x4x4 -> 16x2x2 (code)
    -> 16x4x4 -> 16x6x6 -> up 16x12x12 -> 16x14x14 -> 2x15x15.

    It also carries ``dense_centre_reconstruction``, an exact dense computation of the centre pixel of
    every zero-padded patch of whole slices, to exercise the inferer's fast path: the encoder runs on the
    padded slice as dilated convolutions (stride-1 pooling, then dilation 2 after the pool); the code of
    the patch centred on pixel (i, j) is then read at (i + 2a, j + 2b), a, b in {0, 1}; the decoder's
    centre pixel only depends on a few positions of each layer, so it reduces to a small MLP
    64 -> 256 -> 64 -> 64 -> 2 whose matrices are read off the transposed convolutions.
    """

    def __init__(self, channels: int = 2, filters: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, filters, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, 3), nn.ReLU(),
            nn.Conv2d(filters, filters, 3), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(filters, filters, 3), nn.ReLU(),
            nn.ConvTranspose2d(filters, filters, 3), nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.ConvTranspose2d(filters, filters, 3), nn.ReLU(),
            nn.ConvTranspose2d(filters, channels, 2), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def _centre_decoder(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(matrix, bias) of the four decoder layers restricted to what the centre pixel (7, 7) needs:
        code 16x2x2 -> convT1 16x4x4 -> convT2 rows/cols 2..3 -> (upsample) convT3 rows/cols 6..7 -> (7, 7)."""
        t1, t2, t3, t4 = (m for m in self.decoder if isinstance(m, nn.ConvTranspose2d))
        f = t1.in_channels

        def linear(n_in, embed, layer, take):
            basis = torch.eye(n_in, dtype=layer.weight.dtype, device=layer.weight.device)
            out = take(F.conv_transpose2d(embed(basis), layer.weight))  # bias-free: the linear part
            bias = take(F.conv_transpose2d(embed(torch.zeros_like(basis[:1])), layer.weight, layer.bias))
            return out.reshape(n_in, -1).T.contiguous(), bias.reshape(-1)

        def placed(size, lo, channels=f):
            def embed(basis):
                full = basis.new_zeros(len(basis), channels, size, size)
                full[:, :, lo:lo + 2, lo:lo + 2] = basis.view(len(basis), channels, 2, 2)
                return full
            return embed

        layers = [linear(4 * f, lambda b: b.view(len(b), f, 2, 2), t1, lambda o: o),
                  linear(16 * f, lambda b: b.view(len(b), f, 4, 4), t2, lambda o: o[:, :, 2:4, 2:4])]
        up = placed(6, 2)
        layers.append(linear(4 * f, lambda b: F.interpolate(up(b), scale_factor=2), t3, lambda o: o[:, :, 6:8, 6:8]))
        layers.append(linear(4 * f, placed(14, 6), t4, lambda o: o[:, :, 7:8, 7:8]))
        return layers

    def dense_centre_reconstruction(self, slices: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
        """(S, C, H, W) -> (S, C, H, W): per pixel, the centre of ``forward`` of the 15x15 patch centred
        on it, the slices being zero-padded by 7 (exactly what the inferer's patch path computes)."""
        conv1, _, _, conv2, _, conv3, _ = self.encoder
        s, c, h, w = slices.shape
        a = F.relu(F.conv2d(F.pad(slices, (7, 7, 7, 7)), conv1.weight, conv1.bias))  # (S, 16, H+12, W+12)
        a = F.max_pool2d(a, 2, stride=1)                                              # pool 2x2 -> stride 1
        a = F.relu(F.conv2d(a, conv2.weight, conv2.bias, dilation=2))                 # then dilation 2
        a = F.relu(F.conv2d(a, conv3.weight, conv3.bias, dilation=2))                 # (S, 16, H+3, W+3)
        codes = F.unfold(a, 2, dilation=2).view(s, -1, h + 1, w + 1)[:, :, :h, :w]   # (S, 64, H, W)
        codes = codes.permute(0, 2, 3, 1).reshape(-1, codes.shape[1])
        layers = self._centre_decoder()
        out = codes.new_empty(len(codes), c)
        for start in range(0, len(codes), chunk):
            v = codes[start:start + chunk]
            for k, (matrix, bias) in enumerate(layers):
                v = torch.addmm(bias, v, matrix.T)
                v = torch.sigmoid(v) if k == len(layers) - 1 else F.relu(v)
            out[start:start + chunk] = v
        return out.view(s, h, w, c).permute(0, 3, 1, 2).contiguous()


def stand_in() -> nn.Module:
    """Factory of the default network: the stand-in with fixed random weights."""
    torch.manual_seed(0)
    return StandInSAE()


def load_network(spec: str | None, checkpoint: str | None) -> nn.Module:
    if spec is None:
        net = stand_in()
    else:
        module_name, _, factory = spec.partition(":")
        if not factory:
            raise SystemExit(f"--network must be module:factory, got {spec!r}")
        if module_name.endswith(".py"):
            loaded = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        net = getattr(module, factory)()
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    return net.eval()


def naive_rate(net: nn.Module, volume: torch.Tensor, region: np.ndarray, n_voxels: int) -> float:
    """Voxels/s of a Python loop over voxels, one zero-padded patch at a time, keeping its centre."""
    p = PATCH // 2
    padded = F.pad(volume[0].permute(3, 0, 1, 2), (p, p, p, p))  # (Z, C, X+2p, Y+2p)
    xs, ys, zs = np.nonzero(region)
    pick = np.random.default_rng(0).choice(len(xs), size=min(n_voxels, len(xs)), replace=False)
    out = torch.empty(len(pick), volume.shape[1], device=volume.device)

    def loop(voxels):
        for k, v in enumerate(voxels):
            i, j, z = int(xs[v]), int(ys[v]), int(zs[v])
            out[k] = net(padded[z, :, i:i + PATCH, j:j + PATCH].unsqueeze(0).contiguous())[0, :, p, p]

    with torch.no_grad():
        loop(pick[:200])  # warm-up (oneDNN primitive creation on the first calls)
        start = time.perf_counter()
        loop(pick)
        return len(pick) / (time.perf_counter() - start)


def timed(inferer: PatchReassemblyInferer, net: nn.Module, volume: torch.Tensor) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = inferer(volume, net)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default=None, help="module:factory (default: the stand-in in this file)")
    parser.add_argument("--checkpoint", default=None, help="state dict to load into the network (weights_only)")
    parser.add_argument("--naive-voxels", type=int, default=2000, help="voxels timed in the naive loop")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all measurements, alternating")
    parser.add_argument("--n-slices", type=int, default=40)
    parser.add_argument("--memory-budget-mb", type=float, default=512)
    parser.add_argument("--batch-size", type=int, default=None, help="patches per call (default: from the budget)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    net = load_network(args.network, args.checkpoint).to(device)
    brain = load_atlas("spm1p5").brain
    gen = torch.Generator().manual_seed(0)
    volume = (torch.rand((1, 2, *brain.shape), generator=gen) * torch.from_numpy(brain)).to(device)
    options = {"n_slices": args.n_slices, "mask": "atlas:spm1p5", "memory_budget_mb": args.memory_budget_mb,
               "batch_size": args.batch_size}
    inferers = {
        "patches, centre": PatchReassemblyInferer(mode="centre", use_dense=False, **options),
        "patches, mean": PatchReassemblyInferer(mode="mean", **options),
    }
    has_dense = callable(getattr(net, "dense_centre_reconstruction", None))
    if has_dense:
        inferers["dense, centre"] = PatchReassemblyInferer(mode="centre", **options)
    region, slab = inferers["patches, centre"].region(brain.shape)
    n_vox = int(region.sum())
    print(f"network: {type(net).__name__} ({sum(p.numel() for p in net.parameters())} parameters)"
          f"{' [STAND-IN, random weights]' if args.network is None else ''}; device {device}, "
          f"{torch.get_num_threads()} threads; dense_centre_reconstruction: {'yes' if has_dense else 'no'}")
    print(f"volume 1x2x{'x'.join(map(str, brain.shape))}, slab {slab.start}:{slab.stop} ({args.n_slices} slices), "
          f"{n_vox} brain voxels reconstructed")

    rates: dict[str, list[float]] = {"naive loop": [], **{k: [] for k in inferers}}
    results: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        rates["naive loop"].append(naive_rate(net, volume, region, args.naive_voxels))
        for name, inferer in inferers.items():
            seconds, results[name] = timed(inferer, net, volume)
            rates[name].append(n_vox / seconds)
            print(f"  {name}: {seconds:.1f} s  {inferer.last_run}", flush=True)

    naive = max(rates["naive loop"])
    print(f"\n{'method':<18}{'voxels/s':>12}{'s/subject':>12}{'x naive':>10}   (best of {args.rounds} round(s))")
    for name, values in rates.items():
        rate = max(values)
        extra = f"  (extrapolated from {min(args.naive_voxels, n_vox)} voxels)" if name == "naive loop" else ""
        print(f"{name:<18}{rate:>12.0f}{n_vox / rate:>12.1f}{rate / naive:>10.1f}{extra}")
    if has_dense:
        m = torch.from_numpy(region).to(device)
        diff = (results["dense, centre"] - results["patches, centre"])[0][:, m].abs().max().item()
        print(f"\nmax |dense - patches| (centre mode, reconstructed voxels): {diff:.2e}")


if __name__ == "__main__":
    main()
