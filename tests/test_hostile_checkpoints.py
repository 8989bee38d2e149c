"""Hostile checkpoints and training folders: each is refused in the config's ``initialize`` with one
:class:`~common.errors.InputDataError` naming the file, the problem and the network expected, before any data is
read or output written; the best-checkpoint saver replaces ``model.pt`` atomically, on improvement only.

The evaluate / inference workflows run only ``initialize`` here, with a dataset folder that does not exist:
the checkpoint error comes first, so the dataset was not read.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RUNS, bundle_workflow
from ignite.engine import Engine, Events

from common.bundle_support import PREVIOUS_SUMMARY, load_weights
from common.errors import InputDataError
from common.handlers import BestCheckpointSaver
from common.networks import PatchAE2d, SpatialAE2d, VAE3d, VAEReconstructor

REPO = Path(__file__).resolve().parents[1]
TINY_VAE = {"channels": [4, 8, 8], "decoder_channels": [8, 8, 4], "latent_size": 8}

#: per bundle: the class its configs build, overrides of its evaluate (train.json + evaluate.json) and
#: inference workflows, and two wrong networks: another bundle's, and its own class configured differently
BUNDLES = {
    "pd_ae": {
        "cls": "SpatialAE2d", "evaluate": {}, "inference": {},
        "other_bundle": lambda: PatchAE2d(in_channels=2, features=16),
        "other_config": lambda: SpatialAE2d(in_channels=1),
    },
    "pd_sae": {
        "cls": "PatchAE2d", "evaluate": {}, "inference": {},
        "other_bundle": lambda: SpatialAE2d(in_channels=2, channels=(4, 8)),
        "other_config": lambda: PatchAE2d(in_channels=2, features=8),
    },
    "ad_vae3d": {
        "cls": "VAEReconstructor",
        "evaluate": {f"network_def#{k}": v for k, v in TINY_VAE.items()},
        "inference": {f"network_def#vae#{k}": v for k, v in TINY_VAE.items()},
        "other_bundle": lambda: SpatialAE2d(in_channels=2, channels=(4, 8)),
        "other_config": lambda: VAEReconstructor(VAE3d(spatial_shape=(80, 96, 80), **{**TINY_VAE, "latent_size": 4})),
    },
}
assert set(TINY_RUNS) == set(BUNDLES), "a new bundle needs its entry here too"


def _valid_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(8, 4).state_dict(), buffer)
    return buffer.getvalue()


def write_bad_checkpoint(path: Path, kind: str, bundle: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = _valid_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("weights/readme.txt", "not a checkpoint")
    elif kind == "pickled_code":
        torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a whole module: unpickling it would run code
    elif kind == "not_a_state_dict":
        torch.save([1.0, 2.0, 3.0], path)
    elif kind in ("other_bundle", "other_config"):
        torch.save(BUNDLES[bundle][kind]().state_dict(), path)
    else:
        raise ValueError(kind)


#: kind -> what the message must say
KINDS = {
    "empty": "empty file (0 bytes)",
    "truncated": "truncated or corrupted",
    "random": "not a PyTorch checkpoint",
    "zip": "a zip archive but not a PyTorch checkpoint",
    "pickled_code": "holds Python objects other than tensors",
    "not_a_state_dict": "holds a list",
    "other_bundle": "missing",
    "other_config": "of another shape",
}


def input_error(excinfo) -> InputDataError:
    """The InputDataError under MONAI's wrapping of config-expression errors."""
    seen, err = [], excinfo.value
    while err is not None and not isinstance(err, InputDataError):
        seen.append(repr(err))
        err = err.__cause__ or err.__context__
    assert err is not None, f"no InputDataError in the chain: {seen}"
    return err


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("entry", ["evaluate", "inference"])
@pytest.mark.parametrize("bundle", sorted(BUNDLES))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_bad_checkpoint_is_refused_in_initialize_naming_file_problem_and_network(kind, bundle, entry, tmp_path):
    root = tmp_path / "bundle"
    ckpt = root / "models" / "model.pt"
    write_bad_checkpoint(ckpt, kind, bundle)
    before = files_under(root)
    configs = ["train.json", "evaluate.json"] if entry == "evaluate" else "inference.json"
    workflow = bundle_workflow(bundle, configs, "infer", bundle_root=str(root), dataset_dir=str(tmp_path / "absent"),
                               **BUNDLES[bundle][entry])
    with pytest.raises(Exception) as excinfo:
        workflow.initialize()
    err = input_error(excinfo)
    assert err.path == str(ckpt)
    assert KINDS[kind] in err.problem, err.problem
    assert f"{bundle}'s {BUNDLES[bundle]['cls']}" in err.problem, err.problem
    assert len(str(err).splitlines()) <= 2 and len(str(err)) < 600, str(err)
    assert files_under(root) == before  # nothing written, the file untouched


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_a_good_checkpoint_loads_once_in_initialize(bundle, tmp_path):
    """The same workflow with the right weights: loaded in ``initialize``, before the dataset is read, into the
    evaluator's network; no CheckpointLoader handler is left to load them a second time."""
    root = tmp_path / "bundle"
    infer = bundle_workflow(bundle, "inference.json", "infer", bundle_root=str(root),
                            dataset_dir=str(tmp_path / "absent"), **BUNDLES[bundle]["inference"])
    source = infer.parser.get_parsed_content("network_def", instantiate=True)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    (root / "models").mkdir(parents=True)
    torch.save(source.state_dict(), root / "models" / "model.pt")
    with pytest.raises(Exception) as excinfo:  # the subjects are checked next: this dataset does not exist
        infer.initialize()
    assert input_error(excinfo).path == str(tmp_path / "absent" / "dataset.json")
    loaded = infer.parser.get_parsed_content("network")
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert "CheckpointLoader" not in json.dumps(infer.parser.get("handlers"))
    assert not (root / "eval").exists()


