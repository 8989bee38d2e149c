"""MONAI Deploy app (integrations/deploy): packaging, input resolution, and the app end to end.

The end-to-end test builds (or reuses) the Deploy environment with ``integrations/deploy/setup_env.sh``,
packages a seeded pd_ae checkpoint with ``package.py`` (MONAI's ckpt_export), runs ``app.py`` in that
environment on a synthetic patient, and compares the written map with the one the bundle's own
``inference.json`` writes for the same weights: shape, float32, affine, range, values.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import bundle_workflow
from test_torchscript_export import seeded_network

from common.data import read_dataset
from common.errors import InputDataError
from integrations.bundles import anomaly_map_key, available_bundles, input_modalities
from integrations.deploy.inputs import find_subject_files, model_file
from integrations.deploy.package import deploy_metadata, package

# torch 2.13 deprecations, docs/design.md 5.7
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "integrations" / "deploy" / "setup_env.sh"
APP = REPO / "integrations" / "deploy" / "app.py"


def seeded_checkpoint(bundle: str, path: Path, seed: int = 0) -> Path:
    """The bundle's seeded ``network_def`` (BatchNorm statistics seeded too, so buffers must travel through the
    export), saved as a plain state dict."""
    torch.save(seeded_network(REPO / "bundles" / bundle / "configs", seed).state_dict(), path)
    return path


def map_key_of(bundle: str) -> str:
    return anomaly_map_key(json.loads((REPO / "bundles" / bundle / "configs" / "inference.json").read_text()))


def assert_is_the_bundles_map(served: nib.Nifti1Image, bundle: str, cohort: Path, ckpt: Path, tmp_path: Path,
                              server: str) -> np.ndarray:
    """``served`` (the map of the cohort's ``sub-0002``) is float32, on the subject's grid with its affine, in
    [0, E2E max], not cast to integers, and equal to the map the bundle's own ``inference.json`` writes for the
    same weights. Prints its figures; returns its values."""
    got = served.get_fdata(dtype=np.float32)
    source = nib.load(read_dataset(cohort / "dataset.json").select(["sub-0002"])[0]["image"][0])
    assert got.shape == source.shape
    assert served.get_data_dtype() == np.float32
    np.testing.assert_allclose(served.affine, source.affine, rtol=0, atol=1e-5)
    assert np.isfinite(got).all() and got.min() >= 0 and got.max() <= E2E[bundle][1] + 1e-6
    assert np.count_nonzero(got != np.round(got)) > 0.9 * got.size, "the map was cast to integers"
    print(f"\n{server} {bundle} map '{map_key_of(bundle)}': shape {got.shape}, dtype {served.get_data_dtype()}, "
          f"range [{got.min():.4g}, {got.max():.4g}]")

    infer = bundle_workflow(bundle, "inference.json", "infer", dataset_dir=str(cohort), ckpt_path=str(ckpt),
                            output_dir=str(tmp_path / "reference"), subject_ids=["sub-0002"], num_workers=0)
    infer.initialize()
    infer.run()
    infer.finalize()
    expected = nib.load(tmp_path / "reference" / "sub-0002" / f"sub-0002_{map_key_of(bundle)}.nii.gz")
    np.testing.assert_allclose(got, expected.get_fdata(dtype=np.float32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served.affine, expected.affine, rtol=0, atol=1e-5)
    return got


# ---------------------------------------------------------------------------------------------- unit tests


@pytest.mark.parametrize("bundle, key, modalities", [("pd_ae", "error", ["FA", "MD"]),
                                                     ("pd_sae", "error", ["FA", "MD"]),
                                                     ("ad_vae3d", "abs_difference", ["PET"])])
def test_what_the_integrations_read_from_a_bundle(bundle, key, modalities):
    configs = REPO / "bundles" / bundle / "configs"
    config, meta = (json.loads((configs / f).read_text()) for f in ("inference.json", "metadata.json"))
    assert bundle in available_bundles()
    assert anomaly_map_key(config) == key  # the first ReconstructionErrord: ad_vae3d's second one is signed
    assert input_modalities(config, meta) == modalities
    with pytest.raises(ValueError, match="no ReconstructionErrord"):
        anomaly_map_key({"postprocessing": {"transforms": [{"_target_": "SaveImaged"}]}})
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = 2
    with pytest.raises(ValueError, match="must name its channels"):
        input_modalities({}, meta)


def pins(path: Path) -> dict[str, str]:
    """``name -> version`` of the ``name==version`` lines of a requirements file."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return dict(line.split("==", 1) for line in lines if "==" in line and "===" not in line)


def test_integration_environments_pin_the_projects_versions():
    """Deploy carries its own monai (beside monai.deploy), Label a whole environment: a package pinned both here
    and at the root must be the version the bundles are tested with, or a root upgrade would leave them behind.
    Label's numpy (< 2) and torch (CUDA build) differ on purpose."""
    root = pins(REPO / "requirements.txt")
    for path in ("integrations/deploy/requirements-local.txt", "integrations/label/requirements.txt"):
        pinned = pins(REPO / path)
        assert "monai" in pinned
        for name in sorted(set(pinned) & set(root) - {"numpy", "torch"}):
            assert pinned[name] == root[name], f"{path}: {name}=={pinned[name]}, requirements.txt: {root[name]}"


def test_deploy_metadata_declares_float_outputs_and_the_map():
    meta = json.loads((REPO / "bundles" / "pd_ae" / "configs" / "metadata.json").read_text())
    out = deploy_metadata(meta, "error", [121, 145, 121])
    outputs = out["network_data_format"]["outputs"]
    assert list(outputs) == ["pred", "error"]  # the network output stays first: the operator maps it there
    assert {spec["type"] for spec in outputs.values()} == {"series"}  # "image" would be cast to uint8
    assert outputs["error"]["num_channels"] == 1 and outputs["error"]["dtype"] == "float32"
    assert meta["network_data_format"]["outputs"]["pred"]["type"] == "image"  # the bundle's own is untouched
    assert out["network_data_format"]["inputs"] == meta["network_data_format"]["inputs"]


def test_find_subject_files(tmp_path):
    subject = tmp_path / "sub-07"
    subject.mkdir()
    for name in ("sub-07_MD.nii.gz", "sub-07_FA.nii.gz", "notes.txt"):
        (subject / name).write_bytes(b"")
    files, sid = find_subject_files(subject, ["FA", "MD"])
    assert [f.name for f in files] == ["sub-07_FA.nii.gz", "sub-07_MD.nii.gz"] and sid == "sub-07"

    with pytest.raises(InputDataError, match=r"sub-07: expected exactly one NIfTI named \*PET"):
        find_subject_files(subject, ["PET"])
    with pytest.raises(InputDataError, match="needs 2 modalities"):
        find_subject_files(subject / "sub-07_FA.nii.gz", ["FA", "MD"])
    (subject / "sub-07_FA_copy_FA.nii").write_bytes(b"")
    with pytest.raises(InputDataError, match=re.escape("found sub-07_FA.nii.gz, sub-07_FA_copy_FA.nii")):
        find_subject_files(subject, ["FA", "MD"])
    with pytest.raises(InputDataError, match="input not found"):
        find_subject_files(tmp_path / "absent", ["FA"])

    pet = tmp_path / "pet"
    pet.mkdir()
    (pet / "scan.nii.gz").write_bytes(b"")
    assert find_subject_files(pet, ["PET"]) == ([pet / "scan.nii.gz"], "scan")
    assert find_subject_files(pet / "scan.nii.gz", ["PET"]) == ([pet / "scan.nii.gz"], "scan")


def test_model_file(tmp_path):
    with pytest.raises(InputDataError, match="found 0"):
        model_file(tmp_path)
    (tmp_path / "model.ts").write_bytes(b"")
    assert model_file(tmp_path) == tmp_path / "model.ts" == model_file(tmp_path / "model.ts")


def test_package_rejects_missing_or_foreign_weights(tmp_path):
    with pytest.raises(InputDataError, match=re.escape("missing.pt: file not found")):
        package("pd_ae", tmp_path / "missing.pt", tmp_path / "out")
    foreign = seeded_checkpoint("pd_sae", tmp_path / "sae.pt")  # another architecture
    with pytest.raises(InputDataError, match=re.escape("sae.pt: not the weights of pd_ae's SpatialAE2d")):
        package("pd_ae", foreign, tmp_path / "out")
    assert not (tmp_path / "out" / "model.ts").exists()
    with pytest.raises(ValueError, match="unknown bundle 'nope'"):
        package("nope", foreign, tmp_path / "out")


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def deploy_python() -> str:
    """The Deploy environment's python, built on first use (about 30 s) and reused afterwards."""
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"setup_env.sh failed:\n{done.stderr[-4000:]}"
    return done.stdout.strip().splitlines()[-1]


#: Per bundle: synthetic cohort kind, and the largest map value possible (inputs and sigmoid reconstructions
#: in [0, 1]: the joint error of 2 channels is at most sqrt(2), an absolute difference at most 1).
E2E = {"pd_ae": ("pd", np.sqrt(2)), "ad_vae3d": ("pet", 1.0)}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """``get(kind) -> folder`` of a synthetic cohort (1 control, 1 patient ``sub-0002``), made once per module."""
    from common.data.synthetic import PDCohortConfig, PETCohortConfig, make_pd_cohort, make_pet_cohort

    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            make, config = {"pd": (make_pd_cohort, PDCohortConfig), "pet": (make_pet_cohort, PETCohortConfig)}[kind]
            made[kind], _ = make(tmp_path_factory.mktemp(kind) / "cohort", config(1, 1, seed=5), progress=False)
        return made[kind]

    return get


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """``get(bundle) -> (checkpoint, model.ts)``: a seeded checkpoint and its Deploy package, made once."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(bundle: str) -> tuple[Path, Path]:
        if bundle not in made:
            folder = tmp_path_factory.mktemp(bundle)
            ckpt = seeded_checkpoint(bundle, folder / "model.pt")
            made[bundle] = ckpt, package(bundle, ckpt, folder / "models")
        return made[bundle]

    return get


def run_app(python: str, inputs: Path, output: Path, model: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's common/ and integrations/
    return subprocess.run([python, str(APP), "-i", str(inputs), "-o", str(output), "-m", str(model)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(E2E))
def test_deploy_app_writes_the_bundles_float_anomaly_map(bundle, deploy_python, cohorts, packaged, tmp_path):
    cohort = cohorts(E2E[bundle][0])
    ckpt, model = packaged(bundle)
    subject = cohort / "sub-0002"  # the patient; for PET the folder also holds its ground-truth anomaly map
    done = run_app(deploy_python, subject, tmp_path / "out", model.parent, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = nib.load(tmp_path / "out" / f"sub-0002_{map_key_of(bundle)}.nii.gz")
    assert_is_the_bundles_map(written, bundle, cohort, ckpt, tmp_path, "Deploy")


@pytest.mark.slow
def test_deploy_app_rejects_bad_input_naming_the_file(deploy_python, cohorts, packaged, tmp_path):
    cohort = cohorts("pd")
    _, model = packaged("pd_ae")
    bad = tmp_path / "sub-bad"
    bad.mkdir()
    fa = nib.load(cohort / "sub-0001" / "sub-0001_FA.nii.gz")
    md = nib.load(cohort / "sub-0001" / "sub-0001_MD.nii.gz")
    nib.save(fa, bad / "sub-bad_FA.nii.gz")
    nib.save(nib.Nifti1Image(md.get_fdata(dtype=np.float32) * 3.5e-3, md.affine), bad / "sub-bad_MD.nii.gz")  # mm2/s
    done = run_app(deploy_python, bad, tmp_path / "out", model, tmp_path)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"error: {bad / 'sub-bad_MD.nii.gz'}: MD maximum" in done.stderr
    assert not list(tmp_path.glob("out/*")), "nothing may be written for a rejected input"
