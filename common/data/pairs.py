"""pd_sae's training pairs: two 15x15 axial patches centred at the same voxel of two different healthy subjects.

Alaverdyan et al. (MedIA 2020), as used by the PD paper: the siamese auto-encoder is trained on "similar" pairs
only, i.e. patches at the same MNI location in two different training controls. Centres are drawn uniformly
among the brain-mask voxels of the analysed slab (:func:`~common.data.slab.analysed_slab`, 40 axial slices
around the brain centre), the ordered subject pair uniformly among the pairs of distinct subjects. A patch is
2D: a ``P x P`` window in (x, y) at the centre's z, all channels, zero beyond the volume's border.

Memory layout and gather (why it is fast): every volume is read and validated once, and only the slab's
bounding box around the mask (plus ``P // 2`` voxels of zero padding in x and y) is kept, in one float32 numpy
array. With ``channels_last=False`` (default) it is ``(N, S, C, X, Y)``: a patch is ``C * P`` rows of ``P``
contiguous floats; with ``channels_last=True`` it is ``(N, S, X, Y, C)``: a patch is ``P`` rows of ``P * C``
contiguous floats (all channels of a row together). A read-only view of the array has one opaque (numpy
``void``) item of a row's size at every float, the items overlapping; the rows of all patches of a sample are
then copied by one fancy-indexing call, ``rows[corner_offsets[:, None] + row_offsets]``, each row as one
block (numpy's 1-D "trivial" indexing path: no per-element index arithmetic, no Python per patch; measured
faster than ``torch.take`` with a full offset grid, ``as_strided`` patch views with advanced indexing in torch
or numpy, and ``index_select``). Corner offsets are ``subject_offset[s] + voxel_offset[v]`` from two
precomputed tables. The gather is memory-bound (random rows of a ~90 MiB store for 20 subjects).
``benchmarks/pd_sae_sampler.py`` measures it on one core at hundreds of times a MONAI ``SpatialCrop`` loop
and about 100 times the SAE's own training step, so it never limits training.

On a GPU (``device``): the same store is held once as a flat torch tensor on the device and a batch is one
torch gather of every float of every patch (``flat[corner[:, None] + element_offset]``) there, so a training
step copies nothing from the host: an epoch's draws are made at its start (the same numpy stream, in the same
order, so the pairs are those of the host path) and their corner offsets moved to the device in one copy.

Randomness: ``sample(n, rng)`` draws from the numpy ``Generator`` it is given. An epoch of :meth:`__iter__`
draws from its own stream, ``SeedSequence(seed, spawn_key=(epoch, rank))``: deterministic for a seed,
different for every epoch and every distributed rank, independent of the number of DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from common.data.slab import analysed_slab
from common.distributed import process_rank, process_world_size

__all__ = ["SiamesePairSampler"]

#: Seeds drawn from a ``RandomState`` are below this bound, as MONAI's ``Randomizable`` does.
MAX_SEED = np.iinfo(np.uint32).max + 1


class SiamesePairSampler(IterableDataset):
    """Iterable dataset of siamese pair batches for pd_sae, with a vectorised :meth:`sample`.

    Iterating yields ``len(self)`` batches ``{"image": (2 * batch_size, C, P, P) float32}``: rows ``i`` and
    ``batch_size + i`` are the two patches of pair ``i`` (the layout
    :class:`~common.losses.SiameseReconstructionLoss` expects; ``torch.cat([x1, x2])`` of :meth:`sample`).
    Use it as ``torch.utils.data.DataLoader(sampler, batch_size=None, num_workers=0)`` (MONAI's ``DataLoader``
    also needs ``collate_fn=monai.data.utils.no_collation``, its default collate expects a list of samples).

    Epochs: the sampler keeps an epoch counter. Each ``iter(sampler)`` (each ``iter(DataLoader)``, i.e. each
    epoch of a MONAI ``SupervisedTrainer``) draws epoch ``self.epoch`` and then increments the counter, so
    consecutive passes draw new pairs with nothing to call; :meth:`set_epoch` sets the epoch of the next pass
    (as ``DistributedSampler.set_epoch``), and :meth:`attach` makes an Ignite/MONAI engine call it at every
    ``EPOCH_STARTED`` with its own 0-based epoch (or list the sampler in the trainer's ``train_handlers``).
    That keeps the pairs identical after resuming from a checkpoint, and is needed with ``num_workers > 0``
    without ``persistent_workers`` (workers get a copy of the sampler, so their counters do not advance the
    main one). ``num_workers=0`` is recommended: a batch costs about 1 % of the SAE's training step on the
    same core.

    Epoch size: ``pairs_per_epoch // batch_size`` batches (the last partial batch is dropped, so every batch
    has the same shape; the paper's 300,000 pairs in batches of 225 give 1333 batches, 299,925 pairs).
    With ``world_size`` ranks, each rank yields ``ceil(that / world_size)`` batches of its own stream.

    Args:
        data: dataset entries (a MONAI datalist) with an ``image`` list (one path per channel) and an ``id`` (as
            from :func:`~common.data.split_subjects`); with ``volumes``, anything naming them (or ``None``).
            At least two subjects. Indices returned by :meth:`sample` index this sequence.
        grid: grid the files must be on; also gives the default mask (the atlas brain).
        modalities: one modality per channel (validated ranges).
        patch_size: odd patch side ``P`` (paper: 15).
        n_slices: thickness of the analysed slab, centred on the mask's centre of mass (paper: 40).
        pairs_per_epoch: pairs per epoch over all ranks (paper: 600,000 patches = 300,000 pairs).
        batch_size: pairs per batch (paper: 225; a batch holds ``2 * batch_size`` patches).
        seed: base seed of the epoch streams (``None``: fresh entropy). MONAI's ``DataLoader`` replaces it by
            calling :meth:`set_random_state` with a seed from torch's global generator (so
            ``monai.utils.set_determinism`` governs it), as for any randomizable dataset.
        num_threads: files read in parallel (decompression releases the GIL).
        progress: show a progress bar while loading.
        volumes: in-memory ``(N, C, X, Y, Z)`` array or tensor instead of files (tests, tools); values are
            checked to be finite.
        mask: boolean ``(X, Y, Z)`` mask of allowed centres; default the atlas brain of ``grid``.
        channels_last: return patches in ``torch.channels_last`` memory format (same ``(n, C, P, P)`` shape
            and values; ``.view`` on them fails, ``.reshape``/``.flatten`` work). Gathers about 1.4 times
            faster, and the SAE's CPU training step runs about 1.5 times faster on such batches (oneDNN's
            NHWC convolutions; same loss), so pd_sae can set it: its network and loss only use ``flatten``.
        device: keep the store on this torch device and gather there with torch (a GPU's training batches are
            made where the network runs, no per-step host copy); ``None`` (default) keeps it in host memory and
            gathers with numpy, the fastest path on a CPU. Batches are the same either way.
        rank, world_size: distributed rank and number of ranks; both ``None`` (default) reads them from
            ``torch.distributed`` at iteration time when it is initialised, else 0 and 1.
        transform: dictionary transform that loads one entry (its ``image`` becomes the ``(C, X, Y, Z)``
            volume), as MONAI's ``Dataset(data, transform)``: the bundle's ``train#preprocessing``. Default:
            :class:`~common.transforms.LoadValidatedImage` of ``grid`` and ``modalities`` on ``image``.
    """

    def __init__(
        self,
        data: Sequence[Any] | None,
        grid: str = "spm1p5",
        modalities: Sequence[str] = ("FA", "MD"),
        patch_size: int = 15,
        n_slices: int = 40,
        pairs_per_epoch: int = 300_000,
        batch_size: int = 225,
        seed: int | None = 0,
        num_threads: int = 2,
        progress: bool = True,
        volumes: np.ndarray | torch.Tensor | None = None,
        mask: np.ndarray | torch.Tensor | None = None,
        channels_last: bool = False,
        device: str | torch.device | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        transform: Any = None,
    ) -> None:
        super().__init__()
        subjects = data
        if isinstance(patch_size, bool) or int(patch_size) != patch_size or patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd integer (patches are centred on a voxel), "
                             f"got {patch_size}")
        if int(batch_size) < 1 or int(pairs_per_epoch) < int(batch_size):
            raise ValueError(f"need 1 <= batch_size <= pairs_per_epoch, got batch_size={batch_size}, "
                             f"pairs_per_epoch={pairs_per_epoch}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
        if world_size is not None and not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        modalities = [modalities] if isinstance(modalities, str) else list(modalities)
        self.patch_size = int(patch_size)
        self.n_slices = int(n_slices)
        self.pairs_per_epoch = int(pairs_per_epoch)
        self.batch_size = int(batch_size)
        self.channels_last = bool(channels_last)
        self.device = None if device is None else torch.device(device)
        self._rank, self._world_size = (None, None) if rank is None else (int(rank), int(world_size))
        self.epoch = 0
        self.set_random_state(seed=seed)

        n = len(volumes) if volumes is not None and subjects is None else len(subjects or ())
        if volumes is not None and subjects is None:
            subjects = list(range(n))
        if n < 2:
            raise ValueError(f"SiamesePairSampler needs at least 2 subjects (a pair is of two different "
                             f"subjects), got {n}")
        self.subjects = list(subjects)
        self.ids = [str(s["id"]) if isinstance(s, dict) and "id" in s else str(s) for s in self.subjects]

        # ---- mask, slab and the stored box ------------------------------------------------------------
        if volumes is not None:
            volumes = volumes.detach().cpu().numpy() if isinstance(volumes, torch.Tensor) else np.asarray(volumes)
            if volumes.ndim != 5 or volumes.shape[0] != n:
                raise ValueError(f"volumes must be (N={n}, C, X, Y, Z), got shape {volumes.shape}")
            if volumes.shape[1] != len(modalities):
                raise ValueError(f"volumes have {volumes.shape[1]} channels for modalities {modalities}")
            spatial = volumes.shape[2:]
        if mask is None:
            from common.atlases import load_atlas

            mask = load_atlas(grid).brain
        mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if mask.ndim != 3:
            raise ValueError(f"mask must be 3D (X, Y, Z), got shape {mask.shape}")
        mask = mask.astype(bool, copy=False)
        if volumes is not None and mask.shape != spatial:
            raise ValueError(f"mask shape {mask.shape} differs from the volumes' {spatial}")
        if not mask.any():
            raise ValueError("the mask of allowed patch centres is empty")
        self.slab = analysed_slab(mask, self.n_slices)
        in_slab = mask[..., self.slab]
        if not in_slab.any():
            raise ValueError(f"the mask has no voxel in the analysed slab {self.slab}")
        self.grid_shape = tuple(int(d) for d in mask.shape)

        h = self.patch_size // 2
        xs, ys, zs = np.nonzero(in_slab)
        x0, y0 = int(xs.min()) - h, int(ys.min()) - h  # grid coordinates of the stored box's origin
        nx, ny = int(xs.max()) - x0 + h + 1, int(ys.max()) - y0 + h + 1
        n_channels = self._n_channels = len(modalities)
        s = self.slab.stop - self.slab.start
        shape = (n, s, nx, ny, n_channels) if self.channels_last else (n, s, n_channels, nx, ny)
        self._store = np.zeros(shape, np.float32)  # zeros: the padding beyond the volume
        # the part of the box inside the volume, in grid and in box coordinates
        gx, gy = slice(max(x0, 0), min(x0 + nx, mask.shape[0])), slice(max(y0, 0), min(y0 + ny, mask.shape[1]))
        bx, by = slice(gx.start - x0, gx.stop - x0), slice(gy.start - y0, gy.stop - y0)

        def store(i: int, volume: np.ndarray) -> None:  # volume (C, X, Y, Z) -> box of subject i
            block = volume[:, gx, gy, self.slab]  # (C, x, y, z)
            if self.channels_last:
                self._store[i, :, bx, by, :] = block.transpose(3, 1, 2, 0)
            else:
                self._store[i, :, :, bx, by] = block.transpose(3, 0, 1, 2)

        if volumes is not None:
            if not np.isfinite(volumes).all():
                raise ValueError("volumes hold NaN or infinite values")
            for i in range(n):
                store(i, volumes[i])
        else:
            from common.data.volumes import load_subject_volumes
            from common.grids import get_grid

            if tuple(get_grid(grid).shape) != self.grid_shape:
                raise ValueError(f"mask shape {self.grid_shape} differs from grid {get_grid(grid).name} "
                                 f"{get_grid(grid).shape}")
            load_subject_volumes(self.subjects, grid, modalities, store, num_threads, progress, transform=transform)

        # ---- the gather: corner offsets and the strided view of all patches ---------------------------
        st = np.array(self._store.strides, dtype=np.int64) // self._store.itemsize
        st_n, st_z = st[0], st[1]
        st_x, st_y, st_c = (st[2], st[3], st[4]) if self.channels_last else (st[3], st[4], st[2])
        self._centres = np.stack([xs, ys, zs + self.slab.start], axis=1).astype(np.int64)  # (M, 3) grid voxels
        # corner of the patch of centre (x, y, z) in box coordinates: (x - h - x0, y - h - y0, z - slab.start)
        self._voxel_offset = (zs * st_z + (xs - h - x0) * st_x + (ys - h - y0) * st_y).astype(np.int64)
        self._subject_offset = np.arange(n, dtype=np.int64) * st_n
        p = self.patch_size
        if self.channels_last:  # a patch is P rows of P * C contiguous floats
            self._row_len, row_offset = p * n_channels, np.arange(p) * st_x
        else:  # a patch is C * P rows of P contiguous floats, channel by channel
            self._row_len, row_offset = p, (np.arange(n_channels)[:, None] * st_c + np.arange(p) * st_x).ravel()
        self._row_offset = row_offset.astype(np.int64)
        self._flat = None
        if self.device is not None:  # every float of a patch, in the order the host path's rows give them
            self._element_offset = torch.from_numpy(
                (self._row_offset[:, None] + np.arange(self._row_len)).ravel()).to(self.device)
            self._flat = torch.from_numpy(self._store.reshape(-1)).to(self.device)
            self._store = None  # the device holds it now
        self._make_rows()

    def _make_rows(self) -> None:
        """The gather's view: one item per possible row start, a row of floats seen as one opaque (void) element
        so numpy copies it as a block. Items overlap (stride one float); nothing is copied. Host path only."""
        if self._store is None:
            self._rows = None
            return
        flat = self._store.reshape(-1)
        self._rows = np.ndarray((flat.size - self._row_len + 1,), np.dtype((np.void, self._row_len * flat.itemsize)),
                                buffer=flat, strides=(flat.itemsize,))
        self._rows.flags.writeable = False

    def __getstate__(self) -> dict:  # pickling (spawned DataLoader workers): the store, not the overlapping view
        state = self.__dict__.copy()
        del state["_rows"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._make_rows()

    # ---- properties -----------------------------------------------------------------------------------

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def n_channels(self) -> int:
        return self._n_channels

    @property
    def n_centres(self) -> int:
        """Number of allowed patch centres (mask voxels in the slab)."""
        return len(self._voxel_offset)

    @property
    def centre_voxels(self) -> np.ndarray:
        """(M, 3) int64 allowed centres (x, y, z) on the full grid, read-only."""
        view = self._centres.view()
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Memory held by the stored slabs (on the host, or on ``device``)."""
        if self._flat is not None:
            return self._flat.element_size() * self._flat.nelement()
        return self._store.nbytes

    @property
    def rank(self) -> int:
        if self._rank is not None:
            return self._rank
        return process_rank()

    @property
    def world_size(self) -> int:
        if self._world_size is not None:
            return self._world_size
        return process_world_size()

    # ---- randomness -----------------------------------------------------------------------------------

    def set_random_state(self, seed: int | None = None,
                         state: np.random.RandomState | None = None) -> SiamesePairSampler:
        """Set the base seed of the epoch streams, as MONAI's ``Randomizable.set_random_state``: ``seed`` modulo
        ``2**32``, else drawn from the ``RandomState`` ``state``, else from fresh entropy. Returns ``self``."""
        if seed is not None:
            self.seed = int(seed) % MAX_SEED
        elif state is not None:
            if not isinstance(state, np.random.RandomState):
                raise TypeError(f"state must be a numpy RandomState, got {type(state).__name__}")
            self.seed = int(state.randint(MAX_SEED))
        else:
            self.seed = int(np.random.SeedSequence().entropy)
        return self

    def set_epoch(self, epoch: int) -> None:
        """Epoch (0-based) drawn by the next ``iter(self)``."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def epoch_rng(self, epoch: int, rank: int | None = None) -> np.random.Generator:
        """The random stream of ``epoch`` on ``rank`` (default: this process's rank)."""
        rank = self.rank if rank is None else int(rank)
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(int(epoch), rank))))

    def attach(self, engine) -> None:
        """Make an Ignite/MONAI engine set the epoch at every ``EPOCH_STARTED`` (its 0-based epoch).

        This is the Ignite handler API, so the sampler can be listed in a MONAI trainer's ``train_handlers``.
        """
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.set_epoch(e.state.epoch - 1))

    # ---- sampling -------------------------------------------------------------------------------------

    def _draw(self, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre indices and ordered subject pairs (uniform, always distinct) of ``n_pairs`` pairs."""
        centre = rng.integers(0, self.n_centres, n_pairs)
        first = rng.integers(0, self.n_subjects, n_pairs)
        second = (first + rng.integers(1, self.n_subjects, n_pairs)) % self.n_subjects
        return centre, first, second

    def _gather(self, offsets: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(k, C, P, P) patches whose corners are at the flat ``offsets`` of the store: one numpy copy, or one
        torch gather on ``device``."""
        if self._flat is not None:
            offsets = torch.as_tensor(offsets).to(self.device)
            patches = self._flat[offsets[:, None] + self._element_offset]
        else:
            rows = self._rows[(offsets[:, None] + self._row_offset).ravel()]  # every row of every patch, as blocks
            patches = torch.from_numpy(rows.view(np.float32))
        p, c = self.patch_size, self.n_channels
        if self.channels_last:
            return patches.view(len(offsets), p, p, c).permute(0, 3, 1, 2)
        return patches.view(len(offsets), c, p, p)

    def _batch(self, centre: np.ndarray, first: np.ndarray, second: np.ndarray) -> torch.Tensor:
        """(2n, C, P, P): the first patches, then their partners, in one gather."""
        n = len(centre)
        offsets = np.empty(2 * n, np.int64)
        corner = self._voxel_offset[centre]
        np.add(self._subject_offset[first], corner, out=offsets[:n])
        np.add(self._subject_offset[second], corner, out=offsets[n:])
        return self._gather(offsets)

    def sample(self, n_pairs: int, rng: np.random.Generator | int | np.random.SeedSequence) -> dict[str, torch.Tensor]:
        """Draw ``n_pairs`` pairs from ``rng`` (a numpy ``Generator``, or a seed for one).

        Returns ``x1``, ``x2`` (n, C, P, P) float32, the two patches of each pair (the training batch is
        ``torch.cat([x1, x2])``); ``centres`` (n, 3) int64 voxel indices (x, y, z) on the full grid;
        ``subjects`` (n, 2) int64 indices into ``self.subjects`` (always different). Pairs come in draw order
        (i.i.d.), so any slice of a sample is itself a random sample.
        """
        if int(n_pairs) < 0:
            raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
        centre, first, second = self._draw(int(n_pairs), np.random.default_rng(rng))
        corner = self._voxel_offset[centre]
        return {
            # two allocations rather than one of 2n: half-size blocks are recycled by the C allocator
            # instead of being mapped (and zeroed by the kernel) afresh at every call of ~10k pairs
            "x1": self._gather(self._subject_offset[first] + corner),
            "x2": self._gather(self._subject_offset[second] + corner),
            "centres": torch.from_numpy(self._centres[centre]),
            "subjects": torch.from_numpy(np.stack([first, second], axis=1)),
        }

    # ---- iteration ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return math.ceil((self.pairs_per_epoch // self.batch_size) / self.world_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        return self.batches(epoch)

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of ``epoch`` on this rank, without touching the epoch counter.

        Batch ``b`` is the ``b``-th ``sample(batch_size, rng)`` of ``rng = epoch_rng(epoch)``. Inside a
        DataLoader worker, worker ``w`` of ``W`` yields batches ``w, w + W, ...`` (all workers draw the same
        stream, so the DataLoader's round-robin order gives the same sequence as ``num_workers=0``).
        """
        rng = self.epoch_rng(epoch)
        worker = get_worker_info()
        worker_id, n_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        if self._flat is not None:
            yield from self._device_batches(rng, worker_id, n_workers)
            return
        for b in range(len(self)):
            drawn = self._draw(self.batch_size, rng)
            if b % n_workers == worker_id:
                yield {"image": self._batch(*drawn)}

    def _device_batches(self, rng: np.random.Generator, worker_id: int, n_workers: int):
        """The device path of :meth:`batches`: the epoch's draws first (the same stream and order), their corner
        offsets moved to the device in one copy, then one gather a batch with nothing from the host."""
        drawn = [self._draw(self.batch_size, rng) for _ in range(len(self))]
        mine = [d for b, d in enumerate(drawn) if b % n_workers == worker_id]
        if not mine:
            return
        centre, first, second = (np.stack(part) for part in zip(*mine))  # (B, n) each
        corner = self._voxel_offset[centre]
        offsets = np.concatenate([self._subject_offset[first] + corner, self._subject_offset[second] + corner], 1)
        offsets = torch.from_numpy(offsets).to(self.device)  # (B, 2n)
        for row in offsets:
            yield {"image": self._gather(row)}
