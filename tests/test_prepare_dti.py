"""``python -m common prepare dti``: BIDS discovery, participants, input checks, the runner (parallel, atomic,
resumable, failures listed), registration QC, the tensor fit, and, on a synthetic subject moved off the template by a
known affine + warp, the recovery of FA/MD and of the alignment; then a BIDS tree end to end into ``validate`` and
pd_ae's inference.

Tolerances (docs/prepare.md): inside the brain eroded by 6 mm, median |FA error| <= 0.06 and median |MD error| <= 0.03
(scaled MD, i.e. 1.05e-4 mm^2/s), brain-mask Dice >= 0.95, mean landmark (deep-nucleus centroid) error <= 2 mm.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from prepare_phantoms import (
    Motion,
    dwi_phantom,
    dwi_sidecars,
    eigenvalues,
    fake_pipeline,
    gradient_table,
    native_affine,
    random_motion,
    simulate_dwi,
    to_native,
    write_bids_scan,
    write_participants,
)
from scipy import ndimage

from common.app.commands import main
from common.errors import InputDataError
from common.prepare.bids import BidsScan, find_scans, read_participants, subject_record, write_dataset_json
from common.prepare.runner import PrepareOptions, run_subjects, subject_task

# ------------------------------------------------------------------------------------------------ tiny inputs


def _tiny_dwi(seed: int = 0, shape=(18, 18, 18), block: int = 13) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dwi, bvals, bvecs): a cube of tissue (FA 0.5, MD 0.8e-3) in noise-free background, b=0 + 7 directions."""
    bvals, bvecs = gradient_table((1000.0,), 7, n_b0=1, seed=seed)
    lo = (shape[0] - block) // 2
    s0 = np.zeros(shape, np.float32)
    s0[lo:lo + block, lo:lo + block, lo:lo + block] = 1000.0
    fa = np.where(s0 > 0, 0.5, 0.0).astype(np.float32)
    md = np.where(s0 > 0, 0.8e-3, 0.0).astype(np.float32)
    return simulate_dwi(fa, md, s0, bvals, bvecs, snr=200.0, seed=seed), bvals, bvecs


def _tiny_scan(root: Path, subject: str = "sub-01", session: str | None = None, dwi=None, bvals=None, bvecs=None,
               sidecars: dict | None = None) -> BidsScan:
    d, b, v = _tiny_dwi()
    dwi = d if dwi is None else dwi
    b = b if bvals is None else bvals
    v = v if bvecs is None else bvecs
    write_bids_scan(root, subject, "dwi", dwi, np.diag([2.0, 2.0, 2.0, 1.0]), session=session,
                    sidecars=sidecars or dwi_sidecars(b, v))
    return next(s for s in find_scans(root, "dwi") if s.subject == subject and s.session == session)


# ------------------------------------------------------------------------------------------ BIDS, participants


def test_find_scans_sessions_sidecars_t1w_and_keys(tmp_path):
    d, b, v = _tiny_dwi()
    write_bids_scan(tmp_path, "sub-02", "dwi", d, np.eye(4), session="ses-01", sidecars=dwi_sidecars(b, v),
                    t1w=(np.ones((4, 4, 4)), np.eye(4)))
    write_bids_scan(tmp_path, "sub-02", "dwi", d, np.eye(4), session="ses-02", sidecars=dwi_sidecars(b, v))
    write_bids_scan(tmp_path, "sub-01", "dwi", d, np.eye(4), sidecars=dwi_sidecars(b, v))
    write_bids_scan(tmp_path, "sub-03", "pet", d[..., 0], np.eye(4), sidecars={"json": {"Units": "Bq/mL"}})
    scans = find_scans(tmp_path, "dwi")
    assert [s.key for s in scans] == ["sub-01", "sub-02_ses-01", "sub-02_ses-02"]
    assert scans[1].t1w == tmp_path / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_T1w.nii.gz"
    assert scans[0].t1w is None and scans[2].t1w is None
    assert scans[0].sidecars == {"bval": tmp_path / "sub-01" / "dwi" / "sub-01_dwi.bval",
                                 "bvec": tmp_path / "sub-01" / "dwi" / "sub-01_dwi.bvec"}
    pet = find_scans(tmp_path, "pet")
    assert [(s.key, s.sidecars["json"].name) for s in pet] == [("sub-03", "sub-03_pet.json")]


