"""Release zips (``python -m common release``): reproducible bytes, self-contained content, the weights policy, and
a released bundle downloaded with ``monai.bundle download`` and run outside the repository on its vendored
``common``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import slow_cases, tiny_run

from common.app.release import PACKAGE_PATTERNS, ZIP_EPOCH, build_release, build_releases
from common.errors import InputDataError

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
EMBED_LIMIT_MB = 50.0  # build_release's default


def clean_env() -> dict:
    """The environment of a user's shell: no PYTHONPATH pointing into the repository."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}


def run(cmd: list[str], cwd: Path, timeout: int = 300) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{log[-4000:]}"
    return log


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def package_files() -> dict[str, bytes]:
    """What a vendored copy must hold: the package's sources and package data, read independently."""
    root = REPO / "common"
    return {p.relative_to(REPO).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".toml")}


def test_vendored_patterns_are_the_packages_own():
    """A release vendors what ``pip install`` installs: the .py files and pyproject's package data."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["common"]
    assert set(PACKAGE_PATTERNS) == {"*.py"} | {p.removeprefix("**/") for p in data}


@pytest.mark.parametrize("bundle", slow_cases(BUNDLES, set(BUNDLES) - {"pd_ae"}))  # pd_ae in the quick lane
def test_release_is_reproducible_and_self_contained(bundle, tmp_path):
    version = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())["version"]
    # once with the command line, once in-process: the same bytes
    # run from the repository so that the command packages this checkout's common/, as the in-process build does
    # (an editable install elsewhere would otherwise decide which common/ is copied)
    log = run([sys.executable, "-m", "common", "release", "--bundles", bundle, "--out", str(tmp_path / "a")], REPO)
    first = tmp_path / "a" / f"{bundle}_v{version}.zip"
    second = build_release(bundle, out=tmp_path / "b").path
    assert second.name == first.name and sha256(first) == sha256(second)
    assert first.read_bytes() == second.read_bytes()
    # the command prints path, size and sha256
    line = next(line for line in log.splitlines() if line.startswith(str(first)))
    assert sha256(first) in line and f"{first.stat().st_size / 2**20:.2f} MiB" in line

    with zipfile.ZipFile(first) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names) and len(set(names)) == len(names)
        assert all(i.date_time == ZIP_EPOCH and (i.external_attr >> 16) & 0o777 == 0o644 for i in infos)
        assert all(n.startswith(f"{bundle}/") for n in names)  # one top folder, as monai.bundle download expects
        parts = [set(Path(n).parts) for n in names]
        assert not any(p & {"__pycache__", "outputs", "logs", "eval", "runs"} for p in parts)
        assert not any(n.endswith((".pyc", ".nii.gz")) or Path(n).name.startswith(".") for n in names)
        models = [n for n in names if n.startswith(f"{bundle}/models/")]
        assert set(models) <= {f"{bundle}/models/model.pt", f"{bundle}/models/train_summary.json"}
        # the bundle's files, byte for byte
        for rel in ("LICENSE", "docs/README.md", "configs/metadata.json", "configs/train.json",
                    "configs/inference.json", "configs/multi_gpu_train.json", "configs/logging.conf"):
            assert zf.read(f"{bundle}/{rel}") == (REPO / "bundles" / bundle / rel).read_bytes(), rel
        # the vendored package is exactly the repository's sources and package data
        vendored = {n.removeprefix(f"{bundle}/"): zf.read(n) for n in names if n.startswith(f"{bundle}/common/")}
        assert vendored == package_files()
        # weights: embedded when small, else listed with their sha256
        weights = REPO / "bundles" / bundle / "models" / "model.pt"
        if weights.is_file() and weights.stat().st_size <= EMBED_LIMIT_MB * 2**20:
            assert zf.read(f"{bundle}/models/model.pt") == weights.read_bytes()
        elif weights.is_file():
            listed = json.loads(zf.read(f"{bundle}/large_files.json"))["large_files"]
            expected = {"path": "models/model.pt", "hash_val": sha256(weights), "hash_type": "sha256"}
            assert expected.items() <= listed[0].items()
        else:
            assert not models


def _fake_bundle(root: Path, name: str = "pd_sae") -> Path:
    """A copy of a real bundle's released files in ``root/<name>`` (tests change it at will)."""
    src, dst = REPO / "bundles" / "pd_sae", root / name
    for rel in ("configs", "docs"):
        shutil.copytree(src / rel, dst / rel)
    shutil.copy(src / "LICENSE", dst / "LICENSE")
    return dst


