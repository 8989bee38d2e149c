"""pd_sae pair sampling throughput: SiamesePairSampler against a naive per-patch MONAI crop loop, on one core.

Both draw pairs of 15x15 (FA, MD) patches centred at the same brain voxel of the analysed slab in two
different controls of the embedded synthetic PD cohort, from volumes already in memory. They are measured
side by side in one run, alternating rounds, best of ``--rounds``, with ``torch.set_num_threads(1)``:

- sampler: ``SiamesePairSampler.sample(n)``, a few calls in a row after an untimed one, i.e. sustained
  sampling (default contiguous NCHW patches, and ``channels_last=True``; a first call after other work is
  about 25 % slower, the store being partly evicted from the caches), and its training path:
  ``DataLoader(sampler, batch_size=None)``, 225 pairs a batch;
- naive: per pair, ``monai.transforms.SpatialCrop(roi_center=..., roi_size=(15, 15, 1))`` on two volumes
  zero-padded once by 7 voxels in x and y (``BorderPad``), in a Python loop, then ``torch.stack``;
- context: one training step of pd_sae's network and loss on a batch of 225 pairs (contiguous and
  channels_last input), i.e. what the sampler has to keep up with.

Rates are given by wall clock and by this thread's CPU time (what one core takes when the machine is shared).

    python benchmarks/pd_sae_sampler.py [--rounds 5] [--pairs 10000] [--calls 3] [--naive-pairs 2000]
"""

from __future__ import annotations

import argparse
import time
from itertools import islice

import numpy as np
import torch
from monai.transforms import BorderPad, SpatialCrop
from torch.utils.data import DataLoader

from common.data import read_dataset
from common.data.pairs import SiamesePairSampler
from common.data.synthetic import default_cohort
from common.transforms.io import LoadValidatedImage


def naive_pairs(volumes, centres, n_pairs, rng, patch_size=15):
    """Pairs as someone would cut them with MONAI transforms: one SpatialCrop per patch, in a Python loop."""
    h = patch_size // 2
    x1, x2 = [], []
    for _ in range(n_pairs):
        x, y, z = centres[rng.integers(len(centres))]
        a, b = rng.choice(len(volumes), 2, replace=False)
        crop = SpatialCrop(roi_center=(int(x) + h, int(y) + h, int(z)), roi_size=(patch_size, patch_size, 1))
        x1.append(crop(volumes[a])[..., 0])
        x2.append(crop(volumes[b])[..., 0])
    return torch.stack(x1), torch.stack(x2)


def measure(fn, n_pairs, rates):
    """Append (wall, CPU) pairs/s of one call of ``fn``; CPU time (this thread) is what one core would take
    on a machine shared with other work."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    rates.append((n_pairs / (time.perf_counter() - wall), n_pairs / (time.thread_time() - cpu)))


def repeat(fn, times, *args):
    """Call ``fn`` a few times, each result used and then freed (not kept alive together)."""
    for _ in range(times):
        fn(*args)


def consume(batches):
    """Iterate as a trainer does: each batch is taken, then freed before the next."""
    for _ in batches:
        pass


def sae_step(x, channels_last):
    """One training step of pd_sae's network and loss on a (2B, C, P, P) batch (context for the rates)."""
    from common.losses import SiameseReconstructionLoss
    from common.networks import SiamesePatchAE

    torch.manual_seed(0)
    net = SiamesePatchAE(in_channels=x.shape[1])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = SiameseReconstructionLoss()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), x).backward()
        opt.step()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=10_000, help="pairs per sample() call")
    parser.add_argument("--calls", type=int, default=3, help="sample() calls per round")
    parser.add_argument("--batches", type=int, default=100, help="training batches (225 pairs) per round")
    parser.add_argument("--naive-pairs", type=int, default=2000, help="pairs per round of the naive loop")
    args = parser.parse_args()
    torch.set_num_threads(1)

    controls = read_dataset(default_cohort("pd", progress=False)).controls
    start = time.perf_counter()
    sampler = SiamesePairSampler(controls, progress=False)
    load_s = time.perf_counter() - start
    loader = LoadValidatedImage("spm1p5", ["FA", "MD"])
    raw = [loader(c["image"]) for c in controls]  # MetaTensors (C, X, Y, Z), as LoadImage would give
    fast = SiamesePairSampler(controls, volumes=torch.stack([v.as_tensor() for v in raw]), channels_last=True,
                              progress=False)
    pad = BorderPad(spatial_border=(7, 7, 7, 7, 0, 0))
    padded = [pad(v) for v in raw]
    centres = sampler.centre_voxels  # the same allowed centres
    del raw
    print(f"{len(controls)} controls; sampler loaded them in {load_s:.1f} s (validated, 2 threads): "
          f"{sampler.nbytes / 2**20:.0f} MiB kept (slab {sampler.slab.start}..{sampler.slab.stop - 1}, "
          f"{sampler.n_centres} centres); torch threads {torch.get_num_threads()}")

    train_loader = DataLoader(sampler, batch_size=None, num_workers=0)
    rng = np.random.default_rng(0)
    batch = next(iter(train_loader))["image"]
    steps = {"step": sae_step(batch, False), "step_cl": sae_step(batch, True)}
    rates = {k: [] for k in ("sample", "sample_cl", "batches", "naive", "step", "step_cl")}
    naive_pairs(padded, centres, 20, rng)  # warm-up
    for _ in range(args.rounds):
        for key, s in (("sample", sampler), ("sample_cl", fast)):
            s.sample(args.pairs, rng)  # untimed: brings the store back into the caches the other work evicted
            measure(lambda s=s: repeat(s.sample, args.calls, args.pairs, rng), args.calls * args.pairs, rates[key])
        measure(lambda: consume(islice(iter(train_loader), args.batches)), args.batches * sampler.batch_size,
                rates["batches"])
        measure(lambda: naive_pairs(padded, centres, args.naive_pairs, rng), args.naive_pairs, rates["naive"])
        for key, step in steps.items():
            measure(step, batch.shape[0] // 2, rates[key])
    best = {k: (max(w for w, _ in v), max(c for _, c in v)) for k, v in rates.items()}
    labels = {
        "sample": f"SiamesePairSampler.sample({args.pairs}), contiguous",
        "sample_cl": f"SiamesePairSampler.sample({args.pairs}), channels_last",
        "batches": "DataLoader(sampler), batches of 225 pairs",
        "naive": f"naive MONAI SpatialCrop loop ({args.naive_pairs} pairs)",
        "step": "context: SAE training step, contiguous batch",
        "step_cl": "context: SAE training step, channels_last batch",
    }
    print(f"pairs/s, best of {args.rounds} alternating rounds, 1 thread{'wall':>20}{'CPU':>13}")
    for key, label in labels.items():
        print(f"  {label:<58}{best[key][0]:13,.0f}{best[key][1]:13,.0f}")
    for i, clock in enumerate(("wall", "CPU")):
        naive = best["naive"][i]
        print(f"ratio sampler / naive ({clock}): {best['sample'][i] / naive:,.0f}x contiguous, "
              f"{best['sample_cl'][i] / naive:,.0f}x channels_last, "
              f"{best['batches'][i] / naive:,.0f}x batches of 225")


if __name__ == "__main__":
    main()
