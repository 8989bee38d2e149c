"""MONAI's own checks on every bundle: metadata against the schema (offline), network in/out against the
metadata, and the files model-zoo's ``ci/verify_bundle.py`` requires."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import META_SCHEMA as SCHEMA

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def test_the_bundles_are_found():
    assert {"pd_ae", "pd_sae"} <= set(BUNDLES)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_layout_and_changelog(bundle):
    root = REPO / "bundles" / bundle
    for rel in ("LICENSE", "docs/README.md", "configs/metadata.json", "configs/inference.json", "configs/train.json",
                "configs/evaluate.json", "configs/multi_gpu_train.json", "configs/logging.conf"):
        assert (root / rel).is_file(), f"{bundle}: {rel} missing"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"], f"{bundle}: version {meta['version']} not in the changelog"


@pytest.mark.skipif(not SCHEMA.is_file() and not os.environ.get("CI"),
                    reason="needs MONAI's metadata schema: set BRAIN_ANOMALY_META_SCHEMA (default ../shared/monai/)")
@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_is_valid_offline(bundle):
    from monai.bundle import verify_metadata

    assert SCHEMA.is_file(), f"{SCHEMA} missing: set BRAIN_ANOMALY_META_SCHEMA (CI has ../shared beside the checkout)"
    verify_metadata(meta_file=str(REPO / "bundles" / bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle):
    from monai.bundle import verify_net_in_out

    configs = REPO / "bundles" / bundle / "configs"
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "inference.json"), n=1, any=1, device="cpu")
