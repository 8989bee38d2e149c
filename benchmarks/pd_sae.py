"""pd_sae benchmarks in one run: the pair sampler against a naive MONAI per-patch crop pipeline, training
through the sampler against the same training on pairs already in memory, and dense patch reassembly of
one subject against a naive per-patch loop. Every comparison is measured side by side (alternating rounds);
the ratios are the figures to trust on a shared machine.

    python benchmarks/pd_sae.py [--rounds 3] [--iterations 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pd_sae_reassembly
import pd_sae_sampler

from common.data import read_dataset
from common.data.pairs import SiamesePairSampler
from common.data.synthetic import default_cohort
from common.engines import prepare_reconstruction_batch
from common.losses import SiameseReconstructionLoss
from common.networks import SiamesePatchAE


def trainer_rate(loader, iterations: int) -> float:
    """Pairs/s of the bundle's trainer (network, loss, Adam) over ``iterations`` batches of ``loader``."""
    torch.manual_seed(0)
    net = SiamesePatchAE()
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, epoch_length=iterations,
                                train_data_loader=loader, network=net,
                                optimizer=torch.optim.Adam(net.parameters(), 1e-3),
                                loss_function=SiameseReconstructionLoss(), inferer=SimpleInferer(),
                                prepare_batch=prepare_reconstruction_batch, decollate=False)
    start = time.perf_counter()
    trainer.run()
    return iterations * 225 / (time.perf_counter() - start)


def training_comparison(rounds: int, iterations: int) -> None:
    controls = read_dataset(default_cohort("pd", progress=False)).controls
    sampler = SiamesePairSampler(controls, channels_last=True, progress=False,
                                 pairs_per_epoch=225 * iterations * (rounds + 1))
    in_memory = list(sampler.batches(99))[:iterations]  # the same kind of batches, made before the clock starts
    through, memory = [], []
    for _ in range(rounds):
        through.append(trainer_rate(DataLoader(sampler, batch_size=None, num_workers=0), iterations))
        memory.append(trainer_rate(DataLoader(in_memory, batch_size=None, num_workers=0), iterations))
    t, m = max(through), max(memory)
    print("\ntraining (SiamesePatchAE + siamese loss + Adam, batches of 225 pairs, "
          f"{torch.get_num_threads()} threads):")
    print(f"  through the pair sampler: {t:9,.0f} pairs/s   pairs already in memory: {m:9,.0f} pairs/s   "
          f"sampler cost {100 * (1 - t / m):+.1f} % (target <= 5 %)")
    print(f"  a paper epoch (300,000 pairs) ~ {300_000 / t:.0f} s; 30 epochs ~ {30 * 300_000 / t / 60:.0f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    print("== pair sampler vs naive MONAI per-patch crops")
    sys.argv = [sys.argv[0], "--rounds", str(args.rounds)]
    pd_sae_sampler.main()
    torch.set_num_threads(2)
    print("\n== training through the sampler vs pairs in memory")
    training_comparison(args.rounds, args.iterations)
    print("\n== dense reassembly of one subject (real PatchAE2d, random weights) vs a naive per-patch loop")
    sys.argv = [sys.argv[0], "--network", "common.networks:PatchAE2d", "--rounds", "1"]
    pd_sae_reassembly.main()


if __name__ == "__main__":
    main()
