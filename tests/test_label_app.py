"""MONAI Label app (integrations/label): upload loading, bundle selection, and the server end to end.

The end-to-end test needs the Label environment (its own virtual environment: monailabel 0.8.5 needs
numpy < 2) and skips, saying so, when it has not been built. Build it and run this file with:

    bash integrations/label/setup_env.sh && python -m pytest -p no:xdist tests/test_label_app.py

It starts ``monailabel start_server`` on 127.0.0.1 (a free port) serving pd_ae and ad_vae3d with seeded
checkpoints, uploads a synthetic patient (FA, MD as one 4D NIfTI; the PET file) to ``POST /infer/<bundle>``,
and compares the returned map with the one the bundle's own ``inference.json`` writes for the same weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import write_nifti
from test_deploy_app import (  # noqa: F401  (cohorts: a fixture used here)
    E2E,
    assert_is_the_bundles_map,
    cohorts,
    map_key_of,
    seeded_checkpoint,
)

from common.data import read_dataset
from common.errors import InputDataError
from common.networks import SpatialAE2d
from common.transforms import LoadValidatedImage
from integrations.label.lib.bundles import select_bundles
from integrations.label.lib.transforms import LoadStackedValidatedImage, LoadStackedValidatedImaged

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "integrations" / "label" / "setup_env.sh"
APP_DIR = REPO / "integrations" / "label"


# ---------------------------------------------------------------------------------------------- unit tests


def test_stacked_upload_loads_as_the_bundles_load_separate_files(tiny_grid, tmp_path, rng):
    fa = rng.uniform(0, 1, tiny_grid.shape).astype(np.float32)
    md = rng.uniform(0.2, 1, tiny_grid.shape).astype(np.float32)
    separate = [write_nifti(tmp_path / "FA.nii.gz", fa, tiny_grid.affine),
                write_nifti(tmp_path / "MD.nii.gz", md, tiny_grid.affine)]
    stacked = write_nifti(tmp_path / "sub_FA_MD.nii.gz", np.stack([fa, md], -1), tiny_grid.affine)

    expected = LoadValidatedImage("tiny", ["FA", "MD"])(separate)
    got = LoadStackedValidatedImaged("image", "tiny", ["FA", "MD"])({"image": str(stacked)})["image"]
    torch.testing.assert_close(got.as_tensor(), expected.as_tensor(), rtol=0, atol=0)
    torch.testing.assert_close(got.affine, expected.affine)
    assert got.meta["filename_or_obj"] == str(stacked)

    one = LoadStackedValidatedImage("tiny", ["FA"])(separate[0])  # 3D file, one-modality bundle
    torch.testing.assert_close(one.as_tensor(), expected.as_tensor()[:1], rtol=0, atol=0)


def test_stacked_upload_errors_name_the_upload_and_channel(tiny_grid, tmp_path, rng):
    fa = rng.uniform(0, 1, tiny_grid.shape).astype(np.float32)
    md_mm2 = np.full(tiny_grid.shape, 0.8e-3, np.float32)  # MD left in mm^2/s
    bad = write_nifti(tmp_path / "bad.nii.gz", np.stack([fa, md_mm2], -1), tiny_grid.affine)
    loader = LoadStackedValidatedImage("tiny", ["FA", "MD"])
    with pytest.raises(InputDataError, match=rf"^{bad}: channel 1 \(MD\): MD maximum"):
        loader(bad)
    three = write_nifti(tmp_path / "three.nii.gz", np.stack([fa, fa, fa], -1), tiny_grid.affine)
    with pytest.raises(InputDataError, match=r"expected a 4D image with 2 channels \(FA, MD\).*got shape"):
        loader(three)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image")
    with pytest.raises(InputDataError, match=re.escape("garbage.nii.gz: not a readable NIfTI")):
        loader(garbage)


def test_select_bundles(tmp_path):
    root = tmp_path / "bundles"
    (root / "pd_ae" / "models").mkdir(parents=True)
    shutil.copytree(REPO / "bundles" / "pd_ae" / "configs", root / "pd_ae" / "configs")
    shutil.copytree(REPO / "bundles" / "pd_sae" / "configs", root / "pd_sae" / "configs")
    with pytest.raises(InputDataError, match="no bundle with trained weights"):
        select_bundles({"bundles": str(root)})
    with pytest.raises(InputDataError, match=r"pd_ae/models/model.pt: file not found \(bundle 'pd_ae'\)"):
        select_bundles({"bundles": str(root), "models": "pd_ae"})
    (root / "pd_ae" / "models" / "model.pt").write_bytes(b"")
    with pytest.raises(InputDataError, match=r"pd_ae/models/model.pt: empty file \(0 bytes\).*pd_ae's SpatialAE2d"):
        select_bundles({"bundles": str(root)})
    torch.save(SpatialAE2d().state_dict(), root / "pd_ae" / "models" / "model.pt")
    assert select_bundles({"bundles": str(root)}) == {"pd_ae": root / "pd_ae"}  # pd_sae has no weights
    with pytest.raises(InputDataError, match=re.escape("pd_sae/models/model.pt: file not found")):
        select_bundles({"bundles": str(root), "models": "pd_ae, pd_sae"})
    with pytest.raises(InputDataError, match="bundles folder not found"):
        select_bundles({"bundles": str(tmp_path / "absent")})


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def label_python() -> str:
    found = subprocess.run(["bash", str(SETUP), "--path"], capture_output=True, text=True, check=True)
    python = Path(found.stdout.strip())
    if not (python.parent.parent / ".complete").is_file():
        pytest.skip(f"the MONAI Label environment is not built ({python.parent.parent}): run "
                    "`bash integrations/label/setup_env.sh` (several minutes, several GB) to run this test")
    return str(python)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_file(url: str, path: Path, timeout: float = 300) -> bytes:
    """``POST`` ``path`` as the multipart field ``file`` (what MONAI Label's /infer takes), with the stdlib."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return reply.read()


@pytest.fixture(scope="module")
def server(label_python, tmp_path_factory):
    """A MONAI Label server on 127.0.0.1 serving the E2E bundles from a bundles folder with seeded weights;
    yields ``(base_url, {bundle: checkpoint})`` and stops the server afterwards."""
    tmp = tmp_path_factory.mktemp("label")
    root, ckpts = tmp / "bundles", {}
    for bundle in E2E:
        shutil.copytree(REPO / "bundles" / bundle / "configs", root / bundle / "configs")
        (root / bundle / "models").mkdir()
        ckpts[bundle] = seeded_checkpoint(bundle, root / bundle / "models" / "model.pt")
    (tmp / "studies").mkdir()
    port = free_port()
    with open(tmp / "server.log", "w") as log:
        cmd = [label_python, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR),
               "--studies", str(tmp / "studies"), "--conf", "bundles", str(root), "--conf", "models", ",".join(E2E),
               "--host", "127.0.0.1", "--port", str(port)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited ({proc.returncode}):\n{(tmp / 'server.log').read_text()[-4000:]}")
                try:
                    with urllib.request.urlopen(f"{base}/info/", timeout=5) as reply:
                        info = json.loads(reply.read())
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if time.monotonic() > deadline:
                        pytest.fail(f"server not up after 180 s:\n{(tmp / 'server.log').read_text()[-4000:]}")
                    time.sleep(1)
            assert set(info["models"]) == set(E2E) and info["trainers"] == {}
            yield base, ckpts
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def upload_of(cohort: Path, subject: str, folder: Path) -> Path:
    """The file to upload: the subject's one file, or its channel files stacked on a 4th axis."""
    files = [Path(f) for f in read_dataset(cohort / "dataset.json").select([subject])[0]["image"]]
    if len(files) == 1:
        return files[0]
    stacked = np.stack([nib.load(f).get_fdata(dtype=np.float32) for f in files], -1)
    upload = folder / f"{subject}_stacked.nii.gz"
    nib.save(nib.Nifti1Image(stacked, nib.load(files[0]).affine), upload)
    return upload


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(E2E))
def test_label_server_returns_the_bundles_float_anomaly_map(bundle, server, cohorts, tmp_path):  # noqa: F811
    base, ckpts = server
    cohort = cohorts(E2E[bundle][0])
    upload = upload_of(cohort, "sub-0002", tmp_path)
    (tmp_path / "map.nii.gz").write_bytes(post_file(f"{base}/infer/{bundle}?output=image", upload))
    got = assert_is_the_bundles_map(nib.load(tmp_path / "map.nii.gz"), bundle, cohort, ckpts[bundle], tmp_path,
                                    "Label")

    summary = json.loads(post_file(f"{base}/infer/{bundle}?output=json", upload))["anomaly_map"]
    assert summary["key"] == map_key_of(bundle) and summary["shape"] == list(got.shape)
    assert summary["dtype"] == "float32"
    assert summary["min"] == pytest.approx(float(got.min()), abs=1e-6)
    assert summary["max"] == pytest.approx(float(got.max()), abs=1e-6)


@pytest.mark.slow
def test_label_server_rejects_a_bad_upload_naming_the_problem(server, tmp_path):
    base, _ = server
    wrong = write_nifti(tmp_path / "three_channels.nii.gz", np.zeros((121, 145, 121, 3), np.float32), np.eye(4))
    with pytest.raises(urllib.error.HTTPError) as raised:
        post_file(f"{base}/infer/pd_ae?output=image", wrong)
    body = raised.value.read().decode()
    assert raised.value.code == 422
    assert "expected a 4D image with 2 channels (FA, MD) on the last axis; got shape (121, 145, 121, 3)" in body
