"""Hostile command lines: every bad flag is refused before any work with exit code 2, one `error:` block naming
the flag and the expected value, and no output written (the rows `--epochs 1.5`, `--epochs abc`, `--splits 0`,
`synth pd -h` and a settings error under `python -m monai.bundle run`)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# (argv, the flag or argument the message must name, a phrase of the problem). Output flags point into the test's
# folder (OUT is replaced), so "nothing written" is checked where a run would write.
CASES = [
    (["experiment", "pd", "--epochs", "1.5", "--out", "OUT"], "--epochs", "expected an integer >= 1, got '1.5'"),
    (["experiment", "pd", "--epochs", "abc", "--out", "OUT"], "--epochs", "expected an integer >= 1, got 'abc'"),
    (["experiment", "pd", "--splits", "0", "--out", "OUT"], "--splits", "expected an integer >= 1, got '0'"),
    (["experiment", "pd", "--splits", "-1", "--out", "OUT"], "--splits", "expected an integer >= 1"),
    (["experiment", "pd", "--n_val", "-1", "--out", "OUT"], "--n_val", "expected an integer >= 0"),
    (["experiment", "pd", "--seed", "1e3", "--out", "OUT"], "--seed", "expected an integer in [0, 4294967295]"),
    (["experiment", "pd", "--epochs", "--out", "OUT"], "--epochs", "needs a value"),
    (["experiment", "pd", "--epochs", "2", "--epochs", "3", "--out", "OUT"], "--epochs", "given twice"),
    (["experiment", "pd", "--bundle", "pd_xx", "--out", "OUT"], "--bundle",
     "expected one of pd_ae, pd_sae, normative, got 'pd_xx'"),
    (["experiment", "pd", "--scoring", "z", "--out", "OUT"], "--scoring", "expected one of None, zscore, raw"),
    (["experiment", "pd", "--n_calib", "-1", "--out", "OUT"], "--n_calib", "expected an integer >= 0"),
    (["benchmark", "detection", "--seeds", "0,x", "--out", "OUT"], "--seeds", "expected comma-separated integers"),
    (["benchmark", "detection", "--quick", "--out", "OUT", "--model", "pd_ae"], "--model", "known flags: --out"),
    (["experiment", "pd", "--progress", "maybe", "--out", "OUT"], "--progress", "expected true or false, got 'maybe'"),
    (["experiment", "pd", "--spilts", "3", "--out", "OUT"], "--spilts", "known flags: --bundle"),
    (["experiment", "pd", "-s", "3", "--out", "OUT"], "-s", "short flags are not abbreviations"),
    (["experiment", "pet", "--split", "-1", "--out", "OUT"], "--split", "expected an integer >= 0"),
    (["experiment", "pet", "--learning_rate", "0", "--out", "OUT"], "--learning_rate", "a finite number > 0"),
    (["experiment", "pet", "--learning-rate", "nan", "--out", "OUT"], "--learning_rate", "a finite number > 0"),
    (["experiment", "pet", "--batch_size", "0", "--out", "OUT"], "--batch_size", "expected an integer >= 1"),
    (["experiment", "pet", "--short_schedule=yess", "--out", "OUT"], "--short_schedule", "true or false"),
    (["experiment", "compare", "--run", "a,b", "--out", "OUT"], "--run", "known flags: --runs, --out"),
    (["experiment", "pdd"], "pdd", "unknown command of 'python -m common experiment'; commands: pd, pet, compare"),
    (["synthh", "pd"], "synthh", "unknown command of 'python -m common'"),
    (["--epochs", "3"], "--epochs", "expected a command of 'python -m common' first"),
    (["synth", "pd", "--out", "OUT", "--n_controls", "1.5"], "--n_controls", "expected an integer >= 1"),
    (["synth", "pd", "--out", "OUT", "--n-controls", "0"], "--n_controls", "expected an integer >= 1, got '0'"),
    (["synth", "pd", "--out", "OUT", "--n_patients", "-3"], "--n_patients", "expected an integer >= 0"),
    (["synth", "pd", "--out", "OUT", "--seed", "-1"], "--seed", "expected an integer in [0, 4294967295]"),
    (["synth", "pd", "--out", "OUT", "--effect_size", "inf"], "--effect_size", "a finite number >= 0"),
    (["synth", "pd", "--out", "OUT", "--heterogeneity", "-0.5"], "--heterogeneity", "a finite number >= 0"),
    (["synth", "pd", "--out", "OUT", "--paper_size", "2"], "--paper_size", "expected true or false, got '2'"),
    (["synth", "pd", "--out", "OUT", "--paper_size=2"], "--paper_size", "expected true or false, got '2'"),
    (["synth", "pd", "--out", "OUT", "-n", "3"], "-n", "short flags are not abbreviations"),
    (["synth", "pet", "--out", "OUT", "--degree_min", "150"], "--degree_min", "a finite number in [0, 100]"),
    (["synth", "pet", "--out", "OUT", "--degree-max", "nan"], "--degree_max", "a finite number in [0, 100]"),
    (["synth", "pet", "--out", "OUT", "--degree_min", "40", "--degree_max", "20"], "--degree_min",
     "40 is above --degree_max 20"),
    (["splits", "OUT/dataset.json", "--n_splits", "0"], "--n_splits", "expected an integer >= 1"),
    (["splits", "OUT/dataset.json", "--n_test", "0"], "--n_test", "expected an integer >= 1"),
    (["splits", "OUT/dataset.json", "--n_val", "-2"], "--n_val", "expected an integer >= 0"),
    (["splits", "OUT/dataset.json", "--seed", "abc"], "--seed", "got 'abc'"),
    (["splits", "--n_splits", "3"], "DATASET_JSON", "missing argument of 'splits'"),
    (["splits", "OUT/dataset.json", "OUT/extra"], "OUT/extra",
     "unexpected argument of 'splits'; it takes DATASET_JSON"),
    (["validate", "OUT/dataset.json", "--check_data", "maybe"], "--check_data", "true or false, got 'maybe'"),
    (["validate"], "DATASET_JSON", "missing argument of 'validate'"),
    (["atlas", "--grid", "spm9"], "--grid", "unknown grid 'spm9'; expected one of: all, spm1p5, clinicadl2"),
    (["atlas", "--rebuild=2"], "--rebuild", "expected true or false"),
    (["demo", "--out", "OUT", "--pd_controls", "0"], "--pd_controls", "expected an integer >= 1"),
    (["demo", "--out", "OUT", "--pd_ae_epochs", "1.5"], "--pd_ae_epochs", "expected an integer >= 1, got '1.5'"),
    (["demo", "--out", "OUT", "--train", "nope"], "--train", "expected true or false, got 'nope'"),
    (["synth", "pd", "OUT"], "OUT", "unexpected argument of 'synth pd'; it takes none"),
    (["release", "--out", "OUT", "--max_embedded_mb", "-1"], "--max_embedded_mb", "a finite number >= 0"),
    (["release", "--out", "OUT", "--max_embedded_mb", "nan"], "--max_embedded_mb", "a finite number >= 0"),
    (["release", "--out", "OUT", "--bogus"], "--bogus", "known flags: --bundles, --out, --max_embedded_mb"),
]


@pytest.mark.parametrize(("argv", "names", "problem"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_flag_is_refused_before_work(tmp_path, monkeypatch, capsys, argv, names, problem):
    from common.app import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRAIN_ANOMALY_DEBUG", raising=False)
    out = tmp_path / "out"
    argv = [str(out) + a[3:] if a.startswith("OUT") else a for a in argv]
    names = str(out) + names[3:] if names.startswith("OUT") else names
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert captured.err.startswith(f"error: {names}: "), captured.err
    assert problem in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err  # a bad flag: no traceback hint needed
    assert captured.out == "" and list(tmp_path.iterdir()) == []


def test_synth_pd_dash_h_prints_help_and_writes_no_cohort(tmp_path):
    """The row as written: `python -m common synth pd -h` (Fire took -h as --heterogeneity and wrote 165 MB)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "common", "synth", "pd", "-h"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: python -m common synth pd [FLAGS]")
    assert "--heterogeneity FLOAT" in result.stdout and "(default: 0.0)" in result.stdout
    assert list(tmp_path.iterdir()) == []


