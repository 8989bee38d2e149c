"""Package a bundle for the Deploy app: ``model.ts`` (TorchScript) with the metadata and config inside.

``MonaiBundleInferenceOperator`` reads a TorchScript bundle: the scripted ``network_def`` plus
``extra/metadata.json`` and ``extra/inference.json``. This is MONAI's ``ckpt_export`` with one change to the
metadata it embeds: every output is declared ``"series"`` (the SDK casts an ``"image"`` output to uint8,
which would destroy a float map) and the anomaly map that the bundle's post-processing computes
(``ReconstructionErrord``'s ``error_key``) is added as an output, so the operator emits it.

    python integrations/deploy/package.py --bundle pd_ae [--ckpt bundles/pd_ae/models/model.pt] --out DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from common.errors import InputDataError
from integrations.bundles import BUNDLES_DIR, anomaly_map_key, available_bundles

__all__ = ["deploy_metadata", "package"]


def deploy_metadata(meta: dict, map_key: str, spatial_shape: list[int]) -> dict:
    """The bundle's metadata with float (``"series"``) outputs and the anomaly map declared as one."""
    meta = copy.deepcopy(meta)
    outputs = meta["network_data_format"]["outputs"]
    for spec in outputs.values():
        spec["type"] = "series"
    outputs[map_key] = {
        "type": "series", "format": "magnitude", "num_channels": 1, "spatial_shape": list(spatial_shape),
        "dtype": "float32", "value_range": [0, None], "is_patch_data": False,
        "channel_def": {"0": "voxel reconstruction error (the bundle's anomaly map)"},
    }
    meta["deploy_note"] = (f"packaged for MONAI Deploy: outputs declared 'series' (float), '{map_key}' added "
                           "as the anomaly map output")
    return meta


def package(bundle: str = "pd_ae", ckpt: str | os.PathLike | None = None, out: str | os.PathLike = "models") -> Path:
    """Export ``bundles/<bundle>``'s ``network_def`` with weights ``ckpt`` to ``<out>/model.ts``; returns its path.

    Raises :class:`~common.errors.InputDataError` naming the checkpoint when it is missing or does not fit.
    """
    if bundle not in available_bundles():
        raise ValueError(f"unknown bundle {bundle!r}; available: {', '.join(available_bundles())}")
    from monai.bundle import ckpt_export

    from common.bundle_support import check_bundle_weights
    from common.grids import get_grid

    configs = BUNDLES_DIR / bundle / "configs"
    ckpt = Path(ckpt) if ckpt is not None else configs.parent / "models" / "model.pt"
    if not ckpt.is_file():
        raise InputDataError(ckpt, f"file not found (trained weights of {bundle}: train the bundle or pass --ckpt)")
    check_bundle_weights(configs.parent, ckpt)  # empty, truncated, another network's: one error naming the file
    config = json.loads((configs / "inference.json").read_text())
    meta = json.loads((configs / "metadata.json").read_text())
    # the map lies on the input volume: the config's grid, else the (3D) network input's shape
    network_input = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
    shape = get_grid(config["grid"]).shape if "grid" in config else network_input
    meta = deploy_metadata(meta, anomaly_map_key(config), list(shape))

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "model.ts"
    with tempfile.TemporaryDirectory(dir=out, prefix=".package.") as tmp:
        meta_file = Path(tmp) / "metadata.json"
        meta_file.write_text(json.dumps(meta, indent=2))
        exported = Path(tmp) / "model.ts"
        try:
            ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(ckpt), meta_file=str(meta_file),
                        config_file=str(configs / "inference.json"), bundle_root=str(configs.parent))
        except (RuntimeError, KeyError, ValueError) as err:  # wrong architecture, not a state dict, ...
            raise InputDataError(ckpt, f"cannot load these weights into {bundle}'s network_def: {err}") from None
        os.replace(exported, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="pd_ae", help=f"one of {', '.join(available_bundles())}")
    parser.add_argument("--ckpt", default=None, help="weights (default: bundles/<bundle>/models/model.pt)")
    parser.add_argument("--out", default="models", help="folder that receives model.ts (default: models)")
    args = parser.parse_args(argv)
    try:
        path = package(args.bundle, args.ckpt, args.out)
    except (InputDataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
