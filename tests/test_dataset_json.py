"""dataset.json reading, writing and whole-cohort validation (common.data.dataset_json, common.app.data_commands)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from helpers import TINY, write_nifti
from monai.data import load_decathlon_datalist

from common.app.data_commands import validate_command
from common.data import CohortDataset, read_dataset, validate_dataset, write_dataset
from common.errors import InputDataError


def _load(path):
    return json.loads(path.read_text())


def _save(path, doc):
    path.write_text(json.dumps(doc, indent=2))
    return path


def _read_error(path, **kwargs) -> str:
    with pytest.raises(InputDataError) as info:
        read_dataset(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message  # names the dataset.json
    return message


# ------------------------------------------------------------------------------------------------------------ read


def test_read_resolves_paths_and_keeps_extra_keys(make_cohort):
    path = make_cohort(n_controls=3, n_patients=2)
    ds = read_dataset(path)
    assert isinstance(ds, CohortDataset)
    assert ds.path == path and ds.root == path.parent and ds.name == "tiny test cohort"
    assert ds.grid is TINY and ds.modalities == ["FA", "MD"]
    assert ds.ids == [f"sub-{i:04d}" for i in range(1, 6)]
    assert [s["id"] for s in ds.controls] == ["sub-0001", "sub-0002", "sub-0003"]
    assert [s["id"] for s in ds.patients] == ["sub-0004", "sub-0005"]
    first = ds.subjects[0]
    assert first["image"] == [str(path.parent / "sub-0001" / f"sub-0001_{m}.nii.gz") for m in ("FA", "MD")]
    assert first["site"] == "A" and first["age"] == 60.0 and first["sex"] == "M"
    assert ds.subject("sub-0004")["anomaly"] == str(path.parent / "sub-0004" / "sub-0004_effect.nii.gz")
    assert ds.meta["licence"] == "CC0"


def test_paths_agree_with_monai_decathlon_loader(make_cohort):
    path = make_cohort()
    monai_list = load_decathlon_datalist(str(path), False, "training")
    assert [d["image"] for d in monai_list] == [s["image"] for s in read_dataset(path).subjects]


def test_datalist_selects_keys_and_ids(make_cohort):
    ds = read_dataset(make_cohort())
    items = ds.datalist(keys=["image", "anomaly"], ids=["sub-0005", "sub-0001"])
    assert [set(d) for d in items] == [{"id", "image", "anomaly"}, {"id", "image"}]
    assert [d["id"] for d in items] == ["sub-0005", "sub-0001"]
    items[0]["image"].append("x")  # copies: the dataset is untouched
    assert len(ds.subject("sub-0005")["image"]) == 2
    assert ds.datalist()[0] == ds.subjects[0]


def test_single_channel_string_image_and_absolute_paths(tmp_path, tiny_grid):
    pet = write_nifti(tmp_path / "elsewhere" / "pet.nii.gz", np.ones(TINY.shape, np.float32), TINY.affine)
    doc = {
        "grid": "tiny",
        "modality": {"0": "PET"},
        "training": [
            {"id": "a", "group": "control", "image": str(pet)},
            {"id": "b", "group": "control", "image": [str(pet)]},
        ],
    }
    (tmp_path / "ds").mkdir()
    ds = read_dataset(_save(tmp_path / "ds" / "dataset.json", doc))
    assert [s["image"] for s in ds.subjects] == [[str(pet)], [str(pet)]]
    assert ds.name == "ds"  # defaults to the folder name


def test_missing_dataset_json(tmp_path):
    assert _read_error(tmp_path / "dataset.json").endswith("file not found")


def test_invalid_json_gives_line_and_column(make_cohort):
    path = make_cohort()
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rstrip(",")  # drop a comma between two keys
    path.write_text("\n".join(lines))
    assert "invalid JSON at line 5, column 3: Expecting ',' delimiter" in _read_error(path)


def test_missing_required_keys_are_all_listed(make_cohort):
    path = make_cohort()
    doc = _load(path)
    del doc["grid"], doc["modality"]
    del doc["training"][1]["group"], doc["training"][2]["image"]
    message = _read_error(_save(path, doc))
    assert "4 problems:" in message
    for expected in (
        "missing required key 'grid'",
        "missing required key 'modality'",
        "sub-0002: missing required key 'group'",
        "sub-0003: missing required key 'image'",
    ):
        assert expected in message


def test_unknown_grid(make_cohort):
    path = make_cohort()
    message = _read_error(_save(path, {**_load(path), "grid": "mni1mm"}))
    assert "unknown grid 'mni1mm'; known grids: spm1p5, clinicadl2" in message


def test_unknown_modality(make_cohort):
    path = make_cohort()
    message = _read_error(_save(path, {**_load(path), "modality": {"0": "FA", "1": "ADC"}}))
    assert "unknown modality 'ADC' for channel 1; known: FA, MD, PET, ANOMALY" in message


def test_duplicate_ids_are_listed(make_cohort):
    path = make_cohort(n_controls=4)
    doc = _load(path)
    doc["training"][1]["id"] = doc["training"][0]["id"]
    doc["training"][3]["id"] = doc["training"][2]["id"]
    assert "duplicate subject ids: sub-0001, sub-0003" in _read_error(_save(path, doc))


def test_unknown_group(make_cohort):
    path = make_cohort()
    doc = _load(path)
    doc["training"][4]["group"] = "PD"
    assert "sub-0005: unknown group 'PD'; allowed: control, patient" in _read_error(_save(path, doc))


def test_no_control_subjects(make_cohort):
    path = make_cohort()
    doc = _load(path)
    for s in doc["training"]:
        s["group"] = "patient"
    assert "no control subjects" in _read_error(_save(path, doc))


def test_channel_count_age_and_sex(make_cohort):
    path = make_cohort()
    doc = _load(path)
    doc["training"][0]["image"] = doc["training"][0]["image"][:1]
    doc["training"][1]["age"] = "sixty"
    doc["training"][2]["sex"] = "female"
    doc["numTraining"] = 7
    message = _read_error(_save(path, doc))
    assert message.splitlines()[0].endswith("4 problems:")
    assert "sub-0001: 1 image file(s) for 2 modalities (FA, MD)" in message
    assert "sub-0002: age must be a non-negative number (years), got 'sixty'" in message
    assert "sub-0003: sex must be one of F, M, got 'female'" in message
    assert '"numTraining" is 7 but "training" lists 5 subjects' in message


def test_missing_files_name_subject_and_path(make_cohort):
    path = make_cohort()
    md = path.parent / "sub-0002" / "sub-0002_MD.nii.gz"
    md.unlink()
    assert f"sub-0002: file not found: {md}" in _read_error(path)
    assert read_dataset(path, check_files=False).subject("sub-0002")["image"][1] == str(md)


# ----------------------------------------------------------------------------------------------------------- write


def test_write_then_read_round_trip_is_stable(tmp_path, tiny_grid, make_cohort):
    source = read_dataset(make_cohort(root=tmp_path / "data"))
    subjects = [dict(s) for s in source.subjects]
    random.Random(0).shuffle(subjects)
    out = tmp_path / "data" / "copy.json"
    write_dataset(out, name="copy", grid=TINY, modality=["FA", "MD"], subjects=subjects, extra={"licence": "CC0"})
    first = out.read_bytes()
    write_dataset(
        out, name="copy", grid="tiny", modality=["fa", "md"], subjects=subjects[::-1], extra={"licence": "CC0"}
    )
    assert out.read_bytes() == first  # order of input does not matter
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left behind

    doc = json.loads(first)
    assert list(doc)[:2] == ["name", "description"] and list(doc)[-1] == "training"
    assert doc["numTraining"] == 5 and doc["modality"] == {"0": "FA", "1": "MD"} and doc["grid"] == "tiny"
    assert doc["training"][0]["image"] == ["sub-0001/sub-0001_FA.nii.gz", "sub-0001/sub-0001_MD.nii.gz"]  # relative
    assert list(doc["training"][0])[:3] == ["id", "group", "image"]

    again = read_dataset(out)
    assert again.subjects == source.subjects and again.meta["licence"] == "CC0"


def test_write_refuses_invalid_subjects(tmp_path, tiny_grid):
    subjects = [{"id": "a", "group": "patient", "image": ["a.nii.gz"]}]
    with pytest.raises(InputDataError, match=r"refusing to write an invalid dataset: .*no control subjects"):
        write_dataset(tmp_path / "dataset.json", name="x", grid="tiny", modality=["PET"], subjects=subjects)
    assert not (tmp_path / "dataset.json").exists()
    with pytest.raises(ValueError, match="reserved keys: grid"):
        write_dataset(tmp_path / "d.json", name="x", grid="tiny", modality=["PET"], subjects=[], extra={"grid": 1})


# -------------------------------------------------------------------------------------------------------- validate


def test_validate_dataset_passes_a_valid_cohort(make_cohort):
    report = validate_dataset(make_cohort(n_controls=3, n_patients=2), progress=False)
    assert report.n_subjects == 5 and report.n_files == 12 and report.data_checked
    # make_cohort puts 0 and 1 in two voxels of every map (constant maps are refused)
    assert report.value_ranges["FA"] == pytest.approx((0.0, 1.0))
    assert report.value_ranges["MD"] == pytest.approx((0.0, 1.0))


def test_validate_dataset_lists_problems_of_several_subjects_in_one_error(make_cohort):
    path = make_cohort(n_controls=3, n_patients=2)
    root = path.parent
    nan_fa = np.full(TINY.shape, 0.4, np.float32)
    nan_fa[0, 0, 0] = np.nan
    write_nifti(root / "sub-0001" / "sub-0001_FA.nii.gz", nan_fa, TINY.affine)
    write_nifti(root / "sub-0003" / "sub-0003_MD.nii.gz", np.full((8, 9, 6), 0.5, np.float32), TINY.affine)
    moved = TINY.affine
    moved[2, 3] += 2.0
    write_nifti(root / "sub-0004" / "sub-0004_effect.nii.gz", np.zeros(TINY.shape, np.float32), moved)
    (root / "sub-0005" / "sub-0005_FA.nii.gz").write_text("oops")

    with pytest.raises(InputDataError) as info:
        validate_dataset(read_dataset(path), progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 4 problems in 12 files of 5 subjects:"
    body = "\n".join(lines[1:])
    assert f"sub-0001 image[0] (FA): {root}/sub-0001/sub-0001_FA.nii.gz: 1 of 504 voxels are NaN or Inf" in body
    assert f"sub-0003 image[1] (MD): {root}/sub-0003/sub-0003_MD.nii.gz: not on grid 'tiny'" in body
    assert f"sub-0004 anomaly (ANOMALY): {root}/sub-0004/sub-0004_effect.nii.gz: not on grid 'tiny'" in body
    assert f"sub-0005 image[0] (FA): {root}/sub-0005/sub-0005_FA.nii.gz: not a readable NIfTI file" in body
    assert "sub-0002" not in body

    # headers only: the NaN goes unseen, the rest is still reported
    with pytest.raises(InputDataError) as info:
        validate_dataset(path, check_data=False, progress=False)
    assert str(info.value).splitlines()[0] == f"{path}: 3 problems in 12 files of 5 subjects:"
    assert "NaN" not in str(info.value)


def test_fa_and_md_on_different_grids_in_a_cohort(make_cohort):
    path = make_cohort(n_controls=2, n_patients=0)
    other = TINY.affine
    other[0, 3] -= 2.0
    md = path.parent / "sub-0002" / "sub-0002_MD.nii.gz"
    md_data = np.full(TINY.shape, 0.5, np.float32)
    md_data[0, 0, :2] = (0.0, 1.0)  # not constant: constant maps are refused as no image
    write_nifti(md, md_data, other)
    with pytest.raises(InputDataError) as info:
        validate_dataset(path, progress=False, allow_resample=True)  # even when each could be resampled
    fa = path.parent / "sub-0002" / "sub-0002_FA.nii.gz"
    assert f"sub-0002: {md}: not on the same grid as {fa}" in str(info.value)


# ------------------------------------------------------------------------------------------------------------- CLI


def test_validate_command_prints_a_summary(make_cohort, capsys):
    path = make_cohort()
    assert validate_command(str(path)) is None
    out = capsys.readouterr().out
    assert "5 subjects (3 controls, 2 patients), modalities FA, MD on grid tiny 8x9x7" in out
    assert "OK: 12 files of 5 subjects" in out and "FA" in out
    validate_command(str(path), check_data=False)
    assert "headers (NIfTI, 3D, type, shape, affine)" in capsys.readouterr().out


def test_validate_command_raises_input_data_error(make_cohort):
    path = make_cohort()
    write_nifti(path.parent / "sub-0001" / "sub-0001_FA.nii.gz", np.full(TINY.shape, 2.0, np.float32), TINY.affine)
    with pytest.raises(InputDataError, match="values outside the FA range"):
        validate_command(str(path))
