"""ad_vae3d training throughput and memory: the bundle's own pipeline against tensors already in memory.

Throughput: the dataset, dataloader and trainer are built from ``bundles/ad_vae3d/configs/train.json``
(CacheDataset of validated, min-max normalised volumes, MONAI DataLoader, VAETrainer; the validation and
logging handlers are left out: they are not the training step), and compared with the same network, loss
and optimiser stepping on batches already stacked in memory. Both are measured side by side, alternating,
so machine noise affects both alike; the ratio is the figure to trust.

Peak memory of one training step at ``--batch-size``: on CUDA ``torch.cuda.max_memory_allocated``; on CPU
the growth of the process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) across the first
step, in a fresh process (a high-water mark cannot be reset). tracemalloc does not see torch's allocator.
The first step includes Adam's state (two copies of the 80 M parameters), so it is the step's worst case.

    python benchmarks/ad_vae3d.py [--batch-size 24] [--iterations 1] [--rounds 3] [--device cuda] [--amp]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time

import torch

from common.paths import bundle_dir

CONFIG = bundle_dir("ad_vae3d") / "configs" / "train.json"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bundle_parser(subjects: list[dict], batch_size: int, device: torch.device, amp: bool, iterations: int):
    """The bundle's train.json with the benchmark's subjects, batch size and length; no handlers."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser["train#subjects"] = subjects
    parser["batch_size"], parser["amp"], parser["progress"] = batch_size, amp, False
    parser["device"] = f"$torch.device('{device}')"
    parser["train#trainer#train_handlers"] = []
    parser["train#trainer#epoch_length"] = iterations
    parser["train#trainer#max_epochs"] = 1
    return parser


def pipeline_rate(trainer, device, iterations, batch_size):
    """Volumes/s of ``iterations`` steps of the bundle's trainer (each ``run()`` restarts it for one epoch)."""
    sync(device)
    start = time.perf_counter()
    trainer.run()
    sync(device)
    assert trainer.state.iteration == iterations
    return iterations * batch_size / (time.perf_counter() - start)


def memory_rate(volumes: torch.Tensor, device, amp, iterations, batch_size):
    """Volumes/s of the same network, loss and optimiser on batches already on the device."""
    from common.losses import VAELoss
    from common.networks import VAE3d

    torch.manual_seed(0)
    net = VAE3d().to(device).train()
    opt = torch.optim.Adam(net.parameters(), 1e-5)
    loss_fn = VAELoss()
    order = torch.randperm(len(volumes), generator=torch.Generator().manual_seed(1))
    batches = [volumes[order[(i * batch_size + torch.arange(batch_size)) % len(volumes)]].to(device)
               for i in range(iterations)]
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


def _step_memory(batch_size: int, device: str, amp: bool, queue) -> None:
    """In a fresh process: resident / allocated memory before and at the peak of one training step."""
    from common.losses import VAELoss
    from common.networks import VAE3d

    dev = torch.device(device)
    torch.manual_seed(0)
    net = VAE3d().to(dev).train()
    opt = torch.optim.Adam(net.parameters(), 1e-5)
    batch = torch.rand(batch_size, 1, 80, 96, 80, device=dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, enabled=amp):
            loss = VAELoss()(net(batch), batch)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync(dev)

    if dev.type == "cuda":
        sync(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step()
        queue.put(("cuda max_memory_allocated", before, torch.cuda.max_memory_allocated(dev)))
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        step()
        queue.put(("ru_maxrss", before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def step_memory(batch_size: int, device: torch.device, amp: bool) -> tuple[str, int, int]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_step_memory, args=(batch_size, str(device), amp, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--iterations", type=int, default=4, help="training steps per measurement (one epoch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)

    from common.data import read_dataset
    from common.data.synthetic import default_cohort
    from common.networks import VAE3d, VAEReconstructor

    print(f"device {device}, amp {args.amp}, torch threads {torch.get_num_threads()}, batch {args.batch_size}")
    method, before, peak = step_memory(args.batch_size, device, args.amp)
    print(f"one training step at batch {args.batch_size} ({method}): {before / 2**30:.2f} GiB before "
          f"(network, batch), peak {peak / 2**30:.2f} GiB, the step adds {(peak - before) / 2**30:.2f} GiB "
          "(activations, gradients, Adam state)")

    controls = read_dataset(default_cohort("pet", progress=False)).controls
    # one epoch of the pipeline = `iterations` full batches, so a run's fixed start-up cost is spread as in training
    subjects = [controls[i % len(controls)] for i in range(max(args.batch_size * args.iterations, len(controls)))]
    start = time.perf_counter()
    config = bundle_parser(subjects, args.batch_size, device, args.amp, args.iterations)
    torch.manual_seed(0)
    dataset, trainer = config.get_parsed_content("train#dataset"), config.get_parsed_content("train#trainer")
    print(f"bundle CacheDataset of {len(subjects)} volumes (validated, normalised, cached): "
          f"{time.perf_counter() - start:.1f} s")
    pipeline_rate(trainer, device, args.iterations, args.batch_size)  # warm-up
    volumes = torch.stack([item["image"].as_tensor() for item in dataset])
    memory_rate(volumes, device, args.amp, args.iterations, args.batch_size)  # warm-up
    pipe, mem = [], []
    for r in range(args.rounds):
        pipe.append(pipeline_rate(trainer, device, args.iterations, args.batch_size))
        mem.append(memory_rate(volumes, device, args.amp, args.iterations, args.batch_size))
        print(f"round {r + 1}: pipeline {pipe[-1]:.3f} vol/s, in-memory {mem[-1]:.3f} vol/s", flush=True)
    p, m = max(pipe), max(mem)
    print(f"pipeline (bundle CacheDataset + DataLoader + VAETrainer): {p:7.3f} volumes/s (best of {args.rounds})")
    print(f"in-memory tensors (same network, loss, optimiser):        {m:7.3f} volumes/s (best of {args.rounds})")
    print(f"pipeline cost: {100 * (1 - p / m):+.1f} % of the in-memory rate (target <= 5 %)")
    # the data path alone (DataLoader over the cache + collation + prepare_batch): a direct measure of the
    # pipeline's share that a busy machine does not blur as much as the ratio of two training runs
    loader = config.get_parsed_content("train#dataloader")
    prepare = config.get_parsed_content("train#trainer").prepare_batch
    start, n = time.perf_counter(), 0
    for _ in range(3):
        for batch in loader:
            prepare(batch, device)
            n += 1
    data_s = (time.perf_counter() - start) / n
    print(f"data path alone: {data_s * 1e3:.0f} ms per batch of {args.batch_size} = "
          f"{100 * data_s / (args.batch_size / m):.2f} % of an in-memory training step")

    net = VAEReconstructor(VAE3d()).to(device).eval()
    x = volumes[:1].to(device)
    with torch.no_grad():
        net(x)
        sync(device)
        start = time.perf_counter()
        for _ in range(3):
            net(x)
        sync(device)
    print(f"inference (deterministic reconstruction, one volume): {(time.perf_counter() - start) / 3:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
