"""MONAI inferers: dense patch inference and reassembly of patch reconstructions into voxel maps."""

from common.inferers.patch_reassembly import DENSE_METHOD, PatchReassemblyInferer

__all__ = ["DENSE_METHOD", "PatchReassemblyInferer"]
