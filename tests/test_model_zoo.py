"""The bundles follow model-zoo's conventions to the letter: MONAI-style transforms (``Args:``, ``D``/``Dict``
aliases, ``allow_missing_keys``), the config ids MONAI Label and FL look up, ``bundle_root``, config overlays,
achieved figures in ``eval_metrics``, and JSON formatted as model-zoo's pre-commit formats it."""

from __future__ import annotations

import inspect

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
