"""What a model may learn from: controls only. The bundles learn healthy anatomy; a patient in the training
or validation data would teach the model the anomalies it is meant to find."""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import InputDataError

__all__ = ["controls_datalist"]


def controls_datalist(subjects: Sequence[dict], keys: Sequence[str] = ("image",), what: str = "training") -> list[dict]:
    """MONAI datalist (``id`` + ``keys``) of ``subjects``, refusing any subject whose group is not ``control``."""
    if not subjects:
        raise ValueError(f"no subjects for {what}")
    others = [f"{s.get('id')} ({s.get('group')})" for s in subjects if s.get("group") != "control"]
    if others:
        raise InputDataError(None, f"only controls may be used for {what}, got {', '.join(others)}")
    return [{"id": s["id"], **{k: s[k] for k in keys}} for s in subjects]
