"""Small functions the bundles' JSON configs call (``$common.bundle_support....``).

They keep configs declarative: where the bundle lives, where the default data comes from, and what a
finished training run leaves behind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

__all__ = ["check_settings", "load_weights", "locate_bundle_root", "require_file", "write_training_summary"]


def _config_file_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        elif arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        value = value.strip("[]'\" ").split(",")[0].strip("'\" ")
        return value or None
    return None


def locate_bundle_root(name: str) -> str:
    """The bundle's folder, whatever the working folder: the parent of the ``configs/`` folder named by
    ``--config_file`` on the command line; else the working folder if it is the bundle; else the bundle this
    package is vendored in (release zips); else the copy beside this package (``bundles/<name>``). Configs let
    ``--bundle_root`` override it."""
    config_file = _config_file_from_argv(sys.argv)
    if config_file:
        configs = Path(config_file).resolve().parent
        if configs.name == "configs":
            return str(configs.parent)
    cwd = Path.cwd()
    if (cwd / "configs" / "metadata.json").is_file() and cwd.name == name:
        return str(cwd)
    vendored = Path(__file__).resolve().parent.parent  # a release zip: the bundle holds its copy of common/
    if (vendored / "configs" / "metadata.json").is_file() and vendored.name == name:
        return str(vendored)
    repo_copy = vendored / "bundles" / name
    if (repo_copy / "configs").is_dir():
        return str(repo_copy)
    return str(cwd)


def require_file(path: str | os.PathLike, what: str) -> str:
    """Fail before any work starts when an input the workflow needs (e.g. weights) is missing."""
    if not Path(path).is_file():
        from common.errors import InputDataError

        raise InputDataError(path, f"file not found ({what})")
    return str(path)


def load_weights(module, path: str | os.PathLike, map_location="cpu", key: str = "model"):
    """Load trained weights into ``module`` (strictly) from a checkpoint holding its state dict, or a dict of
    state dicts with ``key`` (what MONAI's CheckpointSaver writes for several objects); ``weights_only``, so
    a checkpoint cannot run code. Returns the module."""
    import torch

    state = torch.load(require_file(path, "trained weights"), map_location=map_location, weights_only=True)
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        from common.errors import InputDataError

        raise InputDataError(path, f"the weights do not fit the {type(module).__name__} of this config: {err}") from None
    return module


def write_training_summary(trainer, evaluator, out_dir: str | os.PathLike) -> Path:
    """``train_summary.json`` beside the checkpoints: epochs run, final training loss, the best validation
    metric and its epoch (the epoch whose weights ``model.pt`` holds)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loss = trainer.state.output
    if isinstance(loss, list):
        loss = loss[-1] if loss else None
    if isinstance(loss, dict):
        loss = loss.get("loss")
    if hasattr(loss, "detach"):
        loss = loss.detach().float().item()
    summary = {
        "epochs": int(trainer.state.epoch),
        "iterations": int(trainer.state.iteration),
        "final_train_loss": None if loss is None else float(loss),
        "best_val_metric": None if evaluator.state.best_metric_epoch < 0 else float(evaluator.state.best_metric),
        "best_val_epoch": int(evaluator.state.best_metric_epoch),
        "key_metric": evaluator.state.key_metric_name,
    }
    path = out / "train_summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, path)
    print(f"training done: best {summary['key_metric']} {summary['best_val_metric']} at epoch {summary['best_val_epoch']}"
          f" -> {out / 'model.pt'}")
    return path


def check_settings(**settings) -> bool:
    """Refuse bad settings of a bundle run before any work (``--epochs 1.5``, ``--batch_size 0``, ``--amp maybe``):
    each must be of its kind and in its range (:data:`common.cli.RANGES`, :data:`common.cli.SETTING_KINDS`), else
    a :class:`~common.errors.SettingsError` names the setting and the config file. The train configs call it in
    ``initialize``, where MONAI's overrides have already replaced the configs' values."""
    from common.cli import SETTING_KINDS, check_value

    source = _config_file_from_argv(sys.argv)
    for name, value in settings.items():
        kind = SETTING_KINDS.get(name, "int")
        check_value(name, value, kind, option=f"--{name}", source=source, strict=True)
    return True
