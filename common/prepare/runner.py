"""Run one preparation per subject: in parallel processes, each subject written atomically, resumable.

Each subject is prepared into a temporary sibling folder ``OUT/.<key>.<pid>.<hex>.tmp`` and renamed onto
``OUT/<key>`` when complete, with its ``record.json`` (the dataset.json entry) last inside it; a folder with a
record is done and skipped on the next run, a crash or failure leaves nothing under ``OUT/<key>``. A failed
subject is listed at the end and does not stop the others.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from common.data._jsonio import read_json, write_json_atomic
from common.errors import PROJECT_ERRORS

__all__ = ["RECORD_NAME", "PrepareOptions", "done_record", "run_subjects", "subject_task"]

RECORD_NAME = "record.json"


def done_record(out: str | os.PathLike, key: str) -> dict | None:
    """The record of a subject prepared before (``OUT/<key>/record.json``), else None."""
    path = Path(out) / key / RECORD_NAME
    return read_json(path) if path.is_file() else None


def _remove_stale(out: Path) -> None:
    """Temporary folders of writers that died (their pid is gone): a killed run must not leave them forever."""
    for tmp in out.glob(".*.tmp"):
        try:
            pid = int(tmp.name.split(".")[-3])
        except (ValueError, IndexError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def _one(process_one: Callable, scan, out: Path) -> tuple[str, dict | None, str | None]:
    """Prepare ``scan`` into a temporary folder and rename it into place; (key, record, error message)."""
    key = scan.key
    tmp = out / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir(parents=True)
    try:
        record = process_one(scan, tmp)
        write_json_atomic(tmp / RECORD_NAME, record)
        final = out / key
        if final.exists():  # an unfinished earlier folder without a record (made by hand, or an old layout)
            shutil.rmtree(final)
        os.replace(tmp, final)
        return key, record, None
    except Exception as exc:  # one subject's failure is reported, the others go on
        shutil.rmtree(tmp, ignore_errors=True)
        message = str(exc) if isinstance(exc, PROJECT_ERRORS) else f"{type(exc).__name__}: {exc}"
        if os.environ.get("BRAIN_ANOMALY_DEBUG"):
            message += "\n" + traceback.format_exc()
        return key, None, message


def _limit_threads(threads: int) -> None:
    """One share of the cores per worker, for ITK (ANTs) and the BLAS/OpenMP pools, set before they start."""
    for name in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)


def run_subjects(scans: Sequence, process_one: Callable, out: str | os.PathLike, workers: int = 1,
                 progress: bool = True, what: str = "prepare dti", threads: int | None = None) -> dict:
    """Run ``process_one(scan, subject_tmp_dir) -> record`` for every scan not prepared yet.

    The record is the subject's dataset.json entry (image paths relative to ``out``). ``workers`` > 1 runs subjects
    in that many processes (``process_one`` must then be picklable: a module-level function or a
    ``functools.partial`` of one). Returns ``{"done": [record, ...], "skipped": [record, ...], "failed": [(key,
    message), ...]}``, done and skipped in scan order. ``threads``: threads per worker process (default: the
    cores shared out between the workers); workers are started fresh (``spawn``), not forked, so no ITK or
    OpenMP thread pool of this process is copied into them."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    keys = [s.key for s in scans]
    if len(set(keys)) != len(keys):
        raise ValueError(f"scans with the same key: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    skipped, todo = {}, []
    for scan in scans:
        record = done_record(out, scan.key)
        if record is None:
            todo.append(scan)
        else:
            skipped[scan.key] = record
    done, failed = {}, {}
    bar = tqdm(total=len(todo), desc=what, unit="subject", disable=not progress or not todo)

    def collect(key: str, record: dict | None, error: str | None) -> None:
        if error is None:
            done[key] = record
        else:
            failed[key] = error
        bar.update()

    if workers <= 1 or len(todo) <= 1:
        for scan in todo:
            collect(*_one(process_one, scan, out))
    else:
        import multiprocessing

        n = min(workers, len(todo))
        share = threads or max(1, (os.cpu_count() or 1) // n)
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_limit_threads, initargs=(share,)) as pool:
            futures = [pool.submit(_one, process_one, scan, out) for scan in todo]
            for future in as_completed(futures):
                collect(*future.result())
    bar.close()
    return {"done": [done[k] for k in keys if k in done], "skipped": [skipped[k] for k in keys if k in skipped],
            "failed": [(k, failed[k]) for k in keys if k in failed]}


@dataclass(frozen=True)
class PrepareOptions:
    """Settings every ``prepare`` pipeline takes (DTI and PET alike)."""

    registration_mm: float = 2.0
    """Resolution (mm) of the template the registration runs against; the outputs are resampled onto the bundle's
    grid from the native image in one step whatever this is."""
    min_dice: float = 0.85
    """Brain-mask Dice with the template below which a registration counts as failed."""
    use_t1w: bool = True
    """Register through the subject's T1w when there is one (rigid to the T1w, then the T1w to the template)."""
    qc_figure: bool = True
    syn_iterations: tuple[int, ...] = (40, 20, 0)
    """SyN iterations at shrink factors 4, 2, 1 of the registration template."""


def _call(fn: Callable, bases: dict, options: PrepareOptions, scan, tmp: Path) -> dict:
    return fn(scan, tmp, bases[scan.key], options)


def subject_task(fn: Callable, bases: dict[str, dict], options: PrepareOptions) -> Callable:
    """``process_one`` for :func:`run_subjects` from a pipeline ``fn(scan, tmp, base, options) -> record``, where
    ``base`` is the subject's dataset.json fields from participants.tsv (id, group, age, sex). Picklable when
    ``fn`` is a module-level function, so it runs in worker processes."""
    return functools.partial(_call, fn, bases, options)
