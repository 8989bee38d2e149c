"""Best-model checkpoint that is replaced, never deleted first.

MONAI's ``CheckpointSaver`` (ignite's ``Checkpoint``) removes the previous best file before writing the new one,
so a run killed in between has no ``model.pt`` at all, or a 0-byte one. :class:`BestCheckpointSaver` serialises
the new best into memory, writes it to a temporary sibling (flushed and fsynced) and renames it onto the target
with :func:`common.data._jsonio.write_bytes_atomic`: at every instant the file is the previous best or the new
one, complete.
"""

from __future__ import annotations

import io
import logging
import math
import operator
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from common.data._jsonio import write_bytes_atomic

__all__ = ["BestCheckpointSaver", "FinalCheckpointSaver", "remove_stale_temporaries"]

logger = logging.getLogger(__name__)


def _unwrap(obj):
    """The module inside DataParallel / DistributedDataParallel, so the keys carry no ``module.`` prefix and the
    single-process inference config loads the file as it is."""
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return obj.module
    return obj


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, filename: str = "model.pt") -> list[Path]:
    """Delete the temporary siblings of ``filename`` that killed runs left (``.<filename>.<pid>.<hex>.tmp``, the
    names :func:`~common.data._jsonio.write_bytes_atomic` uses); those of a live process (another run writing into
    the same folder) stay. Returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(filename)}\.(\d+)\.[0-9a-f]+\.tmp$")
    removed = []
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        logger.info("removed %d temporary checkpoint file(s) of an interrupted run in %s", len(removed), folder)
    return removed


class BestCheckpointSaver:
    """Save ``save_dict``'s state to ``save_dir/filename`` each time the evaluator's key metric improves.

    Attach it to the evaluator (MONAI ``val_handlers``): at each ``EPOCH_COMPLETED`` it reads
    ``engine.state.metrics[metric_name]`` (default: MONAI's ``state.key_metric_name``, or the engine's only
    metric). Better means: lower when ``negative_sign`` is True, higher when False, and by default the engine's
    ``metric_cmp_fn`` (MONAI workflows), so the saved epoch is the ``best_metric_epoch`` the engine reports; a
    plain ignite engine without one keeps the highest. Non-finite values are never saved.

    The file holds the state dict itself when ``save_dict`` has one entry (what MONAI's ``CheckpointSaver``
    writes, loadable by ``module.load_state_dict``), else a dict of state dicts. DataParallel / DDP wrappers are
    unwrapped. Writing is atomic (see the module docstring); :meth:`attach` also removes temporaries that killed
    runs left in ``save_dir``.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: Mapping[str, object], filename: str = "model.pt",
                 metric_name: str | None = None, negative_sign: bool | None = None):
        if not save_dict:
            raise ValueError("save_dict must name at least one object with a state_dict()")
        if os.sep in filename or (os.altsep and os.altsep in filename):
            raise ValueError(f"filename must be a plain file name, got {filename!r}")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename
        self.metric_name = metric_name
        self.negative_sign = negative_sign
        self.best: float | None = None
        self.best_epoch = -1
        self._cmp: Callable[[float, float], bool] = operator.gt

    @property
    def path(self) -> Path:
        return self.save_dir / self.filename

    def attach(self, engine: Engine) -> None:
        if self.negative_sign is not None:
            self._cmp = operator.lt if self.negative_sign else operator.gt
        else:
            self._cmp = getattr(engine, "metric_cmp_fn", None) or operator.gt
        remove_stale_temporaries(self.save_dir, self.filename)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _metric(self, engine: Engine) -> float:
        name = self.metric_name or getattr(engine.state, "key_metric_name", None)
        metrics = engine.state.metrics
        if name is None:
            if len(metrics) != 1:
                raise KeyError(f"BestCheckpointSaver: name the metric to track (metric_name), one of {sorted(metrics)}")
            name = next(iter(metrics))
        value = metrics[name]
        return float(value.item() if hasattr(value, "item") else value)

    def state(self):
        """What goes into the file: one state dict, or a dict of them."""
        states = {key: _unwrap(obj).state_dict() for key, obj in self.save_dict.items()}
        return next(iter(states.values())) if len(states) == 1 else states

    def save(self) -> Path:
        """Write the current state now (atomically)."""
        buffer = io.BytesIO()
        torch.save(self.state(), buffer)
        view = buffer.getbuffer()  # no copy of a few hundred MB
        try:
            return write_bytes_atomic(self.path, view)
        finally:
            view.release()

    def __call__(self, engine: Engine) -> None:
        value = self._metric(engine)
        if not math.isfinite(value):
            logger.warning("key metric is %s at epoch %d: %s not updated", value, engine.state.epoch, self.path)
            return
        if self.best is not None and not self._cmp(value, self.best):
            return
        self.save()
        self.best, self.best_epoch = value, int(engine.state.epoch)
        logger.info("best key metric %.6g at epoch %d: saved %s", value, self.best_epoch, self.path)


class FinalCheckpointSaver(BestCheckpointSaver):
    """Save ``save_dict``'s state once, when the trainer completes: the model of a run without validation
    controls (the PD paper's exact 41/15 split has none), which has no best epoch to pick.

    Attach it to the trainer; same file format and atomic write as :class:`BestCheckpointSaver`.
    """

    def attach(self, engine: Engine) -> None:
        remove_stale_temporaries(self.save_dir, self.filename)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.save()
        self.best_epoch = int(engine.state.epoch)
        logger.info("training completed at epoch %d: saved %s (final weights, no validation)", self.best_epoch,
                    self.path)
