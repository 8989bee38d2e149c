"""Ignite handlers (``attach(engine)``) shared by the bundles' workflows.

Imported on first use, so the light ones (the checkpoint saver) do not pull in the evaluation pipelines."""

from __future__ import annotations

import importlib

__all__ = ["BestCheckpointSaver", "FinalCheckpointSaver", "PDAnomalyEvaluationHandler", "ReconstructionImageHandler"]

_WHERE = {
    "BestCheckpointSaver": "common.handlers.checkpoint",
    "FinalCheckpointSaver": "common.handlers.checkpoint",
    "PDAnomalyEvaluationHandler": "common.handlers.pd_evaluation",
    "ReconstructionImageHandler": "common.handlers.tensorboard_images",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
