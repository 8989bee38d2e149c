"""Training throughput of every bundle on one device, with and without AMP, and the data path's efficiency.

For each bundle the trainer is built from its own ``configs/train.json`` (dataset, data loader, network, loss,
optimiser and ``SupervisedTrainer``/``VAETrainer``, with the validation and logging handlers left out: they are
not the training step), on the controls of a cohort, and two things are timed, alternating, best of ``--rounds``:

- end-to-end: ``--iterations`` steps through the bundle's own data loader (pd_ae: in-memory slices,
  pd_sae: the siamese pair sampler, ad_vae3d: the cached volumes), as training runs;
- compute-only: the same trainer, the same number of steps, on batches taken from that loader beforehand and
  already on the device: the cost of the steps alone.

Efficiency = compute-only time / end-to-end time (1: the data path costs nothing; the target on a GPU is >= 0.9).
Rates are items per second: pd_ae slices/s, pd_sae pairs/s, ad_vae3d volumes/s. AMP is MONAI's (``amp=True``:
CUDA autocast and a gradient scaler); where it cannot run (no CUDA) its rows say so instead of a rate. Also gives
the paper schedules' training time per run at the measured rates (pd_ae 160 epochs of 41 x 40 slices, pd_sae
30 epochs of 300,000 pairs, ad_vae3d 300 epochs of 237 volumes).

Writes ``throughput.json`` and ``throughput.md`` (a table) to ``--out``.

    python benchmarks/gpu_throughput.py --device cuda --pd PD/dataset.json --pet PET/dataset.json --out DIR
    python benchmarks/gpu_throughput.py --device cpu --quick --out DIR   # narrow networks, tiny batches: < 1 min
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch

from common.data import read_dataset
from common.data._jsonio import write_json_atomic, write_text_atomic
from common.paths import bundle_dir

#: unit of a training item, the paper's epoch (items) and number of epochs, per bundle
PAPER = {
    "pd_ae": {"unit": "slices", "epoch_items": 41 * 40, "epochs": 160},
    "pd_sae": {"unit": "pairs", "epoch_items": 300_000, "epochs": 30},
    "ad_vae3d": {"unit": "volumes", "epoch_items": 237, "epochs": 300},
}

#: (config overrides, items per batch) of each bundle: the paper's batches, or tiny ones with narrow networks
FULL = {
    "pd_ae": ({"batch_size": 40, "train#dataset#num_threads": 8}, 40),
    "pd_sae": ({"pairs_per_batch": 225, "train#dataset#num_threads": 8}, 225),
    "ad_vae3d": ({"batch_size": 24, "cache_workers": 8}, 24),
}
QUICK = {
    "pd_ae": ({"batch_size": 4, "n_slices": 4, "network_def#channels": [4, 8, 8]}, 4),
    "pd_sae": ({"pairs_per_batch": 16, "n_slices": 4, "network_def#features": 4}, 16),
    "ad_vae3d": ({"batch_size": 2, "cache_workers": 1, "network_def#channels": [4, 8, 8],
                  "network_def#decoder_channels": [8, 8, 4], "network_def#latent_size": 8}, 2),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_unavailable(device: torch.device) -> str | None:
    """Why MONAI's AMP cannot run here, or None: its trainers autocast CUDA only."""
    if device.type != "cuda":
        return f"unavailable: MONAI's trainers autocast on CUDA only (device {device.type})"
    return None


def build_trainer(bundle: str, subjects: list[dict], device: torch.device, iterations: int, overrides: dict):
    """The bundle's training engine from its train.json: its dataset, loader, network, loss and optimiser, no
    handlers, one epoch of ``iterations`` steps (each ``run()`` starts again)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir(bundle) / "configs" / "train.json"))
    parser["train#subjects"] = subjects
    parser["device"] = f"$torch.device('{device}')"
    parser["progress"] = False
    for key, value in overrides.items():
        parser[key] = value
    if bundle == "pd_sae":  # one epoch of the sampler = one measurement
        parser["pairs_per_epoch"] = parser["pairs_per_batch"] * iterations
    parser["train#trainer#train_handlers"] = []
    parser["train#trainer#epoch_length"] = iterations
    parser["train#trainer#max_epochs"] = 1
    torch.manual_seed(0)
    return parser.get_parsed_content("train#trainer")


def set_amp(trainer, amp: bool) -> None:
    """Switch MONAI's AMP on the built trainer (what ``amp=True`` in the config sets up)."""
    trainer.amp = amp
    trainer.scaler = torch.amp.GradScaler("cuda") if amp else None