def test_find_scans_names_a_missing_sidecar_and_an_empty_tree(tmp_path):
    d, b, v = _tiny_dwi()
    write_bids_scan(tmp_path, "sub-01", "dwi", d, np.eye(4), sidecars={"bval": dwi_sidecars(b, v)["bval"]})
    with pytest.raises(InputDataError, match=r"sub-01_dwi\.bvec"):
        find_scans(tmp_path, "dwi")
    with pytest.raises(InputDataError, match="no pet scans found"):
        find_scans(tmp_path, "pet")


def test_participants_give_group_age_sex_and_refuse_an_unknown_group(tmp_path):
    write_participants(tmp_path, [{"participant_id": "sub-01", "group": "HC", "age": 61.5, "sex": "female"},
                                  {"participant_id": "sub-02", "group": "PD", "age": "n/a", "sex": "M"},
                                  {"participant_id": "sub-03", "group": "n/a", "age": 70, "sex": "n/a"}])
    info = read_participants(tmp_path)
    assert info == {"sub-01": {"group": "control", "age": 61.5, "sex": "F"},
                    "sub-02": {"group": "patient", "sex": "M"}, "sub-03": {"age": 70.0}}
    scan = BidsScan("sub-02", "ses-01", tmp_path / "x.nii.gz", None, {})
    assert subject_record(scan, info, None, tmp_path) == {"id": "sub-02_ses-01", "group": "patient", "sex": "M"}
    lonely = BidsScan("sub-03", None, tmp_path / "x.nii.gz", None, {})
    with pytest.raises(InputDataError, match=r"participants\.tsv: no group for sub-03"):
        subject_record(lonely, info, None, tmp_path)
    assert subject_record(lonely, info, "control", tmp_path)["group"] == "control"
    write_participants(tmp_path, [{"participant_id": "sub-01", "group": "sibling"}])
    with pytest.raises(InputDataError, match=r"participants\.tsv: sub-01: unknown group 'sibling'"):
        read_participants(tmp_path)


def test_dataset_json_is_what_the_reader_reads(tmp_path):
    from common.data.dataset_json import read_dataset

    records = [{"id": "sub-01", "group": "control", "age": 60.0, "sex": "F",
                "image": ["sub-01/sub-01_FA.nii.gz", "sub-01/sub-01_MD.nii.gz"], "qc": {"brain_dice": 0.97}},
               {"id": "sub-02_ses-01", "group": "patient", "image": ["a/FA.nii.gz", "a/MD.nii.gz"]}]
    path = write_dataset_json(tmp_path, records, ["FA", "MD"], "spm1p5", tmp_path / "bids", "test")
    dataset = read_dataset(path, check_files=False)
    assert dataset.ids == ["sub-01", "sub-02_ses-01"] and dataset.grid.name == "spm1p5"
    assert [s["group"] for s in dataset.subjects] == ["control", "patient"]
    assert dataset.subject("sub-01")["image"][0] == str(tmp_path / "sub-01" / "sub-01_FA.nii.gz")
    assert dataset.subject("sub-01")["qc"] == {"brain_dice": 0.97}


# ---------------------------------------------------------------------------------------------- bad input


def _bad_case(case: str, root: Path) -> tuple[list[str], str]:
    """Write a BIDS tree whose one subject has ``case`` wrong; (CLI extra flags, the file the error must name)."""
    d, b, v = _tiny_dwi()
    if case == "bval count":
        scan = _tiny_scan(root, bvals=b[:-1], sidecars={"bval": " ".join(map(str, b[:-1])),
                                                        "bvec": dwi_sidecars(b, v)["bvec"]})
        return [], str(scan.sidecars["bval"])
    if case == "bvec count":
        scan = _tiny_scan(root, sidecars={"bval": dwi_sidecars(b, v)["bval"], "bvec": dwi_sidecars(b[:-1], v[:-1])[
            "bvec"]})
        return [], str(scan.sidecars["bvec"])
    if case == "no b=0":
        b = np.where(b == 0, 1000.0, b)
        v = np.where(np.linalg.norm(v, axis=1, keepdims=True) == 0, [[1.0, 0, 0]], v)
        scan = _tiny_scan(root, bvals=b, bvecs=v)
        return [], str(scan.sidecars["bval"])
    if case == "3D":
        write_bids_scan(root, "sub-01", "dwi", d[..., 0], np.eye(4), sidecars=dwi_sidecars(b, v))
        return [], str(root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz")
    if case == "NaN":
        d[3, 4, 5, 2] = np.nan
        scan = _tiny_scan(root, dwi=d)
        return [], str(scan.image)
    raise AssertionError(case)


@pytest.mark.parametrize("case, problem", [("bval count", "7 b-values for 8 volumes"),
                                           ("bvec count", "gradient table for 8 volumes"),
                                           ("no b=0", "no b=0 volume"), ("3D", "a 3D image"),
                                           ("NaN", "1 NaN or infinite values")])
def test_bad_dwi_is_refused_naming_the_file_before_any_output(case, problem, tmp_path, capsys):
    flags, named = _bad_case(case, tmp_path / "bids")
    write_participants(tmp_path / "bids", [{"participant_id": "sub-01", "group": "control"}])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "dti", str(tmp_path / "bids"), "--out", str(out), "--noprogress", *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "1 of 1 subjects failed" in err and f"sub-01: {named}: " in err and problem in err, err
    assert not (out / "dataset.json").exists() and [p.name for p in out.iterdir()] == []  # nothing half-written


# ------------------------------------------------------------------------------------------------- runner


@pytest.mark.parametrize("workers", [1, 2])
def test_runner_lists_a_failure_keeps_the_others_atomic_and_skips_done_subjects(workers, tmp_path):
    root, out = tmp_path / "bids", tmp_path / "out"
    d, b, v = _tiny_dwi()
    for subject in ("sub-01", "sub-02", "sub-03"):
        write_bids_scan(root, subject, "dwi", d[:2, :2, :2], np.eye(4), sidecars=dwi_sidecars(b, v))
    (root / "sub-02" / "dwi" / "sub-02_dwi.nii.gz").rename(root / "sub-02" / "dwi" / "sub-02_fail_dwi.nii.gz")
    for ext in ("bval", "bvec"):
        (root / "sub-02" / "dwi" / f"sub-02_dwi.{ext}").rename(root / "sub-02" / "dwi" / f"sub-02_fail_dwi.{ext}")
    scans = find_scans(root, "dwi")
    bases = {s.key: {"id": s.key, "group": "control"} for s in scans}
    task = subject_task(fake_pipeline, bases, PrepareOptions())
    result = run_subjects(scans, task, out, workers=workers, progress=False)
    assert [r["id"] for r in result["done"]] == ["sub-01", "sub-03"] and result["skipped"] == []
    assert result["failed"] == [("sub-02", f"{root / 'sub-02' / 'dwi' / 'sub-02_fail_dwi.nii.gz'}: made to fail")]
    assert sorted(p.name for p in out.iterdir()) == ["sub-01", "sub-03"]  # no sub-02, no temporary folder
    assert sorted(p.name for p in (out / "sub-01").iterdir()) == ["record.json", "sub-01_out.txt"]
    assert json.loads((out / "sub-03" / "record.json").read_text()) == result["done"][1]
    if workers == 2:
        assert {r["pid"] for r in result["done"]} - {os.getpid()}, "ran in worker processes"
    again = run_subjects(scans, task, out, workers=workers, progress=False)
    assert again["done"] == [] and [r["id"] for r in again["skipped"]] == ["sub-01", "sub-03"]
    assert [k for k, _ in again["failed"]] == ["sub-02"]


def test_runner_removes_a_dead_writers_temporary_folder(tmp_path):
    stale = tmp_path / ".sub-01.999999999.abcd1234.tmp"
    stale.mkdir()
    (stale / "half.nii.gz").write_bytes(b"x")
    result = run_subjects([], fake_pipeline, tmp_path, progress=False)
    assert result == {"done": [], "skipped": [], "failed": []} and not stale.exists()


# ------------------------------------------------------------------------------- phantoms, tensor fit, QC


def test_to_native_undoes_a_known_translation_and_keeps_identity():
    rng = np.random.default_rng(0)
    vol = ndimage.gaussian_filter(rng.standard_normal((20, 22, 18)).astype(np.float32), 1.0)
    affine = native_affine(vol.shape, 2.0)
    identity = Motion(np.eye(3), np.zeros(3), 0.0, 30.0, 0)
    np.testing.assert_allclose(to_native(vol, affine, identity, vol.shape, affine), vol, atol=1e-5)
    shift = Motion(np.eye(3), np.array([4.0, 0.0, -2.0]), 0.0, 30.0, 0)  # native y shows template y + (4, 0, -2) mm
    moved = to_native(vol, affine, shift, vol.shape, affine)
    np.testing.assert_allclose(moved[:-2, :, 1:], vol[2:, :, :-1], atol=1e-5)
    m = random_motion(5)
    assert np.all(np.abs(np.linalg.svd(m.matrix)[1] - 1) <= 0.061) and np.all(np.abs(m.offset) <= 8)


def test_phantom_tensors_have_the_requested_fa_and_md():
    from dipy.reconst.dti import fractional_anisotropy, mean_diffusivity

    fa = np.array([0.0, 0.1, 0.3, 0.62, 0.9])
    md = np.array([0.7e-3, 0.8e-3, 3e-3, 0.72e-3, 1e-3])
    ev = eigenvalues(fa, md)
    np.testing.assert_allclose(fractional_anisotropy(ev), fa, atol=1e-9)
    np.testing.assert_allclose(mean_diffusivity(ev), md, rtol=1e-9)


def test_wls_fit_recovers_known_tensors():
    from common.prepare.dti import fit_tensor

    dwi, bvals, bvecs = _tiny_dwi(seed=2)
    mask = dwi[..., 0] > 500
    fa, md = fit_tensor(dwi, bvals, bvecs, mask)
    inner = ndimage.binary_erosion(mask)
    assert np.median(np.abs(fa[inner] - 0.5)) < 0.02 and np.median(np.abs(md[inner] / 0.8e-3 - 1)) < 0.02
    assert not fa[~mask].any() and not md[~mask].any()


def test_require_alignment_is_the_dice_with_the_template_brain(tmp_path):
    from common.atlases import load_atlas
    from common.prepare.registration import require_alignment

    brain = load_atlas("spm1p5").brain > 0.5
    shifted = np.roll(brain, 12, axis=1)
    expected = 2 * (brain & shifted).sum() / (brain.sum() + shifted.sum())
    assert require_alignment(shifted, "spm1p5", tmp_path / "x", 0.5) == pytest.approx(expected)
    with pytest.raises(InputDataError, match=rf"x: registration .* Dice {expected:.3f} .* below 0\.9"):
        require_alignment(shifted, "spm1p5", tmp_path / "x", 0.9)


def test_a_registration_that_fails_its_check_names_the_dwi(tmp_path, monkeypatch):
    from common.prepare import dti

    monkeypatch.setattr(dti, "register", lambda *a, **k: [])  # identity: a tiny cube far from the template's brain
    monkeypatch.setattr(dti, "template", lambda *a, **k: None)
    scan = _tiny_scan(tmp_path)
    with pytest.raises(InputDataError, match=rf"{scan.image}: registration to the template failed .* Dice 0\.0"):
        dti.process_dwi(scan, PrepareOptions())


def test_qc_figure_is_a_small_png(tmp_path):
    from common.atlases import load_atlas
    from common.prepare.qc import qc_figure

    atlas = load_atlas("spm1p5")
    path = qc_figure(tmp_path / "qc.png", {"FA": atlas.wm, "MD": atlas.csf}, "spm1p5", title="test")
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and path.stat().st_size < 200_000 and [p.name for p in tmp_path.iterdir()] == ["qc.png"]


# ------------------------------------------------------------------------------------- recovery, end to end


@pytest.fixture(scope="module")
def phantom():
    return dwi_phantom(seed=3, with_t1w=True)


def _landmark_errors(phantom, transforms) -> dict[str, float]:
    """Centroid distance (mm) between each deep nucleus of the atlas and the same nucleus moved to native space by
    the known motion and brought back by the estimated ``transforms``."""
    from common.atlases import load_atlas
    from common.prepare.registration import from_array, to_grid

    atlas = load_atlas("spm1p5")
    names = ["putamen_L", "putamen_R", "thalamus_L", "thalamus_R", "caudate_L", "caudate_R"]
    masks = np.stack([atlas.mask(n).astype(np.float32) for n in names])
    shape = phantom.dwi.shape[:3]
    native = to_native(masks, atlas.affine, phantom.motion, shape, phantom.affine)
    errors = {}
    for name, truth, moved in zip(names, masks, native):
        back = to_grid(from_array(moved, phantom.affine), transforms, "spm1p5")
        centroid = lambda w: (np.argwhere(w > 0.5).mean(0) * 1.5)  # noqa: E731 - voxels -> mm (1.5 mm grid)
        errors[name] = float(np.linalg.norm(centroid(back) - centroid(truth)))
    return errors


@pytest.mark.slow  # ~1.5 min: a full-size phantom, tensor fit and SyN registration
def test_prepare_dti_recovers_fa_md_and_the_alignment(phantom, tmp_path):
    from common.prepare.dti import process_dwi

    write_bids_scan(tmp_path, "sub-01", "dwi", phantom.dwi, phantom.affine,
                    sidecars=dwi_sidecars(phantom.bvals, phantom.bvecs))
    (scan,) = find_scans(tmp_path, "dwi")
    result = process_dwi(scan, PrepareOptions(use_t1w=False), workdir=tmp_path / "work")
    dice = 2 * (result.mask & phantom.brain).sum() / (result.mask.sum() + phantom.brain.sum())
    assert dice >= 0.95 and result.dice == pytest.approx(dice, abs=0.02)
    inner = ndimage.binary_erosion(phantom.brain, iterations=4)  # 6 mm from the edge
    fa_err, md_err = np.abs(result.fa - phantom.fa)[inner], np.abs(result.md - phantom.md)[inner]
    assert np.median(fa_err) <= 0.06 and np.median(md_err) <= 0.03, (np.median(fa_err), np.median(md_err))
    assert np.corrcoef(result.fa[inner], phantom.fa[inner])[0, 1] >= 0.85
    errors = _landmark_errors(phantom, result.transforms)
    assert np.mean(list(errors.values())) <= 2.0 and max(errors.values()) <= 3.5, errors


@pytest.mark.slow  # ~2.5 min: the phantom through the CLI (via its T1w), validate, pd_ae inference
def test_bids_tree_end_to_end_into_validate_and_pd_ae_inference(phantom, tmp_path, capsys):
    import torch
    from helpers import bundle_workflow

    from common.networks import SpatialAE2d

    bids, out = tmp_path / "bids", tmp_path / "out"
    write_bids_scan(bids, "sub-01", "dwi", phantom.dwi, phantom.affine, session="ses-01",
                    sidecars=dwi_sidecars(phantom.bvals, phantom.bvecs), t1w=phantom.t1w)
    d, b, v = _tiny_dwi()
    write_bids_scan(bids, "sub-02", "dwi", d, np.eye(4), sidecars=dwi_sidecars(b[:-1], v[:-1]))  # 7 b for 8 vols
    write_participants(bids, [{"participant_id": "sub-01", "group": "control", "age": 64, "sex": "M"},
                              {"participant_id": "sub-02", "group": "PD", "age": 58, "sex": "F"}])
    argv = ["prepare", "dti", str(bids), "--out", str(out), "--noprogress", "--workers", "2"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "1 prepared, 0 already done (skipped), 1 failed" in captured.out
    assert f"sub-02: {bids / 'sub-02' / 'dwi' / 'sub-02_dwi.bval'}: 7 b-values for 8 volumes" in captured.err
    record = json.loads((out / "sub-01_ses-01" / "record.json").read_text())
    assert record["qc"]["via_t1w"] is True and record["qc"]["brain_dice"] >= 0.93
    assert (out / "sub-01_ses-01" / "sub-01_ses-01_qc.png").is_file()
    fa = nib.load(out / "sub-01_ses-01" / "sub-01_ses-01_FA.nii.gz").get_fdata()
    inner = ndimage.binary_erosion(phantom.brain, iterations=4)
    assert np.median(np.abs(fa - phantom.fa)[inner]) <= 0.07

    assert main(["validate", str(out / "dataset.json")]) is None
    assert "OK: 2 files of 1 subjects" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # rerun: the done subject is skipped, the bad one still listed
        main(argv)
    assert "0 prepared, 1 already done (skipped), 1 failed" in capsys.readouterr().out

    channels = [4, 8, 8, 8, 8]
    torch.manual_seed(0)
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    torch.save(SpatialAE2d(in_channels=2, channels=channels).state_dict(), tmp_path / "bundle" / "models" / "model.pt")
    infer = bundle_workflow("pd_ae", "inference.json", "infer", dataset_dir=str(out),
                            bundle_root=str(tmp_path / "bundle"), num_workers=0, **{"network_def#channels": channels})
    infer.initialize()
    infer.run()
    infer.finalize()
    error = nib.load(tmp_path / "bundle" / "eval" / "inference" / "sub-01_ses-01" / "sub-01_ses-01_error.nii.gz")
    assert error.shape == (121, 145, 121) and np.isfinite(error.get_fdata()).all()
