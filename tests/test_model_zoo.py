"""The bundles follow model-zoo's conventions to the letter: MONAI-style transforms (``Args:``, ``D``/``Dict``
aliases, ``allow_missing_keys``), the config ids MONAI Label and FL look up, ``bundle_root``, config overlays,
achieved figures in ``eval_metrics``, and JSON formatted as model-zoo's pre-commit formats it."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import MapTransform, Transform

import common.transforms as T


def _public_transforms() -> dict[str, type]:
    return {name: obj for name in T.__all__ if inspect.isclass(obj := getattr(T, name))
            and issubclass(obj, Transform | MapTransform)}


def test_every_public_transform_documents_its_arguments():
    classes = _public_transforms()
    assert len(set(classes.values())) >= 10  # array and dictionary versions of every transform
    missing = sorted({c.__name__ for c in classes.values() if "Args:" not in (c.__doc__ or "")})
    assert not missing, f"no Args: section in {missing}"


def test_every_dictionary_transform_has_monai_aliases():
    dictionary = {c for c in _public_transforms().values() if issubclass(c, MapTransform)}
    assert len(dictionary) >= 5
    for cls in dictionary:
        base = cls.__name__[:-1]
        assert cls.__name__.endswith("d"), cls.__name__
        assert getattr(T, base + "D") is cls and getattr(T, base + "Dict") is cls, cls.__name__
        assert {base + "D", base + "Dict"} <= set(T.__all__)


def test_reconstruction_errord_allow_missing_keys():
    rng = np.random.default_rng(0)
    image, pred = rng.random((2, 4, 5, 3), dtype=np.float32), rng.random((2, 4, 5, 3), dtype=np.float32)
    tolerant = T.ReconstructionErrorD(allow_missing_keys=True)
    # both keys present: the joint error, whatever allow_missing_keys says
    out = tolerant({"image": torch.from_numpy(image), "pred": torch.from_numpy(pred)})
    np.testing.assert_allclose(out["error"].numpy(), np.sqrt(((pred - image) ** 2).sum(0, keepdims=True)), rtol=1e-6)
    # a key missing: the item passes through unchanged, and no error map is made up
    for item in ({"image": torch.from_numpy(image)}, {"pred": torch.from_numpy(pred)}, {"id": "sub-01"}):
        passed = tolerant(item)
        assert set(passed) == set(item) and all(passed[k] is item[k] for k in item)
    # the default refuses, naming the key, as MONAI's dictionary transforms do
    with pytest.raises(KeyError, match="pred"):
        T.ReconstructionErrord()({"image": torch.from_numpy(image)})


# ---- the ids MONAI Label and FL read: train#dataset#data, train#preprocessing and their validate# twins ----

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_config_has_the_model_zoo_data_ids_and_uses_them(bundle):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    for part in ("train", "validate"):
        assert f"{part}#dataset#data" in parser and f"{part}#preprocessing" in parser, (bundle, part)
        # wired, not decorative: the dataset loads its entries with this preprocessing, and the data loader
        # reads that dataset
        assert parser[f"{part}#dataset#transform"] == f"@{part}#preprocessing", (bundle, part)
        assert f"@{part}#dataset" in str(parser[f"{part}#dataloader#dataset"]), (bundle, part)
    assert parser["validate#preprocessing"] == "%train#preprocessing"  # the same steps, its own instances


def test_in_memory_datasets_load_through_the_configs_preprocessing(make_cohort, tiny_grid):
    """pd_ae's and pd_sae's datasets take a MONAI datalist and a dictionary transform as ``Dataset(data,
    transform)`` does: an extra step in ``train#preprocessing`` changes what they hold."""
    from monai.transforms import Compose, Lambdad

    from common.data import read_dataset
    from common.data.pairs import SiamesePairSampler
    from common.data.volumes import load_subject_volumes

    subjects = list(read_dataset(make_cohort(3, 0)).subjects)
    load = T.LoadValidatedImaged("image", tiny_grid.name, ["FA", "MD"])
    doubled = Compose([load, Lambdad("image", lambda x: 2 * x)])
    plain = load_subject_volumes(subjects, tiny_grid, ["FA", "MD"], keep=lambda i, v: v, progress=False)
    through = load_subject_volumes(subjects, tiny_grid, ["FA", "MD"], keep=lambda i, v: v, progress=False,
                                   transform=doubled)
    for a, b in zip(plain, through, strict=True):
        np.testing.assert_array_equal(b, 2 * a)
    assert plain[1][0, 3, 3, 3] == pytest.approx(0.2)  # conftest fills FA with 0.1 x subject number

    mask = np.ones(tiny_grid.shape, bool)
    args = {"grid": tiny_grid.name, "patch_size": 3, "n_slices": 3, "pairs_per_epoch": 20, "batch_size": 10,
            "progress": False, "mask": mask, "seed": 0}
    rng = np.random.default_rng
    base = SiamesePairSampler(subjects, **args).sample(10, rng(1))
    twice = SiamesePairSampler(subjects, **args, transform=doubled).sample(10, rng(1))
    for key in ("centres", "subjects"):  # the same draw ...
        torch.testing.assert_close(twice[key], base[key])
    for key in ("x1", "x2"):  # ... of doubled patches
        assert base[key].abs().sum() > 0
        torch.testing.assert_close(twice[key], 2 * base[key], rtol=0, atol=0)