def test_load_weights_drops_a_ddp_prefix_and_names_a_folder(tmp_path):
    net = SpatialAE2d(in_channels=2, channels=(4, 8))
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "ddp.pt")
    target = SpatialAE2d(in_channels=2, channels=(4, 8))
    load_weights(target, tmp_path / "ddp.pt", bundle="pd_ae")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in net.state_dict().items())
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(InputDataError, match=re.escape("folder.pt: file not found")):
        load_weights(target, tmp_path / "folder.pt", bundle="pd_ae")


# --- training into a folder that holds a trained model ---------------------------------------------------------

def logged(caplog, capsys) -> str:
    """Warnings as pytest captured them, or as the bundle's logging.conf (which replaces the root handlers) printed."""
    return caplog.text + capsys.readouterr().out


def finished_run(root: Path) -> dict[str, bytes]:
    models = root / "models"
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(_valid_bytes())
    (models / "train_summary.json").write_text(json.dumps({"epochs": 7, "best_val_epoch": 5}))
    return files_under(root)


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_training_into_a_finished_run_is_refused_without_overwrite(bundle, tmp_path):
    root = tmp_path / "bundle"
    before = finished_run(root)
    train = bundle_workflow(bundle, "train.json", "train", bundle_root=str(root),
                            dataset_dir=str(tmp_path / "absent"))
    with pytest.raises(Exception) as excinfo:
        train.initialize()
    err = input_error(excinfo)
    assert err.path == str(root / "models")
    assert "holds a finished training" in err.problem and "--overwrite true" in err.problem
    assert "--bundle_root" in err.problem
    assert files_under(root) == before


def test_overwrite_moves_the_summary_aside_and_keeps_the_weights(tmp_path, caplog, capsys):
    root = tmp_path / "bundle"
    before = finished_run(root)
    train = bundle_workflow("pd_ae", "train.json", "train", bundle_root=str(root),
                            dataset_dir=str(tmp_path / "absent"), overwrite="true")  # what `--overwrite true` passes
    with caplog.at_level(logging.WARNING):
        train.initialize()
    models = root / "models"
    assert not (models / "train_summary.json").exists()
    assert (models / PREVIOUS_SUMMARY).read_bytes() == before["models/train_summary.json"]
    assert (models / "model.pt").read_bytes() == before["models/model.pt"]
    assert "overwriting a finished training" in logged(caplog, capsys)


def test_an_interrupted_run_is_replaced_with_a_warning(tmp_path, caplog, capsys):
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.pt").write_bytes(_valid_bytes())
    train = bundle_workflow("pd_sae", "train.json", "train", bundle_root=str(root),
                            dataset_dir=str(tmp_path / "absent"))
    with caplog.at_level(logging.WARNING):
        train.initialize()
    assert "model.pt without train_summary.json (an interrupted run)" in logged(caplog, capsys)


@pytest.mark.parametrize("case, problem", [("models_is_a_file", "is a file, not a folder"),
                                           ("overwrite_abc", "--overwrite must be true or false, got 'abc'")])
def test_a_bad_training_folder_or_flag_is_refused(case, problem, tmp_path):
    root = tmp_path / "bundle"
    root.mkdir()
    overrides = {}
    if case == "models_is_a_file":
        (root / "models").write_text("not a folder")
    else:
        finished_run(root)
        overrides["overwrite"] = "abc"
    before = files_under(root)
    train = bundle_workflow("pd_ae", "train.json", "train", bundle_root=str(root),
                            dataset_dir=str(tmp_path / "absent"), **overrides)
    with pytest.raises(Exception) as excinfo:
        train.initialize()
    assert problem in str(input_error(excinfo))
    assert files_under(root) == before


# --- the saver ------------------------------------------------------------------------------------------------

