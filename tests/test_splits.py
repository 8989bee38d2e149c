"""Control splits (common.data.splits) and the splits CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from common.app.data_commands import splits_command
from common.data import (
    check_splits,
    default_n_test,
    make_splits,
    read_dataset,
    read_splits,
    split_subjects,
    write_splits,
)
from common.errors import InputDataError


def cohort(n_controls=56, n_patients=20, female_fraction=0.4, age_mean=61.0, age_sd=9.0, seed=7):
    """Subject dicts like the PD paper's cohort: ages ~ N(61, 9), 40 % women among the controls."""
    rng = np.random.default_rng(seed)
    n_female = round(n_controls * female_fraction)
    sexes = ["F"] * n_female + ["M"] * (n_controls - n_female)
    controls = [
        {"id": f"c{i:03d}", "group": "control", "age": float(rng.normal(age_mean, age_sd)), "sex": sexes[i]}
        for i in range(n_controls)
    ]
    patients = [
        {"id": f"p{i:03d}", "group": "patient", "age": float(rng.normal(age_mean, age_sd)), "sex": "M"}
        for i in range(n_patients)
    ]
    return controls + patients


def test_paper_sizes_and_scaling():
    assert default_n_test(56) == 15
    assert default_n_test(20) == 5  # 20 * 15 / 56 = 5.36
    assert default_n_test(4) == 2  # never fewer than 2
    manifest = make_splits(cohort(56), seed=0)
    assert manifest["n_splits"] == 10 and len(manifest["splits"]) == 10
    for split in manifest["splits"]:
        assert (len(split["train"]), len(split["val"]), len(split["test"])) == (41, 0, 15)
    small = make_splits(cohort(20, 5), n_splits=3, n_val=2)
    assert {(len(s["train"]), len(s["val"]), len(s["test"])) for s in small["splits"]} == {(13, 2, 5)}


def test_no_subject_in_two_parts_of_any_split():
    subjects = cohort(56, 20)
    controls = {s["id"] for s in subjects if s["group"] == "control"}
    patients = sorted(s["id"] for s in subjects if s["group"] == "patient")
    for seed in range(3):
        for split in make_splits(subjects, n_splits=10, n_val=5, seed=seed)["splits"]:
            train, val, test = set(split["train"]), set(split["val"]), set(split["test"])
            assert not (train & val) and not (train & test) and not (val & test)
            assert train | val | test == controls  # every control is used, only controls
            assert split["patients"] == patients


def test_deterministic_and_seed_dependent():
    subjects = cohort()
    a = make_splits(subjects, seed=3)
    assert make_splits(list(reversed(subjects)), seed=3) == a  # input order does not matter
    b = make_splits(subjects, seed=4)
    assert [s["test"] for s in a["splits"]] != [s["test"] for s in b["splits"]]
    assert len({tuple(s["test"]) for s in a["splits"]}) == 10  # the 10 splits differ from each other
    # split i does not depend on how many splits are asked for
    assert make_splits(subjects, n_splits=4, seed=3)["splits"] == a["splits"][:4]


def test_sex_balance_matches_the_cohort_within_one_subject():
    subjects = cohort(56, female_fraction=0.4)
    manifest = make_splits(subjects, seed=0)
    cohort_fraction = manifest["cohort_female_fraction"]
    assert cohort_fraction == pytest.approx(22 / 56, abs=1e-4)
    for split in manifest["splits"]:
        n_female = sum(1 for s in subjects if s["id"] in split["test"] and s["sex"] == "F")
        assert abs(n_female - 15 * cohort_fraction) < 1.0
        assert split["test_female_fraction"] == pytest.approx(n_female / 15, abs=1e-4)


def test_age_balance():
    subjects = cohort(56, age_sd=9.0)
    age = {s["id"]: s["age"] for s in subjects}
    for split in make_splits(subjects, seed=1)["splits"]:
        test_mean = np.mean([age[i] for i in split["test"]])
        train_mean = np.mean([age[i] for i in split["train"]])
        assert abs(test_mean - train_mean) < 0.25  # a plain random split: sd ~2.7 years here
        assert split["test_age_mean"] == pytest.approx(test_mean, abs=1e-3)
        assert split["train_age_mean"] == pytest.approx(train_mean, abs=1e-3)


def test_missing_age_or_sex_is_handled():
    subjects = cohort(30, 4)
    for s in subjects[::3]:
        del s["age"]
    for s in subjects[1::4]:
        s.pop("sex")
    manifest = make_splits(subjects, n_splits=3)
    assert all(len(s["test"]) == default_n_test(30) for s in manifest["splits"])
    bare = [{"id": s["id"], "group": s["group"]} for s in subjects]
    plain = make_splits(bare, n_splits=3)
    assert plain["cohort_age_mean"] is None and plain["cohort_female_fraction"] is None
    assert all(s["test_age_mean"] is None for s in plain["splits"])
    assert all(len(s["test"]) == default_n_test(30) for s in plain["splits"])