def test_times_permissions_links_and_generated_files_do_not_change_the_bytes(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundles")
    shared = bundle / "shared"  # links are followed when they stay inside the bundle (tests/test_hostile_runs.py)
    shared.mkdir()
    (shared / "notes.md").write_text("linked notes\n")
    (shared / "scripts").mkdir()
    (shared / "scripts" / "__init__.py").write_text("VALUE = 1\n")
    (bundle / "docs" / "notes.md").symlink_to(Path("..") / "shared" / "notes.md")
    (bundle / "scripts").symlink_to(shared / "scripts", target_is_directory=True)
    first = build_release("pd_sae", out=tmp_path / "a", bundles_dir=tmp_path / "bundles")

    # what a run or an editor leaves behind, other times and permissions: none of it reaches the zip
    for rel in ("logs/events.out", "eval/inference/x.nii.gz", "models/train_summary.json", "docs/.README.md.swp",
                "scripts/__pycache__/x.cpython-311.pyc", "common/__init__.py"):
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_text("generated\n")
    for path in bundle.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (1_900_000_000, 1_900_000_000))
            path.chmod(0o600)
    second = build_release("pd_sae", out=tmp_path / "b", bundles_dir=tmp_path / "bundles")
    assert first.sha256 == second.sha256 == sha256(second.path)

    with zipfile.ZipFile(second.path) as zf:
        # links are dereferenced: their targets' content, as regular files
        assert zf.read("pd_sae/docs/notes.md") == b"linked notes\n"
        assert zf.read("pd_sae/scripts/__init__.py") == b"VALUE = 1\n"
        assert all(i.external_attr >> 16 == 0o100644 for i in zf.infolist())
        # the vendored package is the real one, not the bundle's stray common/ folder
        assert zf.read("pd_sae/common/__init__.py") == (REPO / "common" / "__init__.py").read_bytes()


