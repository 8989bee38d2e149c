"""``python -m common validate`` and ``python -m common splits``: print results, raise InputDataError on bad input."""

from __future__ import annotations

from pathlib import Path

from common.data.dataset_json import read_dataset, validate_dataset
from common.data.splits import make_splits, require_distinct_splits, write_splits

__all__ = ["splits_command", "validate_command"]

DEFAULT_SPLITS_NAME = "splits.json"
_WIDTHS = (5, 6, 4, 5, 10, 9, 8, 7)


def _describe(dataset) -> str:
    grid = dataset.grid
    return (
        f"{len(dataset.subjects)} subjects ({len(dataset.controls)} controls, {len(dataset.patients)} patients), "
        f"modalities {', '.join(dataset.modalities)} on grid {grid.name} {'x'.join(map(str, grid.shape))}"
    )


def validate_command(dataset_json: str, check_data: bool = True) -> None:
    """Check a dataset.json and every file it names; print a summary (errors raise InputDataError)."""
    dataset = read_dataset(dataset_json, check_files=True)
    print(f"{dataset.path}: {_describe(dataset)}")
    report = validate_dataset(dataset, check_data=check_data)
    what = "headers (NIfTI, 3D, type, shape, affine)" if not check_data else "headers, finite values and ranges"
    print(f"OK: {report.n_files} files of {report.n_subjects} subjects pass the checks of {what}")
    for modality, (lo, hi) in report.value_ranges.items():
        print(f"  {modality:<8} values {lo:.4g} .. {hi:.4g}")


def splits_command(
    dataset_json: str,
    out: str | None = None,
    n_splits: int = 10,
    n_test: int | None = None,
    n_val: int = 0,
    seed: int = 0,
    n_calib: int = 0,
) -> None:
    """Write the age/sex-balanced control splits (default: ``splits.json`` next to the dataset.json)."""
    dataset = read_dataset(dataset_json, check_files=False)
    manifest = make_splits(dataset, n_splits=n_splits, n_test=n_test, n_val=n_val, seed=seed, n_calib=n_calib)
    require_distinct_splits(manifest, dataset.path)
    path = write_splits(manifest, Path(out) if out else dataset.root / DEFAULT_SPLITS_NAME)
    print(
        f"wrote {path}: {n_splits} splits of {manifest['n_controls']} controls "
        f"({manifest['n_train']} train / {manifest['n_val']} val / {manifest['n_calib']} calib / "
        f"{manifest['n_test']} test), "
        f"{manifest['n_patients']} patients in every test set, seed {seed}; "
        f"{manifest['n_distinct_splits']} of {n_splits} splits distinct"
    )
    age, female = manifest["cohort_age_mean"], manifest["cohort_female_fraction"]
    print(f"cohort: mean age {_num(age)}, female fraction {_num(female)}")
    header = ("split", "train", "val", "test", "age train", "age test", "F train", "F test")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, _WIDTHS, strict=True)))
    for s in manifest["splits"]:
        row = (
            s["index"],
            len(s["train"]),
            len(s["val"]),
            len(s["test"]),
            _num(s["train_age_mean"]),
            _num(s["test_age_mean"]),
            _num(s["train_female_fraction"]),
            _num(s["test_female_fraction"]),
        )
        print(" ".join(f"{v:>{w}}" for v, w in zip(row, _WIDTHS, strict=True)))


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