def test_too_few_controls():
    with pytest.raises(InputDataError, match=r"too few controls: 3 controls cannot give 2 test \+ 1 validation"):
        make_splits(cohort(3, 2), n_val=1)
    with pytest.raises(InputDataError, match="too few controls"):
        make_splits(cohort(10, 0), n_test=10)


def test_check_splits_catches_leaks_unknown_ids_and_trained_patients(make_cohort, tmp_path):
    path = make_cohort(n_controls=6, n_patients=2)
    dataset = read_dataset(path)
    manifest = make_splits(dataset, n_splits=5, seed=0)
    check_splits(manifest, dataset)  # a fresh manifest is clean

    leaked = copy.deepcopy(manifest)
    moved = leaked["splits"][3]["test"][0]
    leaked["splits"][3]["train"].append(moved)
    with pytest.raises(InputDataError, match=rf"leaked subject {moved} in both train and test of split 3"):
        check_splits(leaked)

    bad = copy.deepcopy(manifest)
    bad["splits"][1]["test"].append("sub-9999")
    bad["splits"][2]["train"].append("sub-0007")
    bad["splits"][2]["patients"].remove("sub-0007")
    with pytest.raises(InputDataError) as info:
        check_splits(bad, dataset, path=tmp_path / "splits.json")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'splits.json'}: 2 problems:")
    assert "unknown subject sub-9999 in test of split 1 (not in dataset.json)" in message
    assert "patient sub-0007 in train of split 2: only controls may be trained on" in message

    with pytest.raises(InputDataError, match="leaked subject"):
        write_splits(leaked, tmp_path / "leaked.json")
    assert not (tmp_path / "leaked.json").exists()


def test_write_and_read_round_trip(make_cohort, tmp_path):
    path = make_cohort(n_controls=6, n_patients=2)
    manifest = make_splits(path, n_splits=2, seed=5)
    assert manifest["dataset"] == str(path)
    out = write_splits(manifest, tmp_path / "out" / "splits.json")
    assert read_splits(out, dataset=path) == json.loads(out.read_text()) == manifest


def test_splits_command_writes_next_to_the_dataset(make_cohort, capsys):
    path = make_cohort(n_controls=8, n_patients=2)
    assert splits_command(str(path), n_splits=3, seed=2) is None
    written = path.parent / "splits.json"
    manifest = read_splits(written, dataset=path)
    assert manifest == make_splits(read_dataset(path), n_splits=3, seed=2)
    out = capsys.readouterr().out
    assert (f"wrote {written}: 3 splits of 8 controls (6 train / 0 val / 0 calib / 2 test), "
            "2 patients in every test set") in out
    assert len([line for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]) == 3
    # 8 controls as 4 / 1 / 3 have one best-balanced draw: 2 identical splits are refused, 1 is fine
    splits_command(str(path), out=str(path.parent / "other.json"), n_splits=1, n_test=3, n_val=1)
    assert [len(s["test"]) for s in read_splits(path.parent / "other.json")["splits"]] == [3]


def test_calibration_controls_are_held_out_of_training_and_keep_the_other_parts(make_cohort):
    path = make_cohort(n_controls=12, n_patients=2)
    without = make_splits(path, n_splits=3, n_val=2, seed=4)
    with_calib = make_splits(path, n_splits=3, n_val=2, seed=4, n_calib=3)
    assert with_calib["n_calib"] == 3 and with_calib["n_train"] == without["n_train"] - 3
    for a, b in zip(without["splits"], with_calib["splits"]):
        # test and val are drawn first, from the same streams: calibration controls come out of training only
        assert a["test"] == b["test"] and a["val"] == b["val"] and a["calib"] == []
        assert len(b["calib"]) == 3 and set(b["calib"]) <= set(a["train"])
        assert sorted(b["train"] + b["calib"]) == a["train"]
    calib = split_subjects(path, "calib", 1, n_splits=3, n_val=2, seed=4, n_calib=3)
    assert [s["id"] for s in calib] == with_calib["splits"][1]["calib"]
    with pytest.raises(InputDataError, match="no calib controls"):
        split_subjects(path, "calib", 0, n_splits=3, n_val=2, seed=4)


def test_pool_subjects_joins_parts_once_in_order(make_cohort):
    from common.data import pool_subjects, union_subjects

    path = make_cohort(n_controls=12, n_patients=2)
    split = make_splits(path, n_splits=1, n_val=2, seed=1, n_calib=2)["splits"][0]
    pool = pool_subjects(path, ["train", "val"], 0, None, 1, 2, 1, 2)
    assert [s["id"] for s in pool] == split["train"] + split["val"]
    assert pool_subjects(path, [], 0, None, 1, 2, 1, 2) == []
    union = union_subjects(pool, pool_subjects(path, "val", 0, None, 1, 2, 1, 2))
    assert [s["id"] for s in union] == split["train"] + split["val"]
