"""Every file writer goes through :func:`common.data._jsonio.atomic_path`: a failed write leaves the old file."""

from __future__ import annotations

import os

import pytest

from common.data._jsonio import atomic_path, write_bytes_atomic


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "map.nii.gz"
    with atomic_path(target, ".nii.gz") as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".map.nii.gz.") and tmp.name.endswith(".tmp.nii.gz")
        assert f".{os.getpid()}." in tmp.name and not target.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError, match="writer died"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["map.nii.gz"]
    with pytest.raises(FileNotFoundError), atomic_path(target):  # a writer that wrote nothing replaces nothing
        pass
    assert target.read_bytes() == b"new"
    assert write_bytes_atomic(target, b"bytes") == target and target.read_bytes() == b"bytes"


def test_figures_and_release_copies_are_atomic(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from common.app.release import _copy_atomic
    from common.visualize.pd import _save

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    out = _save(fig, tmp_path / "fig.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        _save(fig, tmp_path / "fig.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["fig.png"]
    src = tmp_path / "src.bin"
    src.write_bytes(b"weights")
    _copy_atomic(src, tmp_path / "dist" / "w.pt")
    assert (tmp_path / "dist" / "w.pt").read_bytes() == b"weights"