def test_weights_are_embedded_when_small_else_listed_for_download_large_files(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundles")
    (bundle / "models").mkdir()
    torch.manual_seed(0)
    torch.save({"w": torch.randn(64, 64)}, bundle / "models" / "model.pt")  # ~16 KiB
    (bundle / "models" / "train_summary.json").write_text('{"epochs": 3}\n')
    weights = (bundle / "models" / "model.pt").read_bytes()

    small = build_release("pd_sae", out=tmp_path / "small", bundles_dir=tmp_path / "bundles")
    assert small.weights == "embedded" and small.asset is None
    with zipfile.ZipFile(small.path) as zf:
        assert zf.read("pd_sae/models/model.pt") == weights
        assert zf.read("pd_sae/models/train_summary.json") == b'{"epochs": 3}\n'
        assert "pd_sae/large_files.json" not in zf.namelist()

    large = build_release("pd_sae", out=tmp_path / "large", bundles_dir=tmp_path / "bundles", max_embedded_mb=0.01)
    assert large.weights == "listed in large_files.json"
    assert large.asset == tmp_path / "large" / "pd_sae_v0.1.0_model.pt" and large.asset.read_bytes() == weights
    with zipfile.ZipFile(large.path) as zf:
        assert [n for n in zf.namelist() if "/models/" in n] == ["pd_sae/models/train_summary.json"]
        listed = json.loads(zf.read("pd_sae/large_files.json"))
        zf.extractall(tmp_path / "extracted")
    assert listed == {"large_files": [{"path": "models/model.pt", "url": large.asset.as_uri(),
                                       "hash_val": hashlib.sha256(weights).hexdigest(), "hash_type": "sha256"}]}
    # MONAI's own tool fetches the listed weights and checks their sha256
    from monai.bundle import download_large_files

    download_large_files(bundle_path=str(tmp_path / "extracted" / "pd_sae"))
    assert (tmp_path / "extracted" / "pd_sae" / "models" / "model.pt").read_bytes() == weights

    hosted = build_release("pd_sae", out=tmp_path / "hosted", bundles_dir=tmp_path / "bundles", max_embedded_mb=0.01,
                           weights_base_url="https://example.org/releases/v0.1.0/")
    with zipfile.ZipFile(hosted.path) as zf:
        url = json.loads(zf.read("pd_sae/large_files.json"))["large_files"][0]["url"]
    assert url == "https://example.org/releases/v0.1.0/pd_sae_v0.1.0_model.pt"


@pytest.mark.parametrize("breakage, culprit, problem", [
    ("no_version", "configs/metadata.json", "'version' must be a version string"),
    ("version_not_in_changelog", "configs/metadata.json", "no entry in 'changelog'"),
    ("no_licence", "LICENSE", "missing"),
    ("truncated_weights", "models/model.pt", "not loadable as weights"),
])
def test_a_bad_bundle_fails_before_any_zip_is_written(tmp_path, breakage, culprit, problem):
    good = _fake_bundle(tmp_path / "bundles", "good")
    bad = _fake_bundle(tmp_path / "bundles", "bad")
    meta_path = bad / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if breakage == "no_version":
        del meta["version"]
    elif breakage == "version_not_in_changelog":
        meta["version"] = "9.9.9"
    elif breakage == "no_licence":
        (bad / "LICENSE").unlink()
    elif breakage == "truncated_weights":
        (bad / "models").mkdir()
        torch.save({"w": torch.randn(256)}, bad / "models" / "model.pt")
        data = (bad / "models" / "model.pt").read_bytes()
        (bad / "models" / "model.pt").write_bytes(data[: len(data) // 2])
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputDataError) as err:
        build_releases(["good", "bad"], out=tmp_path / "dist", bundles_dir=tmp_path / "bundles", quiet=True)
    assert err.value.path == str(bad / culprit) and problem in err.value.problem
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())
    assert good.is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_download_and_run_outside_the_repository(bundle, tmp_path, tiny_bundle_cohort):
    """The released zip, fetched with ``monai.bundle download``, trains and infers from its own folder (outside the
    repository, no PYTHONPATH) on its vendored ``common`` although the repository's is installed (editable)."""
    spec = tiny_run(bundle)
    cohort = tiny_bundle_cohort(spec["cohort"])
    release = build_release(bundle, out=tmp_path / "dist")
    bundles_dir = tmp_path / "downloads"
    log = run([sys.executable, "-m", "monai.bundle", "download", "--name", bundle, "--version", release.version,
               "--url", release.path.as_uri(), "--bundle_dir", str(bundles_dir)], tmp_path)
    root = bundles_dir / bundle
    assert (root / "configs" / "train.json").is_file() and (root / "common" / "__init__.py").is_file(), log
    assert REPO not in root.resolve().parents

    # dataset_dir is given as an expression that also reports which `common` the config's `$import common` bound
    probe = f"$print('COMMON_FILE=' + common.__file__) or {str(cohort)!r}"

    def bundle_run(run_id: str, config: str, overrides: dict) -> str:
        args = [a for k, v in overrides.items() for a in (f"--{k}", repr(v))]
        out = run([sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", f"configs/{config}",
                   "--dataset_dir", probe, *args], cwd=root)
        found = re.findall(r"^COMMON_FILE=(.*)$", out, flags=re.M)
        assert found and all(Path(f) == root / "common" / "__init__.py" for f in found), out[-3000:]
        return out

    train_log = bundle_run("training", "train.json", spec["train"])
    summary = json.loads((root / "models" / "train_summary.json").read_text())
    assert summary["epochs"] == spec["train"]["epochs"] and (root / "models" / "model.pt").is_file(), train_log[-3000:]
    assert list((root / "logs").iterdir())  # TensorBoard events, written inside the downloaded bundle

    infer_log = bundle_run("evaluating", "inference.json", spec["infer"])
    outputs = sorted((root / "eval").rglob("*.nii.gz"))
    assert outputs, infer_log[-3000:]
    assert all(any(s in p.name for s in spec["infer"]["subject_ids"]) for p in outputs), outputs
