"""MONAI inferers: dense patch inference and reassembly of patch reconstructions into voxel maps."""
