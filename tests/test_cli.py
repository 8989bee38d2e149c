"""The command line as a user runs it: ``python -m common ...`` in a subprocess."""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    shown = result.stdout
    for command in ("atlas", "synth", "validate", "splits", "experiment", "demo"):
        assert command in shown


def test_atlas_command_prints_roi_counts():
    result = run("atlas", "--grid", "clinicadl2")
    assert result.returncode == 0, result.stderr
    assert "clinicadl2: (80, 96, 80) 2 mm atlas" in result.stdout
    assert "stn_L" in result.stdout and "approximate" in result.stdout


@pytest.mark.slow  # synthesises a cohort through the CLI
def test_synth_validate_splits_and_a_bad_dataset(tmp_path):
    cohort = tmp_path / "pd"
    result = run("synth", "pd", "--out", str(cohort), "--n-controls", "6", "--n-patients", "1", "--seed", "5",
                 "--progress", "False")
    assert result.returncode == 0, result.stderr
    assert "6 controls, 1 patients" in result.stdout and "s per subject" in result.stdout

    result = run("validate", str(cohort / "dataset.json"))
    assert result.returncode == 0, result.stderr
    assert "OK: 15 files of 7 subjects" in result.stdout

    # 6 controls give one distinct balanced draw: more splits are refused as identical (test_hostile_inputs.py)
    result = run("splits", str(cohort / "dataset.json"), "--n-splits", "1", "--seed", "1")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((cohort / "splits.json").read_text())
    assert len(manifest["splits"]) == 1
    for split in manifest["splits"]:
        assert not set(split["train"]) & set(split["test"])

    # A user's mistake: an MD map left in mm^2/s. Exit code 2, the file and the problem named, no traceback.
    import nibabel as nib
    import numpy as np

    md_path = cohort / "sub-0002" / "sub-0002_MD.nii.gz"
    img = nib.load(md_path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 3.5e-3, img.affine), md_path)
    result = run("validate", str(cohort / "dataset.json"))
    assert result.returncode == 2
    assert str(md_path) in result.stderr and "scaled" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_writes_cohorts_figure_and_summary(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--out", str(out), "--pd-controls", "5", "--pd-patients", "2", "--pet-controls", "2",
                 "--pet-patients", "2", "--train", "False")
    assert result.returncode == 0, result.stderr
    figure = out / "figures" / "cohorts_overview.png"
    assert figure.stat().st_size > 50_000
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for kind in ("pd", "pet"):
        assert (out / "cohorts" / kind / "dataset.json").is_file()
    assert (out / "cohorts" / "pd" / "splits.json").is_file()
    assert "pd_seconds_per_subject" in result.stdout and "figure" in result.stdout


# --- help, argument checks and the one error block (common.app.cli, common.errors) ---------------------------------

SLOW_SECONDS = 2.0
HEAVY_MODULES = ("torch", "monai", "nibabel", "numpy", "scipy", "fire")


def _all_commands():
    from common.app.cli import iter_commands
    from common.app.commands import _commands

    return list(iter_commands(_commands()))


