"""Where things are: this repository's bundles, and the folders that runs write. One owner for both.

The bundles' folder used to be worked out separately by the experiment driver, the release, the configs' helpers
and the integrations, and the result path ``<out>/experiments/<model>/split_00/eval/split_0`` was spelled out by
hand wherever a result was read. Both live here now, in the library's lowest layer (standard library only), because
the configs' helper :func:`common.bundle_support.locate_bundle_root` needs the bundles' folder too and the library
must not import the application (:mod:`common.app`), which re-uses this module.

The layout of a run (docs/architecture.md):

- a **bundle root** holds ``models/`` (weights, ``train_summary.json``), ``logs/`` and ``eval/split_<i>/``; the
  bundles' ``evaluate.json`` builds the same ``output_dir`` (``os.path.join(@bundle_dir, 'eval', 'split_' +
  str(@split_index))``; a config cannot import Python helpers of the application, so it keeps its expression and
  ``tests/test_layers.py`` checks that both agree);
- an **experiment** over control splits is ``<out>/experiments/<model>/``, one bundle root ``split_<ii>/`` per
  split (two digits), so split ``i``'s results are ``<out>/experiments/<model>/split_<ii>/eval/split_<i>/``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUNDLES_DIR", "OUTPUTS_DIR", "PACKAGE_DIR", "REPO_DIR", "bundle_dir", "eval_dir", "experiment_dir",
           "models_dir", "split_eval_dir", "split_root"]

#: The library's package folder (``common/``): what a release zip vendors beside each bundle.
PACKAGE_DIR = Path(__file__).resolve().parent
#: The repository (or, in a release zip, the extracted bundle folder) that holds :data:`PACKAGE_DIR`.
REPO_DIR = PACKAGE_DIR.parent
#: This repository's bundles (``bundles/<name>/configs/...``).
BUNDLES_DIR = REPO_DIR / "bundles"
#: Default output folder of the command line, relative to the working folder.
OUTPUTS_DIR = Path("outputs")


def bundle_dir(name: str, bundles_dir: str | os.PathLike | None = None) -> Path:
    """The folder of bundle ``name``: under ``bundles_dir``, or this repository's :data:`BUNDLES_DIR`."""
    return Path(bundles_dir or BUNDLES_DIR) / name


def models_dir(bundle_root: str | os.PathLike) -> Path:
    """A bundle root's ``models/`` (the configs' ``ckpt_dir``): ``model.pt`` and ``train_summary.json``."""
    return Path(bundle_root) / "models"


def eval_dir(bundle_root: str | os.PathLike, split_index: int) -> Path:
    """A bundle root's evaluation folder of split ``split_index``: ``<root>/eval/split_<i>`` (``evaluate.json``'s
    ``output_dir``)."""
    return Path(bundle_root) / "eval" / f"split_{int(split_index)}"


def experiment_dir(out: str | os.PathLike | None, model: str) -> Path:
    """An experiment's folder of ``model`` (also ``compare``) under ``out``: ``<out>/experiments/<model>``;
    ``out=None`` means :data:`OUTPUTS_DIR`."""
    return Path(OUTPUTS_DIR if out is None else out) / "experiments" / model


def split_root(experiment: str | os.PathLike, split_index: int) -> Path:
    """The bundle root of split ``split_index`` inside an experiment folder: ``<experiment>/split_<ii>``."""
    return Path(experiment) / f"split_{int(split_index):02d}"


def split_eval_dir(out: str | os.PathLike | None, model: str, split_index: int = 0) -> Path:
    """Where split ``split_index``'s results of ``model`` are:
    ``<out>/experiments/<model>/split_<ii>/eval/split_<i>``."""
    return eval_dir(split_root(experiment_dir(out, model), split_index), split_index)
