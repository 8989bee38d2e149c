"""Every bundle's multi_gpu_train.json under torchrun: 2 CPU processes (gloo), a few iterations each.

The command is the one a user runs on a GPU node (``torchrun --standalone --nproc_per_node=N -m monai.bundle run
training --config_file "['train.json','multi_gpu_train.json']"``), plus a third config, written by the test,
that only records what each rank did: a line per iteration, a fingerprint of each batch (and the slices'
ids where the dataset gives them), and its final weights. The test then checks that both ranks trained on
different data, that DDP kept their parameters identical, and that the checkpoint holds rank 0's weights.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_run

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
WORLD = 2


def probe_config(configs: Path, out: Path) -> dict:
    """Config merged last: records per rank without changing what is trained."""
    multi = json.loads((configs / "multi_gpu_train.json").read_text())
    train = json.loads((configs / "train.json").read_text())
    return {
        "probe_dir": str(out),
        "probe_seen": "$[]",
        "probe_record": (
            "$lambda e: @probe_seen.append((float(e.state.batch['image'].double().sum()),"
            " [f'{i}:{int(z)}' for i, z in zip(e.state.batch.get('id', []), e.state.batch.get('z', []))]))"
            " or print(f'PROBE rank {dist.get_rank()} iteration {e.state.iteration}')"
        ),
        "run": ["$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED, @probe_record)",
                *multi.get("run", train["run"])],
        "finalize": [
            "$torch.save({'state': {k: v.detach().cpu() for k, v in @network_def.state_dict().items()},"
            " 'seen': @probe_seen, 'iterations': @train#trainer.state.iteration},"
            " os.path.join(@probe_dir, f'rank{dist.get_rank()}.pt'))",
            *multi.get("finalize", train["finalize"]),
        ],
    }


def run_group(cmd: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str]:
    """Run ``cmd`` in its own process group; on timeout (a collective that never completes) kill the launcher
    and its workers together, so no rank outlives the test."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s (a rank waiting in a collective?):\n{out[-5000:]}")
    return proc.returncode, out


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_torchrun_two_cpu_ranks(bundle, tmp_path, tiny_bundle_cohort):
    spec = tiny_run(bundle)
    cohort = tiny_bundle_cohort(spec["cohort"])
    configs = REPO / "bundles" / bundle / "configs"
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(probe_config(configs, tmp_path)))
    bundle_root = tmp_path / "bundle"
    overrides = {**spec["train"], **spec.get("multi_gpu", {}), "dataset_dir": str(cohort),
                 "bundle_root": str(bundle_root)}
    config_files = [str(configs / "train.json"), str(configs / "multi_gpu_train.json"), str(probe)]
    # torch.distributed.run is the module behind the torchrun script, run with this interpreter; each rank's
    # output goes to <log_dir>/<run>/attempt_0/<rank>/stdout.log and is echoed with a [default<rank>] prefix
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "--log-dir", str(tmp_path / "torchrun"), "--redirects", "3", "--tee", "3",
           "-m", "monai.bundle", "run", "training", "--config_file", repr(config_files),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           *[a for k, v in overrides.items() for a in (f"--{k}", repr(v))]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"  # two ranks share the CPU cores
    returncode, log = run_group(cmd, tmp_path, env, timeout=240)
    assert returncode == 0, log[-5000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    # both ranks trained, the same number of iterations, and each logged every one of them
    iterations = [r["iterations"] for r in ranks]
    assert iterations[0] == iterations[1] >= 2 and [len(r["seen"]) for r in ranks] == iterations
    rank_logs = {int(p.parent.name): p.read_text() for p in (tmp_path / "torchrun").rglob("stdout.log")}
    assert sorted(rank_logs) == list(range(WORLD)), log[-3000:]
    for r, text in rank_logs.items():
        logged = [(int(a), int(b)) for a, b in re.findall(r"^PROBE rank (\d+) iteration (\d+)$", text, flags=re.M)]
        assert logged == [(r, i) for i in range(1, iterations[r] + 1)], text[-3000:]
    # on different data: no batch in common, and no slice in common where the dataset names them
    sums = [{round(s, 3) for s, _ in r["seen"]} for r in ranks]
    assert not sums[0] & sums[1]
    items = [[i for _, ids in r["seen"] for i in ids] for r in ranks]
    if items[0]:
        assert not set(items[0]) & set(items[1]) and len(set(items[0] + items[1])) == len(items[0]) + len(items[1])

    # DDP kept the parameters identical (buffers such as BatchNorm statistics are per rank)
    states = [r["state"] for r in ranks]
    params = _parameter_names(configs / "train.json", overrides, states[0])
    for name in params:
        torch.testing.assert_close(states[1][name], states[0][name], rtol=0, atol=0, msg=f"{name} differs by rank")
    # the checkpoint (the best epoch is the only one) loads into the inference network as it is, without DDP's
    # "module." prefixes, and holds rank 0's weights
    saved = torch.load(bundle_root / "models" / "model.pt", weights_only=True)
    inference_net = _network(configs / "inference.json", spec["infer"])
    inference_net.load_state_dict(saved)  # strict: every key, no "module."
    for name, value in states[0].items():
        match = [k for k in saved if k == name or k.endswith("." + name)]
        assert len(match) == 1, (name, list(saved)[:5])
        torch.testing.assert_close(saved[match[0]], value, rtol=0, atol=0, msg=name)
    summary = json.loads((bundle_root / "models" / "train_summary.json").read_text())
    assert summary["epochs"] == spec["train"]["epochs"] and summary["iterations"] == iterations[0]
    # the logging handlers ran on rank 0 only (rank 1 keeps the ValidationHandler: the metric is all-reduced)
    assert re.search(r"Epoch: 1/\d+, Iter: 1/", rank_logs[0]) and "Key metric" in rank_logs[0]
    assert not re.search(r"Epoch: \d+/\d+, Iter: ", rank_logs[1]) and "Key metric" not in rank_logs[1]


def _network(config: Path, overrides: dict) -> torch.nn.Module:
    """A fresh ``network_def`` of ``config`` with the run's ``network_def#...`` overrides."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    for key, value in overrides.items():
        if key.startswith("network_def#") and key in parser:
            parser[key] = value
    return parser.get_parsed_content("network_def")


def _parameter_names(config: Path, overrides: dict, state: dict) -> set[str]:
    """Names of the trained network's parameters (not buffers)."""
    net = _network(config, overrides)
    assert set(net.state_dict()) == set(state)
    return {name for name, _ in net.named_parameters()}