# Bad settings of a bundle run, refused by `check_settings` in the train configs' `initialize` (read from the
# real configs, MONAI resolving them as `python -m monai.bundle run` does, overrides as its parser passes them).
SETTINGS = [
    ("pd_ae", "epochs", 1.5, "expected an integer >= 1, got 1.5 (float)"),
    ("pd_ae", "epochs", "abc", "expected an integer >= 1, got 'abc'"),
    ("pd_ae", "epochs", 0, "expected an integer >= 1, got 0 (int)"),
    ("pd_ae", "batch_size", -4, "expected an integer >= 1"),
    ("pd_ae", "n_splits", 0, "expected an integer >= 1"),
    ("pd_ae", "amp", "yes", "expected true or false, got 'yes'"),
    ("pd_sae", "epochs", 2.5, "expected an integer >= 1, got 2.5 (float)"),
    ("pd_sae", "pairs_per_batch", 0, "expected an integer >= 1"),
    ("pd_sae", "learning_rate", math.nan, "expected a finite number > 0, got nan (float)"),
    ("pd_sae", "seed", -1, "expected an integer in [0, 4294967295]"),
    ("ad_vae3d", "epochs", True, "expected an integer >= 1, got True (bool)"),
    ("ad_vae3d", "learning_rate", -1e-5, "expected a finite number > 0"),
    ("ad_vae3d", "split_index", -1, "expected an integer >= 0"),
    ("ad_vae3d", "n_val", 1.0, "expected an integer >= 0, got 1.0 (float)"),
]


