"""TorchScript export of every bundle with MONAI's own command, as a deployment (MONAI Deploy, Triton) gets it.

``python -m monai.bundle ckpt_export`` rebuilds ``network_def`` from the inference config, loads a checkpoint,
scripts the network and stores metadata.json and the config inside the ``.ts`` file. The test writes a seeded
checkpoint with random normalisation statistics (so buffers, not only parameters, must travel), exports it in
a subprocess as a user would, reloads it with ``monai.data.load_net_with_metadata`` and compares it with the
eager network on a random input of the shape metadata.json declares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import slow_cases

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def input_shape(meta: dict) -> tuple[int, ...]:
    """(1, C, *spatial) of the network's ``image`` input as metadata.json declares it."""
    image = meta["network_data_format"]["inputs"]["image"]
    return (1, int(image["num_channels"]), *(int(s) for s in image["spatial_shape"]))


def seeded_network(configs: Path, seed: int = 0) -> torch.nn.Module:
    """``network_def`` of the inference config, freshly initialised from ``seed``, with every floating buffer
    (BatchNorm running statistics) set to seeded random values too."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if buf.is_floating_point():
                buf.copy_(torch.rand_like(buf) + 0.5 if name.endswith("running_var") else torch.randn_like(buf) * 0.1)
    return net.eval()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")  # docs/design.md section 5.7
@pytest.mark.parametrize("bundle", slow_cases(BUNDLES, set(BUNDLES) - {"pd_ae"}))  # pd_ae in the quick lane
def test_ckpt_export_round_trip(bundle, tmp_path):
    configs = REPO / "bundles" / bundle / "configs"
    meta = json.loads((configs / "metadata.json").read_text())
    net = seeded_network(configs)
    ckpt, exported = tmp_path / "model.pt", tmp_path / "model.ts"
    torch.save(net.state_dict(), ckpt)

    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(exported),
           "--ckpt_file", str(ckpt), "--meta_file", str(configs / "metadata.json"),
           "--config_file", str(configs / "inference.json")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert exported.is_file()

    from monai.data import load_net_with_metadata

    loaded, loaded_meta, extra = load_net_with_metadata(str(exported), map_location="cpu",
                                                        more_extra_files=("inference.json",))
    assert isinstance(loaded, torch.jit.ScriptModule)
    # metadata.json travels unchanged (version, network_data_format, ...), and the config beside it
    assert loaded_meta == meta
    assert json.loads(extra["inference.json"]) == json.loads((configs / "inference.json").read_text())

    # the scripted network loaded the checkpoint (a fresh network_def would differ) and runs as the eager one
    loaded.eval()
    torch.manual_seed(1)
    x = torch.rand(input_shape(meta))
    with torch.no_grad():
        expected, got = net(x), loaded(x)
    assert isinstance(got, torch.Tensor), "the exported network must return one tensor (verify_net_in_out's pred)"
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    state = loaded.state_dict()
    for name, value in net.state_dict().items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=f"{bundle}: {name} not exported")