# ---- bundle_root: "." as in model-zoo, meaning the bundle's own folder; never read from the command line ----

def test_bundle_root_dot_is_the_bundles_own_folder(tmp_path, monkeypatch):
    from common.bundle_support import resolve_bundle_root

    repo_copy = REPO / "bundles" / "pd_ae"
    unrelated = str(tmp_path / "x" / "configs" / "a.json")  # the command line no longer decides
    monkeypatch.setattr("sys.argv", ["monai.bundle", "run", "--config_file", unrelated])
    monkeypatch.chdir(REPO)  # the README's command, from the repository root: the copy in bundles/
    assert Path(resolve_bundle_root(".", "pd_ae")) == repo_copy
    monkeypatch.chdir(repo_copy)  # model-zoo's way, from the bundle's folder
    assert Path(resolve_bundle_root(".", "pd_ae")) == repo_copy
    elsewhere = tmp_path / "pd_ae"  # a copy of the bundle run from its own folder
    (elsewhere / "configs").mkdir(parents=True)
    (elsewhere / "configs" / "metadata.json").write_text("{}")
    monkeypatch.chdir(elsewhere)
    assert Path(resolve_bundle_root(".", "pd_ae")) == elsewhere
    monkeypatch.chdir(tmp_path)
    # --bundle_root DIR, as given (relative to the working folder like any path); MONAI Label and FL pass absolute
    assert resolve_bundle_root("out/b", "pd_ae") == "out/b"
    assert resolve_bundle_root(str(tmp_path / "b"), "pd_ae") == str(tmp_path / "b")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_configs_put_outputs_under_the_bundle_from_the_repository_root(bundle, tmp_path, monkeypatch):
    """What ``python -m monai.bundle run ... --config_file bundles/<name>/configs/...`` resolves from the
    repository root, and with ``--bundle_root``: the configs themselves say ``"bundle_root": "."``."""
    from monai.bundle import ConfigWorkflow

    configs = REPO / "bundles" / bundle / "configs"
    monkeypatch.chdir(REPO)
    for names, out_id in ((["train.json"], "ckpt_dir"), (["train.json", "evaluate.json"], "output_dir"),
                          (["inference.json"], "ckpt_path")):
        files = [f"bundles/{bundle}/configs/{name}" for name in names]
        default = ConfigWorkflow(config_file=files, workflow_type=None, logging_file=False)
        assert default.parser["bundle_root"] == "."
        assert Path(default.parser.get_parsed_content(out_id)).is_relative_to(configs.parent), (files, out_id)
        moved = ConfigWorkflow(config_file=files, workflow_type=None, logging_file=False, bundle_root=str(tmp_path))
        assert Path(moved.parser.get_parsed_content(out_id)).is_relative_to(tmp_path), (files, out_id)


