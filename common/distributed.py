"""The process's rank, read without a collective operation.

``ignite.distributed.get_rank()`` may set up its own process group the first time it is called (a collective that
every rank must join). Handlers that exist on rank 0 only (the bundles build their validation handlers on the main
process) must not call it: rank 0 would wait forever for ranks that never call it. This reads the rank that
``torch.distributed`` already holds.
"""

from __future__ import annotations

__all__ = ["process_rank", "process_world_size"]


def process_rank() -> int:
    """This process's rank in the default process group; 0 when none is initialised (one process)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def process_world_size() -> int:
    """The number of processes in the default process group; 1 when none is initialised."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