def _listing(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_prints_help_and_runs_nothing(tmp_path, monkeypatch, capsys, flag):
    """`-h` / `--help` on the top level, every group and every command: exit 0, the subcommands or every flag
    with its default listed, nothing written (`synth pd -h` used to write a 40-subject cohort)."""
    from common.app import main
    from common.app.cli import flags_of

    monkeypatch.chdir(tmp_path)
    main([flag])
    top = capsys.readouterr().out
    assert all(name in top for name in ("atlas", "synth", "experiment", "release", "--debug"))
    for path, target in _all_commands():
        assert main([*path, flag]) is None
        shown = capsys.readouterr().out
        assert shown.startswith(f"usage: python -m common {' '.join(path)}"), shown
        if inspect.isclass(target):
            subcommands = [n for n in vars(target) if not n.startswith("_")]
            assert subcommands and all(f"\n  {n} " in shown for n in subcommands), shown
        else:
            for f in flags_of(target):
                start = f"  {f.name.upper()} " if f.required else f"  {f.option} {f.kind.upper()} "
                line = next(line for line in shown.splitlines() if line.startswith(start))
                assert ("(required)" if f.required else f"(default: {f.default})") in line, line
    assert main(["synth", "pd", "--out", str(tmp_path / "x"), "-h", "--n-controls", "2"]) is None  # anywhere
    assert _listing(tmp_path) == []


def test_every_flag_has_a_one_line_description():
    """The docstring's `Args:` section documents every parameter (a new flag without help fails here)."""
    from common.app.cli import flags_of

    n = 0
    for path, target in _all_commands():
        if inspect.isclass(target):
            continue
        for f in flags_of(target):
            assert f.help and "\n" not in f.help, f"{' '.join(path)} {f.option} has no help line"
            n += 1
    assert n >= 45


@pytest.mark.parametrize("argv", [["--help"], ["synth", "pd", "-h"], ["experiment", "pd", "--help"]])
def test_help_is_fast_and_imports_nothing_heavy(tmp_path, argv):
    """`--help` answers in under 2 s as a user runs it, without torch/MONAI/nibabel/numpy (`-X importtime`)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "common", *argv], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=_env())
    elapsed = time.perf_counter() - start
    assert result.returncode == 0 and "usage: python -m common" in result.stdout, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY_MODULES), imported & set(HEAVY_MODULES)
    assert elapsed < SLOW_SECONDS, f"{elapsed:.2f} s"
    assert _listing(tmp_path) == []


def _documented_commands() -> list[str]:
    docs = [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("bundles/*/docs/*.md")]
    found = set()
    for path in docs:
        for match in re.finditer(r"python -m common ([^`\n#|]*)", path.read_text()):
            found.add(match.group(1).replace("[", "").replace("]", "").rstrip(").").strip())
    return sorted(c for c in found if c)


def test_documented_commands_still_parse():
    """Every `python -m common ...` line of the README and model cards parses with the project's parser."""
    from common.app.cli import parse_command_line
    from common.app.commands import _commands
    from common.errors import SettingsError

    commands = _documented_commands()
    assert len(commands) >= 15
    for line in commands:
        try:
            _path, func, kwargs, help_text = parse_command_line(_commands(), shlex.split(line))
        except SettingsError as err:  # prose naming a command without its argument: `python -m common splits`
            assert "missing argument" in err.problem and len(shlex.split(line)) == 1, line
            continue
        assert func is not None or help_text is not None, line
    _, _, kwargs, _ = parse_command_line(_commands(), shlex.split(
        "synth pd --out D --n-controls 56 --paper_size --noprogress --effect-size=0.5 --seed -0"))
    assert kwargs == {"out": "D", "n_controls": 56, "paper_size": True, "progress": False, "effect_size": 0.5,
                      "seed": 0}
    _, _, kwargs, _ = parse_command_line(_commands(), ["splits", "d.json", "--n_test", "None", "--n_val", "2"])
    assert kwargs == {"dataset_json": "d.json", "n_test": None, "n_val": 2}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "BRAIN_ANOMALY_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def test_project_errors_give_one_block_exit_2_and_a_traceback_only_on_request(tmp_path, monkeypatch, capsys):
    """A data error in `python -m common` (also wrapped in MONAI's RuntimeError, as an in-process bundle run
    raises it): one `error:` block naming the file and the problem, exit code 2; `--debug` or the environment
    variable adds the traceback; other exceptions pass unchanged."""
    from common.app import main
    from common.errors import InputDataError, exit_on_project_error, format_error

    monkeypatch.delenv("BRAIN_ANOMALY_DEBUG", raising=False)
    missing = tmp_path / "nope" / "dataset.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(missing)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(f"error: {missing}: ") and "Traceback" not in err and "BRAIN_ANOMALY_DEBUG=1" in err
    assert len(err.strip().splitlines()) == 2

    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(missing), "--debug"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback (most recent call last)" in err and f"error: {missing}" in err

    monkeypatch.setenv("BRAIN_ANOMALY_DEBUG", "1")
    with pytest.raises(SystemExit), exit_on_project_error():
        try:
            raise InputDataError("a.nii.gz", "all zero")
        except InputDataError as cause:
            raise RuntimeError("Failed to evaluate ConfigExpression") from cause
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: a.nii.gz: all zero" in err
    monkeypatch.delenv("BRAIN_ANOMALY_DEBUG")

    with pytest.raises(ZeroDivisionError), exit_on_project_error():
        1 / 0  # noqa: B018 - not a project error: unchanged
    wrapped = RuntimeError("outer")
    wrapped.__context__ = KeyError("k")
    wrapped.__context__.__cause__ = InputDataError("b.json", "bad key")
    assert format_error(wrapped, hint=False) == "error: b.json: bad key"
    assert format_error(ValueError("x"), hint=False) == "error: ValueError: x"
    assert _listing(tmp_path) == []


HOOK_SCRIPT = """
import logging, sys
from common.errors import InputDataError, install_excepthook
install_excepthook(); install_excepthook()
logging.basicConfig(stream=sys.stdout, level=logging.INFO)
try:
    raise {error}
except Exception as cause:
    logging.getLogger("StatsHandler").exception("Exception: %s", cause)  # what MONAI's StatsHandler does
    raise RuntimeError("Failed to instantiate SupervisedTrainer") from cause
"""


@pytest.mark.parametrize("debug", [False, True])
def test_excepthook_reports_a_chained_project_error_and_exits_2(tmp_path, debug):
    """The hook the bundles install: an uncaught error holding an InputDataError prints one block and exits 2,
    also stripping the traceback MONAI's StatsHandler logs; any other error keeps Python's traceback and 1."""
    env = _env(**({"BRAIN_ANOMALY_DEBUG": "1"} if debug else {}))
    script = HOOK_SCRIPT.format(error="InputDataError('sub-03_FA.nii.gz', 'contains 12 NaN voxels')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "error: sub-03_FA.nii.gz: contains 12 NaN voxels" in result.stderr
    assert ("Traceback" in result.stderr + result.stdout) is debug
    if not debug:
        assert result.stderr.strip().splitlines()[0].startswith("error: ")
    result = subprocess.run([sys.executable, "-c", HOOK_SCRIPT.format(error="KeyError('x')")], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 1 and "Traceback" in result.stderr and "error:" not in result.stderr


#: Overlays merged after train.json (``--config_file "['train.json','train_short.json']"``): settings only.
OVERLAYS = ("train_short.json",)


def _bundle_configs():
    return sorted(p for p in (REPO / "bundles").glob("*/configs/*.json")
                  if p.name != "metadata.json" and p.name not in OVERLAYS)


def test_every_bundle_config_installs_the_hook_first_and_train_configs_check_settings():
    """The hook is the first `initialize` item of every config (so it covers every later item, run and
    finalize); train configs check every setting they name, and each named setting exists."""
    configs = _bundle_configs()
    assert len(configs) == 12
    for overlay in (p for p in (REPO / "bundles").glob("*/configs/*.json") if p.name in OVERLAYS):
        # An overlay only changes settings that train.json defines (and checks): no workflow items of its own.
        train = json.loads((overlay.parent / "train.json").read_text())
        assert set(json.loads(overlay.read_text())) <= set(train), overlay
    for path in configs:
        config = json.loads(path.read_text())
        assert config["initialize"][0] == "$common.errors.install_excepthook()", path
        assert "$import common.data" in config["imports"], path  # imports common.errors
        if path.stem in ("train", "multi_gpu_train"):
            check = config["initialize"][1]
            assert check.startswith("$common.bundle_support.check_settings("), path
            names = re.findall(r"(\w+)=@(\w+)", check)
            train = json.loads((path.parent / "train.json").read_text())
            assert all(a == b and a in train for a, b in names) and {"epochs", "seed", "learning_rate"} <= {
                a for a, _ in names}, (path, names)


def _bundle_run(tmp_path, config: str, *overrides: str, bundle: str = "pd_ae"):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           str(REPO / "bundles" / bundle / "configs" / config), "--bundle_root", str(tmp_path / "bundle"), *overrides]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=_env(OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_bundle_run_with_a_data_error_prints_one_block_and_exits_2(tmp_path):
    """`python -m monai.bundle run` on a broken dataset (the error raised in `run`, wrapped by MONAI) and an
    inference without weights (a later `initialize` item): one block, exit 2, no traceback, nothing written."""
    bad = tmp_path / "data"
    bad.mkdir()
    (bad / "dataset.json").write_text(json.dumps({"name": "broken", "grid": "spm1p5"}))
    result = _bundle_run(tmp_path, "train.json", "training", "--dataset_dir", str(bad))
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"error: {bad / 'dataset.json'}: " in result.stderr and "missing required key 'modality'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("error:") == 1
    result = _bundle_run(tmp_path, "inference.json", "--dataset_dir", str(bad), "--ckpt_path",
                         str(tmp_path / "none.pt"), bundle="pd_sae")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"error: {tmp_path / 'none.pt'}: file not found (trained weights" in result.stderr
    assert _listing(tmp_path) == ["data", "data/dataset.json"]
