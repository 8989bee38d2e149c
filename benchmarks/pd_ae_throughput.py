"""pd_ae training throughput: the real data pipeline against the same model on tensors already in memory.

Both are measured side by side in one run, alternating, so machine noise affects both alike; the ratio is
the figure to trust. Also reports the wall time of one full paper-size epoch (41 training controls x 40
slices = 1640 slices, batch 40) through the bundle's own trainer.

    python benchmarks/pd_ae_throughput.py [--iterations 10] [--device cuda] [--amp]
"""

from __future__ import annotations

import argparse
import time

import torch
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer
from torch.utils.data import DataLoader

from common.data import read_dataset
from common.data.slices import AxialSliceDataset
from common.data.synthetic import default_cohort
from common.engines import prepare_reconstruction_batch
from common.networks import SpatialAE2d


def make_trainer(loader, device, amp, epoch_length=None):
    torch.manual_seed(0)
    net = SpatialAE2d().to(device)
    return SupervisedTrainer(device=device, max_epochs=1, epoch_length=epoch_length, train_data_loader=loader,
                             network=net,
                             decollate=False,  # as the bundle: nothing post-processes training batches
                             optimizer=torch.optim.Adam(net.parameters(), 1e-3), loss_function=torch.nn.L1Loss(),
                             inferer=SimpleInferer(), prepare_batch=prepare_reconstruction_batch, amp=amp)


def pipeline_rate(dataset, device, amp, iterations, batch_size):
    """Slices/s through DataLoader(AxialSliceDataset) + SupervisedTrainer, as the bundle trains."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(0), pin_memory=device.type == "cuda")
    trainer = make_trainer(loader, device, amp, epoch_length=iterations)
    sync(device)
    start = time.perf_counter()
    trainer.run()
    sync(device)
    return iterations * batch_size / (time.perf_counter() - start)


def memory_rate(dataset, device, amp, iterations, batch_size):
    """Slices/s of the same model, loss and optimiser on distinct batches already stacked on the device
    (made before the clock starts): the cost of training alone."""
    torch.manual_seed(0)
    net = SpatialAE2d().to(device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = torch.nn.L1Loss()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(1))
    batches = [dataset.slices[order[i * batch_size:(i + 1) * batch_size]].to(device) for i in range(iterations)]
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = loss_fn(net(batch), batch)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    sync(device)
    return iterations * batch_size / (time.perf_counter() - start)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)

    dataset_json = default_cohort("pd")
    subjects = read_dataset(dataset_json).controls
    paper_size = [subjects[i % len(subjects)] for i in range(41)]  # 41 training controls, as the paper
    start = time.perf_counter()
    dataset = AxialSliceDataset(paper_size, progress=False)
    load_s = time.perf_counter() - start
    print(f"device {device}, amp {args.amp}, torch threads {torch.get_num_threads()}")
    print(f"loading 41 volumes once into memory: {load_s:.1f} s -> {len(dataset)} slices, "
          f"{dataset.slices.element_size() * dataset.slices.nelement() / 2**20:.0f} MiB")

    pipeline_rate(dataset, device, args.amp, 2, args.batch_size)  # warm-up (allocator, cuDNN autotune)
    memory_rate(dataset, device, args.amp, 2, args.batch_size)
    pipe, mem = [], []
    for _ in range(args.rounds):
        pipe.append(pipeline_rate(dataset, device, args.amp, args.iterations, args.batch_size))
        mem.append(memory_rate(dataset, device, args.amp, args.iterations, args.batch_size))
    p, m = max(pipe), max(mem)
    print(f"pipeline (AxialSliceDataset + DataLoader + SupervisedTrainer): {p:8.1f} slices/s (best of {args.rounds})")
    print(f"in-memory tensors (same model, loss, optimiser):                {m:8.1f} slices/s (best of {args.rounds})")
    print(f"pipeline cost: {100 * (1 - p / m):+.1f} % of the in-memory rate (target <= 5 %)")

    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(0))
    trainer = make_trainer(loader, device, args.amp)
    sync(device)
    start = time.perf_counter()
    trainer.run()
    sync(device)
    epoch_s = time.perf_counter() - start
    print(f"one full epoch (1640 slices, batch {args.batch_size}): {epoch_s:.1f} s; "
          f"160 epochs ~ {160 * epoch_s / 60:.0f} min")


if __name__ == "__main__":
    main()