@pytest.mark.parametrize("config", ["train.json", "multi_gpu_train.json"])
@pytest.mark.parametrize(("bundle", "name", "value", "problem"), SETTINGS)
def test_bad_bundle_setting_is_refused_in_initialize(bundle, name, value, problem, config):
    from monai.bundle import ConfigParser

    from common.errors import SettingsError, find_project_error

    parser = ConfigParser()  # multi_gpu_train.json merged over train.json, as the README runs it
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / c) for c in dict.fromkeys(("train.json", config))])
    parser[name] = value
    index = next(i for i, item in enumerate(parser["initialize"]) if "check_settings" in item)
    with pytest.raises(Exception) as info:
        parser.get_parsed_content(f"initialize#{index}")
    err = find_project_error(info.value)
    assert isinstance(err, SettingsError) and err.setting == f"--{name}" and problem in err.problem, info.value
    parser2 = ConfigParser()
    parser2.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    assert parser2.get_parsed_content(f"initialize#{index}") is True  # the shipped defaults pass


@pytest.mark.slow
@pytest.mark.parametrize(("value", "shown"), [("1.5", "1.5 (float)"), ("abc", "'abc'")])
def test_bundle_run_epochs_row_as_written(tmp_path, value, shown):
    """`python -m monai.bundle run training ... --epochs 1.5` (trained 2 epochs) and `--epochs abc` (a
    traceback): one block naming the config and the flag, exit 2, no bundle folder written."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop("BRAIN_ANOMALY_DEBUG", None)
    config = REPO / "bundles" / "pd_ae" / "configs" / "train.json"
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(config),
                             "--bundle_root", str(tmp_path / "b"), "--epochs", value], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"error: {config}: --epochs: expected an integer >= 1, got {shown}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []
