"""Hostile inputs (subjects and data): each is refused before any work, naming the file and the problem.

Cohorts are the tiny ones of ``conftest.make_cohort`` (8x9x7 grid, no atlas); the anatomy cases use maps
built from the 1.5 mm atlas. ``python -m common validate`` runs in-process through ``common.app.commands.main``.
Every case also checks that nothing in the cohort folder was written or changed.
"""

from __future__ import annotations

import gzip
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import TINY, write_nifti

from common.app import main
from common.data import check_subjects, make_splits, read_dataset, read_splits, require_distinct_splits
from common.data.volumes import load_subject_volumes
from common.errors import InputDataError


def _snapshot(root: Path) -> dict:
    """Every file under ``root`` with its size and modification time: 'nothing written or changed'."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def _validate(path: Path, capsys) -> tuple[int, str]:
    """Exit code and stderr + stdout of ``python -m common validate PATH``, in-process."""
    try:
        main(["validate", str(path)])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.err + out.out


def _doc(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_doc(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc))


def _map(value: float = 0.3) -> np.ndarray:
    data = np.full(TINY.shape, value, np.float32)
    data[0, 0, :2] = (0.0, 1.0)
    return data


# ------------------------------------------------------------------------------------- validate: one case per input
# Each case edits a valid tiny cohort and returns (file the message must name, words it must contain).


def _ids_with_slash(root: Path) -> tuple[str, list[str]]:
    path = root / "dataset.json"
    doc = _doc(path)
    doc["training"][0]["id"], doc["training"][1]["id"] = "site1/sub-01", "site2/sub-01"
    _write_doc(path, doc)
    return str(path), ["'site1/sub-01' is not a safe file name", "'site2/sub-01' is not a safe file name"]


def _ids_case_collide(root: Path) -> tuple[str, list[str]]:
    path = root / "dataset.json"
    doc = _doc(path)
    doc["training"][0]["id"], doc["training"][1]["id"] = "sub-A", "sub-a"
    _write_doc(path, doc)
    return str(path), ["subject ids sub-A, sub-a give one output name"]


def _id_dotdot(root: Path) -> tuple[str, list[str]]:
    path = root / "dataset.json"
    doc = _doc(path)
    doc["training"][0]["id"] = ".."
    _write_doc(path, doc)
    return str(path), ["'..' is not a safe file name"]


def _json_key(key: str, value, words: list[str]) -> Callable:
    def edit(root: Path) -> tuple[str, list[str]]:
        path = root / "dataset.json"
        doc = _doc(path)
        doc[key] = value
        _write_doc(path, doc)
        return str(path), words

    edit.__name__ = f"json_{key}"
    return edit


def _deep_json(root: Path) -> tuple[str, list[str]]:
    path = root / "dataset.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    return str(path), ["nested too deeply"]


def _file(subject: int, channel: str, data: np.ndarray | None = None, affine=None, words=(), raw: bytes | None = None,
          header: Callable | None = None) -> Callable:
    """Replace one subject's FA or MD file (``data`` on ``affine``, or ``raw`` bytes, or ``header`` edits)."""

    def edit(root: Path) -> tuple[str, list[str]]:
        sid = f"sub-{subject:04d}"
        path = root / sid / f"{sid}_{channel}.nii.gz"
        if raw is not None:
            path.write_bytes(raw(path) if callable(raw) else raw)
        else:
            img = nib.Nifti1Image(np.asarray(data), TINY.affine if affine is None else affine)
            if header is not None:
                header(img)
            nib.save(img, str(path))
        return str(path), list(words)

    return edit


def _nan_map() -> np.ndarray:
    data = _map()
    data[3, 3, 3] = np.nan
    return data


def _inf_map() -> np.ndarray:
    data = _map()
    data[3, 3, 3] = np.inf
    return data


def _qform_30mm(img: nib.Nifti1Image) -> None:
    moved = TINY.affine.copy()
    moved[0, 3] += 30.0
    img.set_sform(TINY.affine, code=2)
    img.set_qform(moved, code=1)


def _truncated(path: Path) -> bytes:
    """The file cut after its header and a few voxels (a copy or download stopped early)."""
    return gzip.compress(gzip.decompress(path.read_bytes())[:352 + 100])


def _shifted(mm: float) -> np.ndarray:
    affine = TINY.affine.copy()
    affine[1, 3] += mm
    return affine


def _unknown_group(root: Path) -> tuple[str, list[str]]:
    path = root / "dataset.json"
    doc = _doc(path)
    doc["training"][2]["group"] = "healthy"
    _write_doc(path, doc)
    return str(path), ["unknown group 'healthy'"]


def _duplicate_ids(root: Path) -> tuple[str, list[str]]:
    path = root / "dataset.json"
    doc = _doc(path)
    doc["training"][1]["id"] = doc["training"][0]["id"]
    _write_doc(path, doc)
    return str(path), ["duplicate subject ids: sub-0001"]


def _no_controls(root: Path) -> tuple[str, list[str]]:
    path = root / "dataset.json"
    doc = _doc(path)
    for s in doc["training"]:
        s["group"] = "patient"
    _write_doc(path, doc)
    return str(path), ["no control subjects"]


def _missing_file(root: Path) -> tuple[str, list[str]]:
    os.remove(root / "sub-0002" / "sub-0002_MD.nii.gz")
    return str(root / "sub-0002" / "sub-0002_MD.nii.gz"), ["file not found"]


CASES = {
    # rows of the issue
    "ids site1/sub-01 + site2/sub-01": _ids_with_slash,
    "ids differing only in case": _ids_case_collide,
    "id ..": _id_dotdot,
    'grid ["spm1p5"]': _json_key("grid", ["spm1p5"], ['"grid" must be a string', "a list (['spm1p5'])"]),
    "grid 15": _json_key("grid", 15, ['"grid" must be a string', "a number (15)"]),
    "modality value a list": _json_key("modality", {"0": ["FA"], "1": "MD"}, ['"modality" channel 0 must be a '
                                                                              "modality name"]),
    "modality twice": _json_key("modality", {"0": "FA", "1": "FA"}, ['"modality" names FA more than once']),
    "numTraining a string": _json_key("numTraining", "5", ['"numTraining" must be an integer']),
    "training an object": _json_key("training", {"0": {}}, ['"training" must be a non-empty list']),
    "name a list": _json_key("name", ["x"], ['"name" must be a string']),
    "JSON nested 100,000 deep": _deep_json,
    "NaN in the 3rd subject": _file(3, "FA", _nan_map(), words=["1 of 504 voxels are NaN or Inf"]),
    "truncated patient file": _file(5, "MD", raw=_truncated, words=["truncated or damaged"]),
    "binary mask as FA": _file(2, "FA", (np.arange(504).reshape(TINY.shape) % 2).astype(np.float32),
                               words=["only two distinct values (0 and 1): a binary mask, not a FA map"]),
    "all-zero FA": _file(1, "FA", np.zeros(TINY.shape, np.float32), words=["every voxel is 0"]),
    "constant FA": _file(1, "FA", np.full(TINY.shape, 0.4, np.float32), words=["every voxel has the value 0.4"]),
    "constant MD": _file(4, "MD", np.full(TINY.shape, 0.2, np.float32), words=["a constant image, not a MD map"]),
    "qform and sform 30 mm apart": _file(2, "MD", _map(), header=_qform_30mm,
                                         words=["qform and sform disagree by up to 30 mm", "qform [[2, 0, 0, 22]",
                                                "sform [[2, 0, 0, -8]"]),
    # the README's list ("Everything is checked before any work starts...")
    "missing file": _missing_file,
    "not a NIfTI": _file(1, "FA", raw=b"hello, not an image" * 30, words=["not a readable NIfTI file"]),
    "4D image": _file(2, "FA", np.stack([_map(), _map()], axis=-1), words=["4D image", "holds 2 volumes"]),
    "wrong shape": _file(2, "MD", np.full((8, 9, 6), 0.3, np.float32), words=["not on grid 'tiny'", "shape (8, 9, 6)"]),
    "wrong affine": _file(3, "MD", _map(), affine=_shifted(4.0), words=["not on grid 'tiny'", "affine"]),
    "complex data": _file(1, "FA", _map().astype(np.complex64), words=["complex64 is not a real-valued"]),
    "Inf voxel": _file(2, "FA", _inf_map(), words=["(0 NaN, 1 Inf)"]),
    "FA out of range": _file(1, "FA", _map() * 2.0, words=["values outside the FA range [0, 1]"]),
    "MD left in mm2/s": _file(1, "MD", _map() * 3e-3, words=["implausibly small for a scaled MD map"]),
    "duplicate ids": _duplicate_ids,
    "unknown group": _unknown_group,
    "unknown modality": _json_key("modality", {"0": "FA", "1": "ADC"}, ["unknown modality 'ADC'"]),
    "no controls": _no_controls,
}


@pytest.mark.parametrize("edit", CASES.values(), ids=list(CASES))
def test_validate_refuses(edit, make_cohort, capsys):
    path = make_cohort(n_controls=3, n_patients=2)
    named, words = edit(path.parent)
    before = _snapshot(path.parent)
    code, message = _validate(path, capsys)
    assert code == 2, message
    assert "\nerror: " in "\n" + message and named in message, message
    for word in words:
        assert word in message, message
    assert _snapshot(path.parent) == before


def test_validate_reports_every_problem_at_once(make_cohort, capsys):
    path = make_cohort(n_controls=3, n_patients=2)
    named = [CASES[c](path.parent)[0] for c in ("NaN in the 3rd subject", "truncated patient file", "constant FA")]
    code, message = _validate(path, capsys)
    assert code == 2 and "3 problems in 12 files of 5 subjects" in message
    assert all(n in message for n in named)


def test_huge_json_is_refused(make_cohort, capsys, monkeypatch):
    from common.data import _jsonio

    path = make_cohort(n_controls=3, n_patients=2)
    monkeypatch.setattr(_jsonio, "MAX_JSON_BYTES", 1000)
    code, message = _validate(path, capsys)
    assert code == 2 and str(path) in message and "too large for a JSON file" in message


def test_qform_sform_within_a_millimetre_is_accepted(make_cohort, capsys):
    path = make_cohort(n_controls=3, n_patients=2)
    near = TINY.affine.copy()
    near[2, 3] += 0.5
    md = path.parent / "sub-0001" / "sub-0001_MD.nii.gz"
    img = nib.Nifti1Image(np.asarray(nib.load(md).dataobj), TINY.affine)
    img.set_qform(near, code=1)
    nib.save(img, str(md))
    code, message = _validate(path, capsys)
    assert code == 0, message


# ------------------------------------------------------------------------------------------------- channels by name


def test_md_first_dataset_loads_the_same_tensors_as_fa_first(make_cohort):
    path = make_cohort(n_controls=3, n_patients=2)
    fa_first = read_dataset(path, modalities=["FA", "MD"])
    doc = _doc(path)
    doc["modality"] = {"0": "MD", "1": "FA"}
    for s in doc["training"]:
        s["image"] = s["image"][::-1]
    swapped = path.with_name("dataset_md_first.json")
    _write_doc(swapped, doc)
    md_first = read_dataset(swapped, modalities=["FA", "MD"])
    assert read_dataset(swapped).modalities == ["MD", "FA"] and md_first.modalities == ["FA", "MD"]
    keep = lambda _, volume: volume  # noqa: E731
    a = load_subject_volumes(fa_first.subjects, TINY, ["FA", "MD"], keep, num_threads=1, progress=False)
    b = load_subject_volumes(md_first.subjects, TINY, ["FA", "MD"], keep, num_threads=1, progress=False)
    for x, y, s in zip(a, b, doc["training"], strict=True):
        assert x.tobytes() == y.tobytes()
        # channel 0 is the FA file: make_cohort fills it with 0.1 * subject number
        assert x[0, 4, 4, 4] == pytest.approx(0.1 * int(s["id"][-4:]))


def test_a_missing_requested_modality_is_refused_naming_the_dataset(make_cohort):
    path = make_cohort(n_controls=3, n_patients=2)
    doc = _doc(path)
    doc["modality"] = {"0": "FA"}
    for s in doc["training"]:
        s["image"] = s["image"][0]
    _write_doc(path, doc)
    with pytest.raises(InputDataError, match="needs modalities FA, MD but the dataset's \"modality\" mapping lists "
                                             "FA: no MD channel") as info:
        read_dataset(path, modalities=["FA", "MD"])
    assert info.value.path == str(path)


# ------------------------------------------------------------------------------------------ output names per subject


