"""The paper protocols inside a time budget, for benchmarks/gpu.sh: how many epochs fit, and the closing table.

``epochs``: the epochs of ``bundle`` that fit in ``--seconds`` at the end-to-end rate measured by
``gpu_throughput.py`` (the best AMP-off row: the bundles train without AMP by default), after
``--fixed`` seconds of data loading and evaluation, with ``--overhead`` for the per-epoch validation; at least
1, at most the paper's. ``report``: one JSON and one markdown table of the runs gpu.sh made (bundle, epochs
asked and paper's, wall time, exit status), beside the throughput table.

    python benchmarks/gpu_protocol.py epochs --throughput DIR/throughput.json --bundle pd_ae --seconds 150
    python benchmarks/gpu_protocol.py report --runs DIR/runs.jsonl --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_throughput import PAPER

from common.data._jsonio import write_json_atomic, write_text_atomic


def epochs_that_fit(rate_per_s: float, epoch_items: int, seconds: float, fixed_s: float = 0.0,
                    overhead: float = 0.25, paper_epochs: int | None = None) -> int:
    """Whole epochs of ``epoch_items`` at ``rate_per_s`` in ``seconds - fixed_s``, each costing ``1 + overhead``
    times its training steps (validation); clipped to [1, paper_epochs]."""
    if rate_per_s <= 0 or epoch_items <= 0:
        raise ValueError(f"need a positive rate and epoch size, got {rate_per_s}, {epoch_items}")
    n = math.floor(max(0.0, seconds - fixed_s) * rate_per_s / (epoch_items * (1.0 + overhead)))
    return max(1, n if paper_epochs is None else min(n, paper_epochs))


def training_rate(throughput: dict, bundle: str) -> float:
    """The end-to-end rate of ``bundle`` without AMP from ``gpu_throughput.py``'s JSON."""
    rows = [r for r in throughput["bundles"][bundle]["rows"] if not r["amp"] and r["status"] == "ok"]
    if not rows:
        raise ValueError(f"no AMP-off rate of {bundle} in the throughput figures")
    return rows[0]["end_to_end_per_s"]


def report(runs: list[dict], out: Path) -> None:
    write_json_atomic(out / "protocol.json", {"runs": runs})
    lines = ["| bundle | epochs run | paper epochs | epoch size | wall (s) | status |", "|---|---|---|---|---|---|"]
    for r in runs:
        status = {0: "done", 124: "stopped at its time budget", 137: "killed at its time budget",
                  -1: "skipped: no time left"}.get(
            r["exit_code"], f"failed (exit {r['exit_code']})")
        lines.append(f"| {r['bundle']} | {r['epochs']} | {PAPER[r['bundle']]['epochs']} | {r['epoch_items']:,} "
                     f"{PAPER[r['bundle']]['unit']} | {r['wall_s']:.0f} | {status} |")
    write_text_atomic(out / "protocol.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("epochs")
    e.add_argument("--throughput", required=True)
    e.add_argument("--bundle", required=True, choices=sorted(PAPER))
    e.add_argument("--seconds", type=float, required=True)
    e.add_argument("--fixed", type=float, default=0.0)
    e.add_argument("--overhead", type=float, default=0.25)
    e.add_argument("--epoch-items", type=int, help="items per epoch (default: the paper's)")
    r = sub.add_parser("report")
    r.add_argument("--runs", required=True, help="one JSON object a line: bundle, epochs, epoch_items, wall_s, "
                                                 "exit_code")
    r.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "epochs":
        rate = training_rate(json.loads(Path(args.throughput).read_text()), args.bundle)
        items = args.epoch_items or PAPER[args.bundle]["epoch_items"]
        print(epochs_that_fit(rate, items, args.seconds, args.fixed, args.overhead, PAPER[args.bundle]["epochs"]))
    else:
        path = Path(args.runs)
        runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
        report(runs, Path(args.out))


if __name__ == "__main__":
    main()