def run_epochs(values, folder: Path, cmp_fn=None, **saver_kwargs) -> list[int | None]:
    """An ignite engine whose epoch ``e`` fills the network with ``e`` and reports ``values[e - 1]``; returns the
    epoch ``model.pt`` holds after each epoch."""
    net = torch.nn.Linear(3, 2)
    engine = Engine(lambda engine, batch: None)
    if cmp_fn is not None:
        engine.metric_cmp_fn = cmp_fn  # what a MONAI evaluator carries
    held = []

    @engine.on(Events.EPOCH_COMPLETED)
    def metric(engine):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(engine.state.epoch))
        engine.state.metrics = {"val": values[engine.state.epoch - 1]}

    BestCheckpointSaver(folder, {"model": net}, **saver_kwargs).attach(engine)

    @engine.on(Events.EPOCH_COMPLETED)
    def record(engine):
        path = folder / "model.pt"
        held.append(int(torch.load(path, weights_only=True)["weight"][0, 0]) if path.exists() else None)

    engine.run([0], max_epochs=len(values))
    return held


def expected_held(values, lower_is_better: bool) -> list[int | None]:
    """Independent expectation: the epoch of the running best among finite values (first one wins ties)."""
    v = np.asarray(values, dtype=float)
    v = np.where(np.isfinite(v), v if lower_is_better else -v, np.inf)
    best = np.minimum.accumulate(v)
    first = [int(np.flatnonzero(v == b)[0]) + 1 if math.isfinite(b) else None for b in best]
    return first


VALUES = [float("nan"), 0.5, 0.7, 0.3, 0.3, float("inf"), 0.2, 0.9]


@pytest.mark.parametrize("cmp_fn, kwargs, lower", [
    (operator.lt, {}, True),                          # the bundles: the evaluator's metric_cmp_fn, lower is better
    (None, {}, False),                                # a plain engine: higher is better
    (None, {"negative_sign": True}, True),
    (operator.lt, {"negative_sign": False}, False),   # explicit wins
])
def test_the_saver_keeps_the_best_epoch_by_the_engines_comparison(cmp_fn, kwargs, lower, tmp_path):
    held = run_epochs(VALUES, tmp_path / "models", cmp_fn, **kwargs)
    assert held == expected_held(VALUES, lower)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt"]


def test_the_old_best_stays_until_the_new_run_saves_its_first(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    old = _valid_bytes()
    (folder / "model.pt").write_bytes(old)
    held_bytes = []
    net = torch.nn.Linear(3, 2)
    engine = Engine(lambda engine, batch: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED,
                             lambda e: setattr(e.state, "metrics", {"val": [float("nan"), 0.4][e.state.epoch - 1]}))
    BestCheckpointSaver(folder, {"model": net}, negative_sign=True).attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: held_bytes.append((folder / "model.pt").read_bytes()))
    engine.run([0], max_epochs=2)
    assert held_bytes[0] == old and held_bytes[1] != old
    assert torch.equal(torch.load(folder / "model.pt", weights_only=True)["weight"], net.weight)


def test_the_saver_unwraps_data_parallel_and_saves_several_objects_as_a_dict(tmp_path):
    net, other = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)
    saver = BestCheckpointSaver(tmp_path, {"model": torch.nn.DataParallel(net)})
    saver.save()
    assert set(torch.load(tmp_path / "model.pt", weights_only=True)) == {"weight", "bias"}  # no "module." prefix
    BestCheckpointSaver(tmp_path, {"model": net, "other": other}, filename="both.pt").save()
    target = load_weights(torch.nn.Linear(3, 2), tmp_path / "both.pt")  # the "model" entry of the dict
    assert torch.equal(target.weight, net.weight)


def test_stale_temporaries_of_dead_runs_are_removed_at_attach(tmp_path):
    dead = tmp_path / ".model.pt.999999999.0badc0de.tmp"  # above any pid_max: no such process
    live = tmp_path / f".model.pt.{os.getppid()}.0badc0de.tmp"  # a running process may still be writing it
    other = tmp_path / ".notes.txt.999999999.0badc0de.tmp"
    for p in (dead, live, other):
        p.write_bytes(b"partial")
    BestCheckpointSaver(tmp_path, {"model": torch.nn.Linear(2, 2)}).attach(Engine(lambda e, b: None))
    assert not dead.exists() and live.exists() and other.exists()


# --- the integrations, which load weights their own way -------------------------------------------------------

@pytest.mark.parametrize("integration", ["deploy", "label"])
@pytest.mark.parametrize("kind", ["empty", "truncated", "other_bundle"])
def test_the_integrations_refuse_a_bad_checkpoint_at_start(kind, integration, tmp_path):
    import shutil

    root = tmp_path / "bundles"
    shutil.copytree(REPO / "bundles" / "pd_ae" / "configs", root / "pd_ae" / "configs")
    ckpt = root / "pd_ae" / "models" / "model.pt"
    write_bad_checkpoint(ckpt, kind, "pd_ae")
    with pytest.raises(InputDataError) as excinfo:
        if integration == "deploy":
            from integrations.deploy.package import package

            package("pd_ae", ckpt, tmp_path / "out")
        else:
            from integrations.label.lib.bundles import select_bundles

            select_bundles({"bundles": str(root), "models": "pd_ae"})
    assert excinfo.value.path == str(ckpt)
    assert KINDS[kind] in excinfo.value.problem and "pd_ae's SpatialAE2d" in excinfo.value.problem
    assert not (tmp_path / "out").exists()
