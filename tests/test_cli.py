"""The command line as a user runs it: ``python -m common ...`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    shown = result.stdout + result.stderr  # fire writes help to stderr when there is no terminal
    for command in ("atlas", "synth", "validate", "splits", "experiment", "demo"):
        assert command in shown


def test_atlas_command_prints_roi_counts():
    result = run("atlas", "--grid", "clinicadl2")
    assert result.returncode == 0, result.stderr
    assert "clinicadl2: (80, 96, 80) 2 mm atlas" in result.stdout
    assert "stn_L" in result.stdout and "approximate" in result.stdout


def test_synth_validate_splits_and_a_bad_dataset(tmp_path):
    cohort = tmp_path / "pd"
    result = run("synth", "pd", "--out", str(cohort), "--n-controls", "6", "--n-patients", "1", "--seed", "5",
                 "--progress", "False")
    assert result.returncode == 0, result.stderr
    assert "6 controls, 1 patients" in result.stdout and "s per subject" in result.stdout

    result = run("validate", str(cohort / "dataset.json"))
    assert result.returncode == 0, result.stderr
    assert "OK: 15 files of 7 subjects" in result.stdout

    result = run("splits", str(cohort / "dataset.json"), "--n-splits", "3", "--seed", "1")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((cohort / "splits.json").read_text())
    assert len(manifest["splits"]) == 3
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
