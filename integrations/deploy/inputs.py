"""Where the Deploy app finds its model and one subject's files (no Deploy SDK import: testable anywhere)."""

from __future__ import annotations

from pathlib import Path

from common.errors import InputDataError

__all__ = ["find_subject_files", "model_file"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_subject_files(input_path: str | Path, modalities: list[str]) -> tuple[list[Path], str]:
    """The subject's files in modality order and its id, or InputDataError naming the input and the problem."""
    path = Path(input_path)
    wanted = ", ".join(modalities)
    if path.is_file():
        if len(modalities) != 1:
            raise InputDataError(path, f"the bundle needs {len(modalities)} modalities ({wanted}): give a folder "
                                       "with one NIfTI per modality named *<MODALITY>.nii.gz")
        return [path], _stem(path)
    if not path.is_dir():
        raise InputDataError(path, "input not found")
    niftis = sorted(f for f in path.iterdir() if f.is_file() and f.name.lower().endswith(NIFTI_SUFFIXES))
    if len(modalities) == 1 and len(niftis) == 1:
        return niftis, _stem(niftis[0])
    files, ids = [], set()
    for modality in modalities:
        hits = [f for f in niftis if _stem(f).upper().endswith(modality.upper())]
        if len(hits) != 1:
            found = ", ".join(f.name for f in hits) if hits else "none"
            raise InputDataError(path, f"expected exactly one NIfTI named *{modality}.nii.gz for modality {modality} "
                                       f"(the bundle needs {wanted}); found {found}")
        files.append(hits[0])
        ids.add(_stem(hits[0])[: -len(modality)].rstrip("_-."))
    subject = ids.pop() if len(ids) == 1 and "" not in ids else path.name
    return files, subject


def model_file(model_path: str | Path) -> Path:
    """``model.ts`` itself, or the one inside a model folder."""
    path = Path(model_path)
    if path.is_dir():
        candidates = sorted(path.glob("*.ts"))
        if len(candidates) != 1:
            raise InputDataError(path, f"expected one packaged model (*.ts) in the model folder, found "
                                       f"{len(candidates)}; make it with integrations/deploy/package.py")
        path = candidates[0]
    if not path.is_file():
        raise InputDataError(path, "model not found; make it with integrations/deploy/package.py")
    return path
