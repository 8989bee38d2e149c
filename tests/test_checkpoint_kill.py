"""A training killed with SIGKILL at any moment, during checkpoint saving included, leaves a loadable best
checkpoint or none, never a broken one; the next run removes the temporaries the killed one left.

One subprocess imports torch, ignite and :mod:`common.handlers.checkpoint` once and forks a fresh "training"
per try (a tiny ignite engine whose every epoch improves the metric, so it saves every few milliseconds); the
test SIGKILLs each child at a seeded random time. Forking keeps 20 tries within seconds where 20 interpreter
starts would take minutes on a busy CI machine.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

SERVER = r"""
import os, sys
import torch
from ignite.engine import Engine, Events
from common.handlers.checkpoint import BestCheckpointSaver

torch.set_num_threads(1)
folder = sys.argv[1]


def network():
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))


def train(epochs):
    model = network()
    engine = Engine(lambda engine, batch: None)

    @engine.on(Events.EPOCH_COMPLETED)  # before the saver, as a MONAI evaluator's metrics are
    def metric(engine):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(engine.state.epoch))  # the file tells which epoch it holds
        engine.state.metrics = {"val_loss": 1.0 / engine.state.epoch}  # improves every epoch

    BestCheckpointSaver(folder, {"model": model}, negative_sign=True).attach(engine)
    engine.run([0], max_epochs=epochs)


for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            train(int(line))
            code = 0
        finally:
            os._exit(code)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""

TRIES = 20


def network():
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "model.pt")


def check_checkpoint(path: Path) -> int | None:
    """The epoch ``path`` holds (every tensor filled with it), or None without a file; fails on a broken one."""
    if not path.exists():
        return None
    state = torch.load(path, weights_only=True, map_location="cpu")
    net = network()
    net.load_state_dict(state, strict=True)
    values = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).unique()
    assert values.numel() == 1, f"tensors of different epochs in one checkpoint: {values[:5]}"
    return int(values.item())


@pytest.mark.slow  # about 25 s on a busy 2-core machine, mostly the one interpreter start
def test_sigkill_at_random_times_leaves_a_loadable_best_checkpoint_or_none(tmp_path):
    folder = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    rng = random.Random(0)
    outcomes = []
    try:
        for _ in range(TRIES):
            server.stdin.write(f"{10 ** 9}\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(pid, signal.SIGKILL)
            status = int(server.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
            left = temporaries(folder) if folder.exists() else []
            outcomes.append((check_checkpoint(folder / "model.pt"), len(left)))
        # a restart that runs to its end: the killed runs' temporaries are gone, its own best is in place
        server.stdin.write("3\n")
        server.stdin.flush()
        server.stdout.readline()
        assert int(server.stdout.readline()) == 0
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    assert temporaries(folder) == []
    assert check_checkpoint(folder / "model.pt") == 3
    # the kills landed at different moments: some before the first save, most between or during saves
    epochs = [epoch for epoch, _ in outcomes if epoch is not None]
    assert len(epochs) >= TRIES // 2 and len(set(epochs)) > 1, outcomes
    assert any(n_tmp for _, n_tmp in outcomes), f"no kill hit a save in progress: {outcomes}"
    print("kills: (epoch in model.pt, temporaries left)", outcomes)