# ---- overlays are config files ----

def test_short_schedule_is_an_overlay_of_train_json_that_the_drivers_read():
    """ad_vae3d's short CPU schedule lives in ``configs/train_short.json``: the model card's recipe (the values the
    demo always trained with, so its results stay the same), every key an id ``train.json`` already has."""
    from monai.bundle import ConfigParser

    from common.app.experiment import short_schedule_overrides

    configs = REPO / "bundles" / "ad_vae3d" / "configs"
    recipe = {"epochs": 24, "batch_size": 2, "learning_rate": 1e-3, "latent_head_lr_scale": 1e-3,
              "lr_warmup_iterations": 6, "lr_cosine_decay": True, "batchnorm_momentum": 0.5, "output_bias_init": True}
    assert short_schedule_overrides() == recipe
    train = ConfigParser.load_config_file(configs / "train.json")
    assert set(recipe) <= set(train) and all(train[k] != v for k, v in recipe.items())  # it changes each one
    merged = ConfigParser()
    merged.read_config([str(configs / "train.json"), str(configs / "train_short.json")])
    assert {k: merged[k] for k in recipe} == recipe and merged["beta"] == train["beta"]


# ---- eval_metrics: achieved figures, each one in the model card, with what it was measured on ----

def _leaves(tree, path=()):
    for key, value in tree.items():
        yield from _leaves(value, (*path, key)) if isinstance(value, dict) else [((*path, key), value)]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_eval_metrics_are_measured_figures_from_the_model_card(bundle):
    import json
    import math

    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    card = " ".join((REPO / "bundles" / bundle / "docs" / "README.md").read_text().split())
    figures = list(_leaves(meta["eval_metrics"]))
    assert figures and set(meta["eval_metrics"]) == set(meta["eval_metrics_measured_on"])
    for path, value in figures:
        assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value), path
        written = {f"{value:g}", f"{value:.2f}", f"{value:.3f}", f"{100 * value:g} %"}
        assert any(w in card for w in written), f"{bundle}: {'/'.join(path)} = {value} is not in the model card"
    for what in meta["eval_metrics_measured_on"].values():
        assert "model card" in what and len(what) > 60  # names the card's section and the data, split, schedule


# ---- JSON as model-zoo's pre-commit formats it: pretty-format-json --autofix --no-sort-keys --indent=4 ----

def model_zoo_format(text: str) -> str:
    """What the hook writes: the parsed document dumped with 4-space indents, its key order kept, ASCII escapes,
    ``": "`` after keys, and one final newline (end-of-file-fixer agrees)."""
    import json

    return json.dumps(json.loads(text), indent=4, ensure_ascii=True, separators=(",", ": ")) + "\n"


def test_the_model_zoo_format_by_hand():
    text = '{"b": [1, 2], "a": {"é": true}}'
    expected = '{\n    "b": [\n        1,\n        2\n    ],\n    "a": {\n        "\\u00e9": true\n    }\n}\n'
    assert model_zoo_format(text) == expected


CONFIGS = sorted((REPO / "bundles").glob("*/configs/*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "bundles")) for p in CONFIGS])
def test_bundle_configs_are_formatted_as_model_zoo_formats_them(path):
    text = path.read_text(encoding="utf-8")
    assert text == model_zoo_format(text), (
        f"{path.relative_to(REPO)} is not formatted as model-zoo's pre-commit formats it; rewrite it with "
        "tests.test_model_zoo.model_zoo_format (json.dumps(..., indent=4) + a final newline)")
