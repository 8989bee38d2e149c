"""Small functions the bundles' JSON configs call (``$common.bundle_support....``).

They keep configs declarative: where the bundle lives, where the default data comes from, and what a
finished training run leaves behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path

__all__ = ["check_bundle_weights", "check_settings", "load_weights", "locate_bundle_root", "prepare_model_dir",
           "require_file", "require_writable_dir", "resolve_bundle_root", "write_training_summary"]

#: where :func:`prepare_model_dir` moves the summary of a finished run that ``--overwrite true`` replaces
PREVIOUS_SUMMARY = "train_summary.previous.json"


def _config_file_from_argv(argv: list[str]) -> str | None:
    """The first ``--config_file`` of a ``monai.bundle`` command line: only to name the file in a settings
    error (:func:`check_settings`); where the bundle lives never depends on it."""
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
    """The folder of bundle ``name``, found without reading the command line: the working folder if it is the
    bundle (model-zoo runs a bundle from its folder); else the bundle this package is vendored in (release
    zips); else the copy beside this package (``bundles/<name>``, the repository); else the working folder."""
    cwd = Path.cwd()
    if (cwd / "configs" / "metadata.json").is_file() and cwd.name == name:
        return str(cwd)
    vendored = Path(__file__).resolve().parent.parent  # a release zip: the bundle holds its copy of common/
    if (vendored / "configs" / "metadata.json").is_file() and vendored.name == name:
        return str(vendored)
    from common.paths import bundle_dir

    repo_copy = bundle_dir(name)
    if (repo_copy / "configs").is_dir():
        return str(repo_copy)
    return str(cwd)


def resolve_bundle_root(bundle_root: str | os.PathLike, name: str) -> str:
    """Where bundle ``name`` keeps ``models/``, ``logs/`` and ``eval/``. The configs say ``"bundle_root": "."``
    as model-zoo's do, and ``"."`` means the bundle's own folder (:func:`locate_bundle_root`), so
    ``python -m monai.bundle run training --config_file bundles/<name>/configs/train.json`` from the repository
    root writes into ``bundles/<name>`` as it does from the bundle's folder. Any other value (``--bundle_root
    DIR``, or the absolute path MONAI Label and FL pass) is used as given."""
    return locate_bundle_root(name) if os.fspath(bundle_root) == "." else os.fspath(bundle_root)


def require_file(path: str | os.PathLike, what: str) -> str:
    """Fail before any work starts when an input the workflow needs (e.g. weights) is missing."""
    if not Path(path).is_file():
        from common.errors import InputDataError

        raise InputDataError(path, f"file not found ({what})")
    return str(path)


def require_writable_dir(path: str | os.PathLike, what: str) -> str:
    """Fail before any work starts when the output folder ``path`` cannot be created or written (a file in the
    way, a read-only parent, a full disk), instead of after hours of training. A probe file is written and
    removed in the folder, or in its nearest existing parent when the folder does not exist yet, so a check that
    passes leaves nothing behind (a run refused by a later check writes no empty folders). Returns ``path``."""
    import secrets

    from common.errors import InputDataError

    folder = Path(path)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        where = "is" if existing == folder else f"cannot be created: {existing} is"
        raise InputDataError(folder, f"{where} a file, not a folder ({what})")
    try:
        probe = existing / f".write-probe-{os.getpid()}-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputDataError(folder, f"not writable ({what}): {err.strerror or err}") from None
    return str(path)


def _as_bool(value, name: str) -> bool:
    """A flag from a config or the command line (MONAI's runner passes ``--overwrite true`` as the string 'true')."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none"):
        return False
    from common.errors import InputDataError

    raise InputDataError(None, f"--{name} must be true or false, got {value!r}")


def prepare_model_dir(ckpt_dir: str | os.PathLike, overwrite=False) -> str:
    """Protect a finished training before a new one starts (a config's ``initialize``, before any data is read).

    A ``train_summary.json`` in ``ckpt_dir`` marks a finished run: without ``overwrite`` this refuses, naming
    the folder and the ways on. With it, the summary is moved aside to ``train_summary.previous.json`` (it must
    not describe a run that is still incomplete) and the old ``model.pt`` stays until the new run saves its
    first best (:class:`~common.handlers.BestCheckpointSaver` replaces it atomically). A ``model.pt`` without
    a summary is what an interrupted run leaves: it is replaced, with a warning. Returns the folder."""
    import logging

    from common.errors import InputDataError

    folder = Path(ckpt_dir)
    if folder.exists() and not folder.is_dir():
        raise InputDataError(folder, "exists but is not a folder: the training writes model.pt and "
                                     "train_summary.json there; remove it or pass another --bundle_root")
    summary = folder / "train_summary.json"
    if summary.is_file():
        if not _as_bool(overwrite, "overwrite"):
            raise InputDataError(folder, "holds a finished training (train_summary.json and its model.pt); refusing "
                                         "to overwrite it. Pass --overwrite true to train anew (the old model.pt "
                                         "stays until the new run saves its first best), or train into another "
                                         "folder with --bundle_root DIR")
        with contextlib.suppress(FileNotFoundError):  # another rank of the same multi-GPU run moved it first
            os.replace(summary, folder / PREVIOUS_SUMMARY)
        logging.getLogger(__name__).warning(
            "%s: overwriting a finished training; its summary is now %s, its model.pt stays until this run's first "
            "best", folder, PREVIOUS_SUMMARY)
    elif (folder / "model.pt").is_file():
        logging.getLogger(__name__).warning(
            "%s: model.pt without train_summary.json (an interrupted run): this run replaces it with its first best",
            folder)
    return str(folder)


def _describe(module, bundle: str | None) -> str:
    return f"{bundle}'s {type(module).__name__}" if bundle else type(module).__name__


def _read_problem(path: Path, err: BaseException) -> str:
    """What a failed ``torch.load(weights_only=True)`` means, in words (torch's own messages are a page long)."""
    import pickle
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04":
        if not zipfile.is_zipfile(path):
            return "truncated or corrupted (a zip archive without its central directory: an interrupted save or copy)"
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if not any(n.endswith("/data.pkl") for n in names):
            return f"a zip archive but not a PyTorch checkpoint (no data.pkl among its {len(names)} entries)"
    if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
        found = str(err).split("Unsupported global:", 1)[-1].strip().split()[:2]
        return ("holds Python objects other than tensors (" + " ".join(found).rstrip(".") + "), which "
                "torch.load(weights_only=True) refuses to run; save the network's state_dict() instead")
    if head != b"PK\x03\x04":
        return f"not a PyTorch checkpoint (unrecognised content, first bytes {head.hex()})"
    first_line = str(err).splitlines()[0][:160] if str(err) else ""
    return f"not a readable PyTorch checkpoint ({type(err).__name__}: {first_line})"


def _few(names, n: int = 3) -> str:
    names = sorted(names)
    shown = ", ".join(repr(k) for k in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def load_weights(module, path: str | os.PathLike, map_location="cpu", key: str = "model", bundle: str | None = None):
    """Load trained weights into ``module`` (strictly) from a checkpoint holding its state dict, or a dict of
    state dicts with ``key`` (what MONAI's CheckpointSaver writes for several objects); ``weights_only``, so
    a checkpoint cannot run code. A DDP ``module.`` prefix on every key is dropped. Returns the module.

    Configs call it in ``initialize``, before any data is read. Whatever is wrong with the file (empty,
    truncated, not a checkpoint, another network's weights) raises one :class:`~common.errors.InputDataError`
    naming the file, the problem and the network expected (``bundle``'s class)."""
    import torch

    from common.errors import InputDataError

    path = Path(require_file(path, f"trained weights of {_describe(module, bundle)}: run the training config "
                                   "first or pass --ckpt_path"))
    expected = _describe(module, bundle)
    if path.stat().st_size == 0:
        raise InputDataError(path, f"empty file (0 bytes), not a checkpoint; expected the weights of {expected}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # every reading failure becomes one message naming the file
        raise InputDataError(path, f"{_read_problem(path, err)}; expected the weights of {expected}") from None
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__ if not isinstance(state, dict) else "dict that is not a state dict of tensors"
        raise InputDataError(path, f"holds a {what}, not the weights of {expected}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    wanted = module.state_dict()
    missing, unexpected = set(wanted) - set(state), set(state) - set(wanted)
    shapes = {k: (tuple(state[k].shape), tuple(wanted[k].shape)) for k in set(state) & set(wanted)
              if tuple(state[k].shape) != tuple(wanted[k].shape)}
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the network's {len(wanted)} tensors missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
        if shapes:
            k = sorted(shapes)[0]
            parts.append(f"{len(shapes)} of another shape ({k!r}: {list(shapes[k][0])} in the file, "
                         f"{list(shapes[k][1])} expected)")
        raise InputDataError(path, f"not the weights of {expected} (another bundle's, or another network_def "
                                   f"configuration): " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
    return module


def check_bundle_weights(bundle_dir: str | os.PathLike, ckpt: str | os.PathLike | None = None,
                         network_id: str = "network_def") -> Path:
    """Load ``ckpt`` (default ``<bundle_dir>/models/model.pt``) into the network of the bundle's ``inference.json``
    on the CPU, for the integrations (Deploy, Label) that load weights their own way: a bad file is refused at
    start-up with :func:`load_weights`'s message, not at the first request. Returns the checkpoint's path."""
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir)
    ckpt = Path(ckpt) if ckpt is not None else bundle_dir / "models" / "model.pt"
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    parser["device"] = "cpu"
    load_weights(parser.get_parsed_content(network_id), ckpt, "cpu", bundle=bundle_dir.name)
    return ckpt


def write_training_summary(trainer, evaluator, out_dir: str | os.PathLike) -> Path:
    """``train_summary.json`` beside the checkpoints: epochs run, final training loss, the best validation
    metric and its epoch (the epoch whose weights ``model.pt`` holds)."""
    from common.data._jsonio import write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loss = trainer.state.output
    if isinstance(loss, list):
        loss = loss[-1] if loss else None
    if isinstance(loss, dict):
        loss = loss.get("loss")
    if hasattr(loss, "detach"):
        loss = loss.detach().float().item()
    validated = evaluator is not None and evaluator.state.best_metric_epoch >= 0
    best = float(evaluator.state.best_metric) if validated else None
    summary = {
        "epochs": int(trainer.state.epoch),
        "iterations": int(trainer.state.iteration),
        "final_train_loss": None if loss is None or not math.isfinite(loss) else float(loss),
        "best_val_metric": None if best is None or not math.isfinite(best) else best,
        "best_val_epoch": int(evaluator.state.best_metric_epoch) if validated else -1,
        "key_metric": evaluator.state.key_metric_name if evaluator is not None else None,
        # which weights model.pt holds: the best validation epoch's, or (no validation controls) the last epoch's
        "model_epoch": int(evaluator.state.best_metric_epoch) if validated else int(trainer.state.epoch),
        "model_selection": "best validation epoch" if validated else "final epoch (no validation)",
    }
    path = write_json_atomic(out / "train_summary.json", summary)
    (out / PREVIOUS_SUMMARY).unlink(missing_ok=True)  # the run it described is replaced now
    if validated:
        print(f"training done: best {summary['key_metric']} {summary['best_val_metric']} at epoch "
              f"{summary['best_val_epoch']} -> {out / 'model.pt'}")
    else:
        print(f"training done: no validation, final weights of epoch {summary['model_epoch']} -> {out / 'model.pt'}")
    return path


def check_settings(**settings) -> bool:
    """Refuse bad settings of a bundle run before any work (``--epochs 1.5``, ``--batch_size 0``, ``--amp maybe``):
    each must be of its kind and in its range (:data:`common.settings.RANGES`,
    :data:`common.settings.SETTING_KINDS`), else a :class:`~common.errors.SettingsError` names the setting and the
    config file. The train configs call it in ``initialize``, where MONAI's overrides have already replaced the
    configs' values."""
    from common.settings import SETTING_KINDS, check_value

    source = _config_file_from_argv(sys.argv)
    for name, value in settings.items():
        kind = SETTING_KINDS.get(name, "int")
        check_value(name, value, kind, option=f"--{name}", source=source, strict=True)
    return True