@pytest.mark.parametrize("ids", [("sub.001", "sub.002"), ("a.nii", "a.nii.gz"), ("S-1", "S_1")])
def test_dotted_ids_give_distinct_outputs_named_after_the_id(ids, tmp_path):
    """MONAI's SaveImaged with the bundles' formatter: one output per id, named ``<id>/<id>_error.nii.gz``."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import SaveImaged

    from common.transforms import subject_output_name
    from common.transforms.io import SUBJECT_ID

    saver = SaveImaged(keys="error", output_dir=str(tmp_path), output_postfix="error", resample=False,
                       output_name_formatter=subject_output_name, separate_folder=True, print_log=False)
    for sid in ids:
        image = MetaTensor(torch.zeros(1, *TINY.shape), affine=torch.as_tensor(TINY.affine),
                           meta={SUBJECT_ID: sid, "filename_or_obj": "x.nii.gz"})
        saver({"error": image})
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(f"{sid}/{sid}_error.nii.gz" for sid in ids)


def test_inference_refuses_every_bad_subject_before_any_output(make_cohort, tmp_path):
    """The README inference command on a cohort with a NaN in the 3rd subject: the bundle's ``initialize``
    lists it (and the truncated 5th) and the output folder is never created."""
    from helpers import bundle_workflow

    path = make_cohort(n_controls=3, n_patients=2)
    nan_file = CASES["NaN in the 3rd subject"](path.parent)[0]
    truncated = CASES["truncated patient file"](path.parent)[0]
    import torch

    from common.networks import SpatialAE2d

    ckpt = tmp_path / "model.pt"
    torch.save(SpatialAE2d().state_dict(), ckpt)  # valid weights: initialize loads them before checking subjects
    out = tmp_path / "inference"
    workflow = bundle_workflow("pd_ae", "inference.json", workflow_type="infer", dataset_dir=str(path.parent),
                               grid="tiny", ckpt_path=str(ckpt), output_dir=str(out))
    with pytest.raises(Exception) as raised:  # MONAI wraps it in a RuntimeError
        workflow.initialize()
    error = raised.value
    while error is not None and not isinstance(error, InputDataError):
        error = error.__cause__ or error.__context__
    assert isinstance(error, InputDataError), raised.value
    message = str(error)
    assert error.path == str(path) and "2 problems in 12 files of 5 subjects of inference (nothing was run)" in message
    assert nan_file in message and truncated in message and "NaN" in message and "truncated" in message
    assert not out.exists()


def test_check_subjects_refuses_a_subject_listed_twice(make_cohort):
    dataset = read_dataset(make_cohort(n_controls=3, n_patients=2))
    twice = dataset.select(["sub-0001", "sub-0002", "sub-0001"])
    with pytest.raises(InputDataError, match="subject sub-0001 listed 2 times"):
        check_subjects(twice, TINY, dataset.modalities, source=dataset.path)


# ----------------------------------------------------------------------------------------------------------- splits


def _distinct(manifest: dict) -> int:
    return len({json.dumps([s["train"], s["val"], s["test"]]) for s in manifest["splits"]})


@pytest.mark.parametrize("n_controls", [6, 8, 10])
def test_identical_splits_are_counted_and_refused(n_controls, make_cohort, capsys):
    path = make_cohort(n_controls=n_controls, n_patients=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = make_splits(read_dataset(path), n_splits=10, n_val=3, seed=0)
    n_distinct = _distinct(manifest)
    assert manifest["n_distinct_splits"] == n_distinct
    before = _snapshot(path.parent)
    try:
        main(["splits", str(path), "--n_splits", "10", "--n_val", "3"])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    message = capsys.readouterr()
    if n_distinct == 1:
        assert code == 2 and str(path) in message.err and "all 10 splits are identical" in message.err
        assert _snapshot(path.parent) == before
    else:
        assert code == 0 and f"{n_distinct} of 10 splits distinct" in message.out


def test_fewer_distinct_splits_warn_with_the_count(make_cohort):
    path = make_cohort(n_controls=6, n_patients=1)
    with pytest.warns(UserWarning, match=r"only \d+ of 10 splits are distinct: 6 controls") as record:
        manifest = make_splits(read_dataset(path), n_splits=10, n_val=1, seed=0)
    assert f"only {_distinct(manifest)} of 10" in str(record[0].message)
    with pytest.raises(InputDataError, match="all 3 splits are identical"):
        require_distinct_splits({**manifest, "splits": [manifest["splits"][0]] * 3})
    assert require_distinct_splits({**manifest, "splits": manifest["splits"][:1]}) == 1


def test_leaked_subject_in_a_splits_file_is_refused(make_cohort, tmp_path):
    path = make_cohort(n_controls=6, n_patients=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = make_splits(read_dataset(path), n_splits=1)
    manifest["splits"][0]["train"].append("sub-0007")  # a patient
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps(manifest))
    with pytest.raises(InputDataError, match="patient sub-0007 in train of split 0") as info:
        read_splits(splits, path)
    assert info.value.path == str(splits)


# ------------------------------------------------------------------------------------------------ experiment driver


def test_experiment_fails_on_a_truncated_patient_file_before_training(make_cohort, tmp_path):
    from common.app.experiment import run_pd_experiment

    path = make_cohort(n_controls=7, n_patients=2)
    truncated = _file(9, "FA", raw=_truncated)(path.parent)[0]
    out = tmp_path / "experiment"
    with pytest.raises(InputDataError) as info:
        run_pd_experiment("pd_ae", dataset_dir=str(path.parent), out=out, splits=1, n_val=1, n_calib=1,
                          overrides={"grid": "tiny"}, progress=False)
    assert truncated in str(info.value) and "truncated or damaged" in str(info.value)
    assert "of the pd_ae experiment (nothing was run)" in str(info.value)
    assert not list(out.glob("split_*"))


def test_experiment_refuses_identical_splits_and_prints_fewer_distinct(make_cohort, tmp_path, capsys):
    from common.app.experiment import _check_experiment_input, bundle_configs

    path = make_cohort(n_controls=8, n_patients=2)
    settings = {"dataset_dir": str(path.parent), "grid": "tiny", "n_val": 1, "split_seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n_distinct = _distinct(make_splits(read_dataset(path), n_splits=4, n_val=1, seed=0))
    if n_distinct == 1:
        with pytest.raises(InputDataError, match="all 4 splits are identical"):
            _check_experiment_input(bundle_configs("pd_ae"), settings, 4, "pd_ae")
    else:
        _check_experiment_input(bundle_configs("pd_ae"), settings, 4, "pd_ae")
        out = capsys.readouterr().out
        assert (f"only {n_distinct} of 4 splits are distinct" in out) == (n_distinct < 4)


# -------------------------------------------------------------------------------------------- anatomy (1.5 mm grid)


@pytest.fixture(scope="module")
def atlas_maps():
    """FA- and MD-like maps of the 1.5 mm grid from the atlas: FA high in white matter, MD high in CSF."""
    from common.atlases import load_atlas

    atlas = load_atlas("spm1p5")
    noise = np.random.default_rng(0).random(atlas.wm.shape, dtype=np.float32) * 0.05
    fa = (0.15 + 0.6 * atlas.wm + noise) * atlas.brain
    md = (0.2 + 0.6 * atlas.csf + noise) * atlas.brain
    return atlas.grid, fa.astype(np.float32), md.astype(np.float32)


@pytest.mark.parametrize("given_as, actual", [("MD", "FA"), ("FA", "MD")])
def test_a_map_of_the_other_modality_is_refused(given_as, actual, atlas_maps, tmp_path):
    from common.data import load_checked
    from common.nifti import anatomy_score

    grid, fa, md = atlas_maps
    data = {"FA": fa, "MD": md}[actual]
    path = write_nifti(tmp_path / f"sub_{actual}.nii.gz", data, grid.affine)
    load_checked(path, grid, actual)  # accepted as what it is
    assert (anatomy_score(data, grid) > 0) == (actual == "FA")
    with pytest.raises(InputDataError, match=f"does not look like a {given_as} map") as info:
        load_checked(path, grid, given_as)
    assert info.value.path == str(path)


def test_gzip_of_a_valid_header_without_data_is_truncated(make_cohort, capsys):
    """A ``.nii.gz`` cut right after its header (a download stopped early)."""
    path = make_cohort(n_controls=3, n_patients=2)
    fa = path.parent / "sub-0002" / "sub-0002_FA.nii.gz"
    fa.write_bytes(gzip.compress(gzip.decompress(fa.read_bytes())[:352]))
    code, message = _validate(path, capsys)
    assert code == 2 and str(fa) in message and "truncated or damaged" in message
