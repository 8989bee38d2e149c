"""``python -m common prepare dti|pet BIDS_DIR --out DIR``: BIDS scans onto the bundles' grids, one folder per subject.

Input checks run first for every subject (BIDS layout, participants.tsv, each scan's own checks); a subject whose
input fails them is listed as failed and not processed, the others run. ``dataset.json`` is written from every
prepared subject (this run's and earlier runs'), then the failures, if any, end the command with one ``error:``
block naming each subject's file and problem (exit code 2).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from common.errors import InputDataError
from common.prepare.bids import find_scans, read_participants, subject_record, write_dataset_json
from common.prepare.runner import PrepareOptions, done_record, run_subjects, subject_task

__all__ = ["PIPELINES", "prepare_command"]

#: kind -> (BIDS scan kind, module, subject function, input check, modalities, grid, dataset name). The PET module
#: is imported only when ``prepare pet`` runs.
PIPELINES = {
    "dti": ("dwi", "common.prepare.dti", "prepare_dti_subject", "check_dwi_scan", ["FA", "MD"], "spm1p5",
            "DTI FA/MD prepared from BIDS"),
    "pet": ("pet", "common.prepare.pet", "prepare_pet_subject", "check_pet_scan", ["PET"], "clinicadl2",
            "FDG PET SUVR prepared from BIDS"),
}


def prepare_command(kind: str, bids_dir: str, out: str, workers: int = 1, progress: bool = True,
                    default_group: str | None = None, options: PrepareOptions | None = None) -> dict:
    """Prepare every ``kind`` scan of ``bids_dir`` into ``out``; print a summary; return run_subjects' result."""
    options = options or PrepareOptions()
    scan_kind, module_name, fn_name, check_name, modalities, grid, name = PIPELINES[kind]
    if default_group not in (None, "control", "patient"):
        from common.errors import SettingsError

        raise SettingsError("--default_group", f"expected control or patient, got {default_group!r}")
    scans = find_scans(bids_dir, scan_kind)
    participants = read_participants(bids_dir)
    bases = {s.key: subject_record(s, participants, default_group, bids_dir) for s in scans}
    module = importlib.import_module(module_name)
    check = getattr(module, check_name, None)
    failed_input, ready = [], []
    for scan in scans:
        try:
            if check is not None and done_record(out, scan.key) is None:  # a done subject is skipped unchecked
                check(scan)
            ready.append(scan)
        except InputDataError as err:
            failed_input.append((scan.key, str(err)))
    result = run_subjects(ready, subject_task(getattr(module, fn_name), bases, options), out, workers=workers,
                          progress=progress, what=f"prepare {kind}")
    result["failed"] = sorted(failed_input + result["failed"])
    records = result["done"] + result["skipped"]
    print(f"prepare {kind}: {len(result['done'])} prepared, {len(result['skipped'])} already done (skipped), "
          f"{len(result['failed'])} failed, into {Path(out)}")
    if records:
        path = write_dataset_json(out, records, modalities, grid, bids_dir, name)
        print(f"wrote {path} ({len(records)} subjects); check it with: python -m common validate {path}")
    if result["failed"]:
        lines = "\n".join(f"  - {key}: {message}" for key, message in result["failed"])
        raise InputDataError(bids_dir, f"{len(result['failed'])} of {len(scans)} subjects failed (the others are "
                                       f"prepared; fix these and run again, done subjects are skipped):\n{lines}")
    return result