def clock(device: torch.device):
    """Wall clock on a GPU (the device works while the host waits); on a CPU this process's CPU time, which a
    machine shared with other work does not inflate (the data path and the steps both run on the CPU)."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def timed_run(trainer, data, device: torch.device, iterations: int) -> float:
    """Seconds of ``iterations`` training steps over ``data``, one epoch of the engine (Ignite's own ``run``:
    MONAI's would set the epoch length to ``len(data)`` on a restart); a loader shorter than that starts again,
    reshuffled, as between training epochs."""
    from ignite.engine import Engine

    trainer.data_loader = data
    now = clock(device)
    sync(device)
    start = now()
    Engine.run(trainer, data, max_epochs=1, epoch_length=iterations)
    sync(device)
    elapsed = now() - start
    if trainer.state.iteration != iterations:
        raise RuntimeError(f"ran {trainer.state.iteration} steps instead of {iterations}")
    return elapsed


def premade_batches(loader, n: int, device: torch.device) -> list[dict]:
    """``n`` batches of the bundle's loader, already on the device (the compute-only run's data)."""
    batches = []
    while len(batches) < n:
        for batch in loader:
            batches.append({"image": torch.as_tensor(batch["image"]).to(device)})
            if len(batches) == n:
                break
    sync(device)
    return batches


def measure(trainer, device: torch.device, iterations: int, rounds: int, per_batch: int) -> dict:
    """End-to-end and compute-only rates of ``iterations`` steps, alternating, best of ``rounds``."""
    loader = trainer.data_loader
    premade = premade_batches(loader, iterations, device)
    timed_run(trainer, loader, device, iterations)  # warm-up: allocator, cuDNN's algorithm choice
    timed_run(trainer, premade, device, iterations)
    e2e, compute = [], []
    for _ in range(rounds):
        e2e.append(timed_run(trainer, loader, device, iterations))
        compute.append(timed_run(trainer, premade, device, iterations))
    trainer.data_loader = loader
    items = iterations * per_batch
    t_e2e, t_compute = min(e2e), min(compute)
    return {"status": "ok", "end_to_end_per_s": items / t_e2e, "compute_only_per_s": items / t_compute,
            "efficiency": t_compute / t_e2e, "step_ms": 1e3 * t_e2e / iterations,
            "compute_step_ms": 1e3 * t_compute / iterations}


def bundle_rows(bundle: str, subjects: list[dict], device: torch.device, quick: bool, iterations: int,
                rounds: int) -> dict:
    overrides, per_batch = (QUICK if quick else FULL)[bundle]
    start = time.perf_counter()
    trainer = build_trainer(bundle, subjects, device, iterations, overrides)
    build_s = time.perf_counter() - start
    rows = []
    for amp in (False, True):
        why = amp_unavailable(device) if amp else None
        if why:
            rows.append({"amp": amp, "status": why})
            continue
        set_amp(trainer, amp)
        rows.append({"amp": amp, **measure(trainer, device, iterations, rounds, per_batch)})
        print(f"  {bundle} amp={amp}: {rows[-1]['end_to_end_per_s']:,.1f} {PAPER[bundle]['unit']}/s end-to-end, "
              f"{rows[-1]['compute_only_per_s']:,.1f} compute-only, efficiency {rows[-1]['efficiency']:.3f}",
              flush=True)
    del trainer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    ok = [r for r in rows if r["status"] == "ok"]
    best = max(r["end_to_end_per_s"] for r in ok)
    paper = PAPER[bundle]
    return {"unit": paper["unit"], "batch_size": per_batch, "iterations": iterations, "rounds": rounds,
            "subjects": len(subjects), "build_s": build_s, "rows": rows,
            "amp_speedup": (ok[1]["end_to_end_per_s"] / ok[0]["end_to_end_per_s"]) if len(ok) == 2 else None,
            "paper_schedule_h": paper["epochs"] * paper["epoch_items"] / best / 3600}


def markdown(result: dict) -> str:
    lines = [f"Training throughput on {result['device_name']} (torch {result['torch']}"
             f"{', quick mode: narrow networks, tiny batches' if result['quick'] else ''}; {result['clock']}); "
             "efficiency = compute-only time / end-to-end time.", "",
             "| bundle | unit | batch | AMP | end-to-end /s | compute-only /s | efficiency | AMP speed-up "
             "| paper schedule (h) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, b in result["bundles"].items():
        for row in b["rows"]:
            speedup = f"{b['amp_speedup']:.2f}x" if row["amp"] and b["amp_speedup"] else ""
            cells = [row["status"], "", ""]
            if row["status"] == "ok":
                cells = [f"{row[k]:,.1f}" for k in ("end_to_end_per_s", "compute_only_per_s")] + [
                    f"{row['efficiency']:.3f}"]
            hours = f"{b['paper_schedule_h']:.2f}" if not row["amp"] else ""
            lines.append(f"| {name} | {b['unit']} | {b['batch_size']} | {'on' if row['amp'] else 'off'} | "
                         f"{' | '.join(cells)} | {speedup} | {hours} |")
    lines += ["", "Paper schedule: pd_ae 160 epochs x 1640 slices, pd_sae 30 x 300,000 pairs, ad_vae3d 300 x 237 "
              "volumes, at the best end-to-end rate (training steps only, no validation)."]
    return "\n".join(lines) + "\n"


def controls(dataset_json: str | Path, n: int) -> list[dict]:
    """The first ``n`` controls (all of them if fewer) of a cohort, as training entries."""
    subjects = list(read_dataset(dataset_json).controls)[:n]
    if len(subjects) < 2:
        raise SystemExit(f"error: {dataset_json} has fewer than 2 controls")
    return subjects


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="narrow networks and tiny batches (tests, CPU)")
    parser.add_argument("--pd", help="PD cohort's dataset.json (default: the embedded demo cohort)")
    parser.add_argument("--pet", help="PET cohort's dataset.json (default: the embedded demo cohort)")
    parser.add_argument("--bundles", default="pd_ae,pd_sae,ad_vae3d")
    parser.add_argument("--iterations", type=int, help="steps per timed run (default 40, quick 3)")
    parser.add_argument("--rounds", type=int, help="alternating rounds, best of (default 3, quick 5)")
    parser.add_argument("--out", default="outputs/benchmarks/throughput")
    parser.add_argument("--append", action="store_true",
                        help="add these bundles to the figures already in --out (gpu.sh measures the PET bundle "
                             "while the PD cohort is still being written)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    iterations = args.iterations or (3 if args.quick else 40)
    rounds = args.rounds or (5 if args.quick else 3)
    bundles = [b.strip() for b in args.bundles.split(",") if b.strip()]
    unknown = sorted(set(bundles) - set(PAPER))
    if unknown:
        raise SystemExit(f"error: unknown bundles {unknown}; expected some of {sorted(PAPER)}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")

    from common.data.synthetic import default_cohort

    pd = args.pd if args.pd or not {"pd_ae", "pd_sae"} & set(bundles) else default_cohort("pd", progress=False)
    pet = args.pet if args.pet or "ad_vae3d" not in bundles else default_cohort("pet", progress=False)
    n_train = {"pd_ae": 2 if args.quick else 41, "pd_sae": 3 if args.quick else 41, "ad_vae3d": 2 if args.quick else 48}
    result = {"device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
              or "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
              "clock": "wall" if device.type == "cuda" else "process CPU time",
              "cohorts": {"pd": str(pd) if pd else None, "pet": str(pet) if pet else None}, "bundles": {}}
    print(f"device {result['device_name']}, torch {torch.__version__}, {iterations} steps x {rounds} rounds",
          flush=True)
    for bundle in bundles:
        subjects = controls(pet if bundle == "ad_vae3d" else pd, n_train[bundle])
        result["bundles"][bundle] = bundle_rows(bundle, subjects, device, args.quick, iterations, rounds)
    out = Path(args.out)
    if args.append and (out / "throughput.json").is_file():
        earlier = json.loads((out / "throughput.json").read_text())
        result["bundles"] = {**earlier["bundles"], **result["bundles"]}
        result["cohorts"] = {k: v or earlier["cohorts"].get(k) for k, v in result["cohorts"].items()}
    write_json_atomic(out / "throughput.json", result)
    table = markdown(result)
    write_text_atomic(out / "throughput.md", table)
    print(table)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
