"""Voxel-wise reconstruction of a volume by a 2D patch auto-encoder (pd_sae, docs/design.md section 3.2).

The siamese patch auto-encoder reconstructs axial patches (B, C, 15, 15) -> (B, C, 15, 15). To get a
reconstruction (and an error map) of a whole volume, :class:`PatchReassemblyInferer` takes the dense,
stride-1 patches centred on every voxel to reconstruct and reassembles the network's outputs:

- ``mode="centre"`` (default): each voxel takes the reconstructed centre pixel of the patch centred on it;
- ``mode="mean"``: each voxel takes the mean of every reconstructed patch that covers it (MONAI
  ``PatchInferer`` + ``AvgMerger`` style). Only patches centred on reconstructed voxels (mask and slab,
  same axial slice) take part, so a voxel at the mask's edge averages fewer patches than one inside it.

Conventions, fixed here so the evaluation and the network's fast path agree:

- **Patches** are axial: in the plane of the two spatial axes other than ``slab_axis`` (default the last,
  z), in their original order, so a patch of a (B, C, X, Y, Z) volume is ``(C, patch, patch)`` over (x, y).
- **Borders**: each axial slice is zero-padded by ``patch_size // 2`` in both in-plane axes, so every
  voxel has a full patch centred on it; pixels beyond the slice read 0 (the background value of the FA and
  MD maps). The padded pixels' reconstructions are discarded.
- **Reconstructed region** = ``mask & slab``: ``slab`` selects the axial slices (default
  :func:`common.data.slab.analysed_slab` of the atlas brain with ``n_slices`` = 40, exactly the slab the PD
  evaluation reads), ``mask`` selects the patch centres (default the atlas brain mask on the spm1p5 grid,
  every voxel on other grids).
- **Outside the region** the output equals the input by default (``outside="input"``), so the error map
  ``|x - x_hat|`` is exactly 0 there and only the analysed voxels carry error; ``outside="zero"`` writes 0
  instead. The PD evaluation only reads the brain voxels of the slab either way.
- **Batches** of patches (or of slices, on the fast path) are sized from ``memory_budget_mb`` unless
  ``batch_size`` / ``slice_batch_size`` is given: the first batch is a small probe during which the bytes
  of every leaf module's output are added up (an upper bound of the activation memory under
  ``torch.no_grad``: the sum of all intermediate tensors, not just the live ones), then each batch holds
  as many patches as fit in the budget with their inputs, outputs and reassembly buffers, at most
  ``max_batch_size`` (1024: larger batches are slower on CPU). A fast path that computes with
  ``torch.nn.functional`` instead of submodules is invisible to the probe: its slices are then budgeted
  on their inputs and outputs only (give ``slice_batch_size``, or chunk inside the method).
- **Fast path**: in ``"centre"`` mode, a network with a method
  ``dense_centre_reconstruction(slices: (S, C, H, W)) -> (S, C, H, W)`` is called on whole axial slices
  instead of patches. For every pixel it must return the reconstructed centre pixel of the
  ``patch_size`` x ``patch_size`` patch centred on that pixel, the slice being zero-padded by
  ``patch_size // 2`` (the network receives the *unpadded* slices and pads, or behaves as if padded,
  itself). In other words it must equal, to float tolerance, ``network(patches)[:, :, p, p]`` for the
  patches this inferer would extract. ``use_dense=False`` turns the fast path off.

>>> inferer = PatchReassemblyInferer(patch_size=15, mode="centre")   # spm1p5: atlas brain, 40-slice slab
>>> recon = inferer(volumes, network)                                 # (B, 2, 121, 145, 121)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from tqdm import tqdm

from common.data.slab import analysed_slab

__all__ = ["DENSE_METHOD", "PatchReassemblyInferer"]

logger = logging.getLogger(__name__)

#: Name of the optional network method used by the ``"centre"`` fast path.
DENSE_METHOD = "dense_centre_reconstruction"

_MODES = {"centre": "centre", "center": "centre", "mean": "mean"}
_PROBE_PATCHES = 16  # size of the first (measuring) batch of patches when no batch size is given


class PatchReassemblyInferer(Inferer):
    """Dense stride-1 patch inference over the analysed slab, reassembled into a voxel-wise reconstruction.

    Args:
        patch_size: odd in-plane patch size (pd_sae: 15). Slices are zero-padded by ``patch_size // 2``.
        mode: ``"centre"`` (each voxel = reconstructed centre pixel of its own patch) or ``"mean"`` (each
            voxel = mean of all reconstructed patches covering it).
        n_slices: number of axial slices of the analysed slab, derived with
            :func:`~common.data.slab.analysed_slab` from the atlas brain of ``grid`` when the input has
            that grid's shape, else from ``mask`` when it is an array, else centred on the volume.
            ``None``: every slice. Ignored when ``slab`` is given.
        slab: explicit slab, a ``slice`` along ``slab_axis``.
        mask: the voxels to reconstruct (patch centres). ``None`` (default): the brain mask of ``grid``'s
            atlas when the input has that grid's shape, else every voxel; ``"all"``: every voxel;
            ``"atlas:<grid>"``: that atlas's brain mask; or a boolean array / tensor of the spatial shape.
        batch_size: patches per network call (patch path); default from ``memory_budget_mb``.
        memory_budget_mb: memory allowed for one network call (patches, outputs, activations,
            reassembly buffers) when the batch sizes are not given.
        progress: show a tqdm progress bar over the slab's slices.
        slab_axis: the input axis across which slices are taken (``-1``: z of (B, C, X, Y, Z)); patches lie
            in the plane of the two other spatial axes.
        use_dense: use the network's ``dense_centre_reconstruction`` in ``"centre"`` mode when it has one.
        slice_batch_size: slices per ``dense_centre_reconstruction`` call; default from the budget.
        outside: value of the voxels outside the reconstructed region: ``"input"`` (default, zero error
            there) or ``"zero"``.
        grid: the grid whose atlas gives the default mask and slab when the input has its shape.
        channels_last: hand patch batches to the network in ``torch.channels_last`` memory format (about
            2x faster for small conv nets on CPU; same values). If the network's first call fails with
            that layout (e.g. it ``.view``s its input), the inferer falls back to contiguous batches.
        max_batch_size: upper bound of the patch batch sized from the budget (not of ``batch_size``). On
            CPU ~1k patches is the fastest for the pd_sae architecture (the activations stay in cache; 7k
            patches, what 512 MB allows, ran 2-3x slower); ``None``: the budget alone (e.g. on a GPU).
    """

    def __init__(
        self,
        patch_size: int = 15,
        mode: str = "centre",
        n_slices: int | None = 40,
        slab: slice | None = None,
        mask: str | np.ndarray | torch.Tensor | None = None,
        batch_size: int | None = None,
        memory_budget_mb: float = 512,
        progress: bool = False,
        slab_axis: int = -1,
        use_dense: bool = True,
        slice_batch_size: int | None = None,
        outside: str = "input",
        grid: str = "spm1p5",
        channels_last: bool = True,
        max_batch_size: int | None = 1024,
    ) -> None:
        if int(patch_size) != patch_size or patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd integer, got {patch_size!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be 'centre' or 'mean', got {mode!r}")
        if outside not in ("input", "zero"):
            raise ValueError(f"outside must be 'input' or 'zero', got {outside!r}")
        if slab is not None and not isinstance(slab, slice):
            raise TypeError(f"slab must be a slice, got {type(slab).__name__}")
        if n_slices is not None and (int(n_slices) != n_slices or n_slices < 1):
            raise ValueError(f"n_slices must be a positive integer or None, got {n_slices!r}")
        if slab_axis not in (-3, -2, -1, 2, 3, 4):
            raise ValueError("slab_axis must be a spatial axis of (B, C, X, Y, Z): 2, 3, 4 or -3, -2, -1; "
                             f"got {slab_axis}")
        for name, value in (("batch_size", batch_size), ("slice_batch_size", slice_batch_size),
                            ("max_batch_size", max_batch_size)):
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb}")
        if isinstance(mask, str) and mask != "all" and not mask.startswith("atlas:"):
            raise ValueError(f"mask must be None, 'all', 'atlas:<grid>' or an array; got {mask!r}")
        self.patch_size = int(patch_size)
        self.mode = _MODES[mode]
        self.n_slices = None if n_slices is None else int(n_slices)
        self.slab = slab
        self.mask = mask
        self.batch_size = None if batch_size is None else int(batch_size)
        self.memory_budget_mb = float(memory_budget_mb)
        self.progress = progress
        self.slab_axis = slab_axis % 5
        self.use_dense = use_dense
        self.slice_batch_size = None if slice_batch_size is None else int(slice_batch_size)
        self.outside = outside
        self.grid = grid
        self.channels_last = channels_last
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self._regions: dict[tuple[int, ...], tuple[np.ndarray, slice]] = {}
        self._channels_last_ok = True
        #: batch sizes used by the last call (for logging and tests): {"patch": n} or {"slice": n}, and
        #: the number of network calls.
        self.last_run: dict[str, Any] = {}

    # ------------------------------------------------------------------ region (mask & slab)
    def region(self, spatial_shape: Sequence[int]) -> tuple[np.ndarray, slice]:
        """``(region, slab)`` for inputs of this spatial shape (in the input's axis order): the boolean
        mask of the voxels that are reconstructed (``mask`` restricted to the slab) and the slab itself."""
        shape = tuple(int(s) for s in spatial_shape)
        if len(shape) != 3:
            raise ValueError(f"expected a 3D spatial shape, got {shape}")
        if shape not in self._regions:
            self._regions[shape] = self._resolve_region(shape)
        return self._regions[shape]

    def _atlas_brain(self, grid: str, shape: tuple[int, ...]) -> np.ndarray:
        from common.atlases import load_atlas

        brain = load_atlas(grid).brain
        if brain.shape != shape:
            raise ValueError(f"mask 'atlas:{grid}' has shape {brain.shape}, the input's spatial shape is {shape}")
        return brain

    def _grid_shape(self) -> tuple[int, ...] | None:
        from common.grids import GRIDS

        grid = GRIDS.get(self.grid)
        return None if grid is None else tuple(grid.shape)

    def _resolve_region(self, shape: tuple[int, ...]) -> tuple[np.ndarray, slice]:
        on_grid = self._grid_shape() == shape
        atlas_brain = None
        if self.mask is None:
            if on_grid:
                atlas_brain = mask = self._atlas_brain(self.grid, shape)
            else:
                mask = np.ones(shape, bool)
        elif isinstance(self.mask, str):
            if self.mask == "all":
                mask = np.ones(shape, bool)
            else:
                atlas_brain = mask = self._atlas_brain(self.mask.split(":", 1)[1], shape)
        else:
            mask = np.asarray(self.mask.detach().cpu() if isinstance(self.mask, torch.Tensor) else self.mask)
            while mask.ndim > 3 and mask.shape[0] == 1:
                mask = mask[0]
            if mask.shape != shape:
                raise ValueError(f"mask has shape {mask.shape}, the input's spatial shape is {shape}")
            mask = mask.astype(bool)
        axis = self.slab_axis - 2
        depth = shape[axis]
        if self.slab is not None:
            slab = self.slab
            if not range(depth)[slab]:
                raise ValueError(f"slab {slab} selects no slice of the {depth} along axis {self.slab_axis}")
        elif self.n_slices is None:
            slab = slice(0, depth)
        else:
            if atlas_brain is None and on_grid:
                atlas_brain = self._atlas_brain(self.grid, shape)
            reference = atlas_brain if atlas_brain is not None else mask
            try:
                slab = analysed_slab(np.moveaxis(reference, axis, -1), self.n_slices)
            except ValueError as err:
                raise ValueError(f"cannot derive the analysed slab of {self.n_slices} slices for spatial shape "
                                 f"{shape}: {err}; pass slab=slice(...) or n_slices=None (every slice)") from None
        region = np.zeros(shape, bool)
        index = [slice(None)] * 3
        index[axis] = slab
        region[tuple(index)] = mask[tuple(index)]
        return region, slab

    # ------------------------------------------------------------------ inference
    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        """Reconstruct ``inputs`` (B, C, X, Y, Z) voxel-wise; returns (B, C, X, Y, Z) on the inputs' device
        (a MetaTensor with the inputs' meta when they are one). ``args`` / ``kwargs`` go to every network call."""
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 5:
            raise ValueError(f"inputs must be a (B, C, X, Y, Z) tensor, got {getattr(inputs, 'shape', type(inputs))}")
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        x = x.movedim(self.slab_axis, -1)  # (B, C, H, W, D): slices along the last axis
        region_np, slab = self.region(inputs.shape[2:])
        region = torch.as_tensor(np.moveaxis(region_np, self.slab_axis - 2, -1), device=x.device)
        b, c, h, w, d = x.shape
        z = torch.arange(d, device=x.device)[slab]
        nz = len(z)
        # (S, C, H, W) slices of the slab, S = B * nz, and their (S, H, W) region
        slices = x[..., z].permute(0, 4, 1, 2, 3).reshape(b * nz, c, h, w)
        reg = region[..., z].permute(2, 0, 1).unsqueeze(0).expand(b, nz, h, w).reshape(b * nz, h, w)
        dense = self._dense_method(network) if self.mode == "centre" and self.use_dense else None
        with torch.no_grad():
            if dense is not None:
                rec = self._run_dense(dense, slices, reg, args, kwargs)
            else:
                rec = self._run_patches(network, slices, reg, args, kwargs)
            out = (x.to(rec.dtype, copy=True) if self.outside == "input"
                   else torch.zeros(x.shape, dtype=rec.dtype, device=x.device))
            out[..., z] = rec.reshape(b, nz, c, h, w).permute(0, 2, 3, 4, 1)
        out = out.movedim(-1, self.slab_axis)
        if isinstance(inputs, MetaTensor):
            out = convert_to_dst_type(out, inputs, dtype=out.dtype)[0]
        return out

    @staticmethod
    def _dense_method(network: Any) -> Callable | None:
        if isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            network = network.module
        method = getattr(network, DENSE_METHOD, None)
        return method if callable(method) else None

    def _budget_items(self, per_item_bytes: float) -> int:
        return max(1, int(self.memory_budget_mb * 2**20 // max(per_item_bytes, 1.0)))

    def _fill(self, slices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.outside == "input":
            return slices.to(dtype, copy=True)
        return torch.zeros(slices.shape, dtype=dtype, device=slices.device)

    def _bar(self, total: int):
        return tqdm(total=total, desc="patch reassembly", unit="slice", disable=not self.progress, leave=False)

    def _run_dense(self, dense: Callable, slices: torch.Tensor, reg: torch.Tensor, args, kwargs) -> torch.Tensor:
        """Fast path: the network reconstructs the centre pixel of every zero-padded patch of whole slices."""
        rows = torch.nonzero(reg.flatten(1).any(1)).flatten()
        n = len(rows)
        rec = None
        size = self.slice_batch_size
        start, calls = 0, 0
        with self._bar(len(slices)) as bar:
            while start < n:
                step = size or 1
                batch_rows = rows[start:start + step]
                batch = slices[batch_rows]
                if size is None:  # probe: one slice, measuring the activations, then size from the budget
                    out, act = _measure(dense, batch, *args, **kwargs)
                    per_slice = act + batch.nbytes + out.nbytes + out.nbytes  # + result buffer
                    size = self._budget_items(per_slice)
                else:
                    out = dense(batch, *args, **kwargs)
                calls += 1
                if not isinstance(out, torch.Tensor) or out.shape != batch.shape:
                    raise ValueError(f"{DENSE_METHOD} must return a tensor of its input's shape {tuple(batch.shape)} "
                                     f"(S, C, H, W), got {getattr(out, 'shape', type(out))}")
                if rec is None:
                    rec = self._fill(slices, out.dtype)
                rec[batch_rows] = torch.where(reg[batch_rows].unsqueeze(1), out.to(rec.dtype), rec[batch_rows])
                start += len(batch_rows)
                bar.update(len(batch_rows))
            bar.update(len(slices) - bar.n)
        self.last_run = {"path": "dense", "slice": size, "calls": calls}
        return rec if rec is not None else self._fill(slices, slices.dtype)

    def _run_patches(self, network: Callable, slices: torch.Tensor, reg: torch.Tensor, args, kwargs) -> torch.Tensor:
        """Patch path: gather the stride-1 patches centred on the region's voxels, reconstruct, reassemble."""
        ps, p = self.patch_size, self.patch_size // 2
        s_total, c, h, w = slices.shape
        hp, wp = h + 2 * p, w + 2 * p
        padded = F.pad(slices, (p, p, p, p))
        view = padded.unfold(2, ps, 1).unfold(3, ps, 1)  # (S, C, H, W, ps, ps) strided view, no copy
        centres = torch.nonzero(reg)  # (N, 3): slice, row, column; sorted by slice
        n = len(centres)
        mean = self.mode == "mean"
        if mean:  # flat offsets of a patch's pixels in the padded (S, Hp, Wp) grid, relative to its corner
            steps = torch.arange(ps, device=slices.device)
            offsets = (steps[:, None] * wp + steps).flatten()
        rec = acc = out_dtype = None
        size = self.batch_size
        start, calls = 0, 0
        with self._bar(s_total) as bar:
            while start < n:
                step = size or min(_PROBE_PATCHES, n)
                s, i, j = centres[start:start + step].unbind(1)
                patches = view[s, :, i, j]  # (n, C, ps, ps)
                out, act = self._call_network(network, patches, args, kwargs, measure=size is None, first=calls == 0)
                calls += 1
                if size is None:
                    per_patch = (act + 2 * patches.nbytes + out.nbytes) / len(s)
                    if mean:  # flat indices (int64) and the reordered values of the scatter-add
                        per_patch += ps * ps * 8 + out.nbytes / len(s)
                    size = self._budget_items(per_patch)
                    if self.max_batch_size is not None:
                        size = min(size, self.max_batch_size)
                if rec is None and acc is None:
                    if mean:  # float64 sums: a mean of identical values gives that value back exactly
                        acc_dtype = torch.float32 if slices.device.type == "mps" else torch.float64
                        acc = torch.zeros((c, s_total * hp * wp), dtype=acc_dtype, device=slices.device)
                        out_dtype = torch.promote_types(out.dtype, torch.float32)
                    else:
                        rec = self._fill(slices, out.dtype)
                if mean:
                    flat = ((s * hp + i) * wp + j)[:, None] + offsets  # (n, ps*ps) top-left corner in padded = centre
                    acc.index_add_(1, flat.flatten(), out.permute(1, 0, 2, 3).reshape(c, -1).to(acc.dtype))
                else:
                    rec[s, :, i, j] = out[:, :, p, p].to(rec.dtype)
                start += len(s)
                done = s_total if start >= n else int(centres[start, 0])
                bar.update(done - bar.n)
            bar.update(s_total - bar.n)
        self.last_run = {"path": "patches", "patch": size, "calls": calls}
        if n == 0:
            return self._fill(slices, slices.dtype)
        if not mean:
            return rec
        summed = acc.view(c, s_total, hp, wp)[:, :, p:p + h, p:p + w].permute(1, 0, 2, 3)
        ones = torch.ones((1, 1, ps, ps), dtype=torch.float32, device=slices.device)
        count = F.conv2d(reg.unsqueeze(1).float(), ones, padding=p)  # reconstructed patches covering a voxel (exact)
        averaged = (summed / count.clamp_min(1).to(acc.dtype)).to(out_dtype)
        return torch.where(reg.unsqueeze(1), averaged, self._fill(slices, out_dtype))

    def _call_network(self, network: Callable, patches: torch.Tensor, args, kwargs, measure: bool, first: bool):
        """One network call on a patch batch, in channels_last layout when enabled; if the first call fails
        in that layout (e.g. the network ``.view``s its input), this call and the next use contiguous ones."""
        def run(batch):
            if measure:
                return _measure(network, batch, *args, **kwargs)
            return network(batch, *args, **kwargs), 0

        if self.channels_last and self._channels_last_ok:
            try:
                out, act = run(patches.contiguous(memory_format=torch.channels_last))
                self._check_patch_output(out, patches)
                return out, act
            except (RuntimeError, ValueError) as err:
                if not first:
                    raise
                logger.warning("network failed on channels_last patches (%s); retrying with contiguous patches", err)
                self._channels_last_ok = False
        out, act = run(patches.contiguous())
        self._check_patch_output(out, patches)
        return out, act

    @staticmethod
    def _check_patch_output(out: Any, patches: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or out.shape != patches.shape:
            raise ValueError(f"the network must map patches (n, C, p, p) to a tensor of the same shape; input "
                             f"{tuple(patches.shape)}, output {getattr(out, 'shape', type(out))}")


def _measure(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """``fn(*args, **kwargs)`` and the bytes of every tensor output meanwhile by the leaf modules of ``fn``
    (a module, or a module's bound method): an upper bound of the activation memory of that call."""
    module = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    if not isinstance(module, torch.nn.Module):
        return fn(*args, **kwargs), 0
    total = [0]

    def hook(_module, _inputs, output):
        total[0] += _tensor_bytes(output)

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        out = fn(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return out, total[0]


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_tensor_bytes(o) for o in obj.values())
    return 0

