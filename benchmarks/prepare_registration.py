"""Registration for ``prepare``: ANTsPy SyN against dipy's SyN on the same moved phantom, time and accuracy side by
side, and where the time of one DTI subject goes.

The phantom is ``tests/prepare_phantoms.dwi_phantom``: a control of the synthetic PD cohort moved off the template by
a known random affine (rotation, translation, scaling) plus a smooth warp, its DWI simulated from tensors (2 shells x
12 directions, Rician noise, 2 mm voxels). Both methods register the same masked mean b=0 image to the same 2 mm
ICBM152 template (mutual information for the affine part; ANTs: Mattes MI for SyN, dipy: cross-correlation, its
recommended SyN metric); accuracy is the brain-mask Dice on spm1p5 and the centroid error of six deep nuclei moved by
the known motion and brought back. One thread each (ITK and numpy), as each worker of ``prepare`` gets on 2 cores.

    python benchmarks/prepare_registration.py [--seed 3] [--dipy-iterations 10,10,0] [--phantom-cache FILE.npz]

Times are CPU seconds of this process (``time.process_time``), which on a free core equal the wall time and stay
meaningful on a machine shared with other jobs; the wall time is printed beside them.
"""

from __future__ import annotations

import os

for _name in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402 - the thread settings must come first
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from common.nifti import MD_MAX_MM2_PER_S  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

FIELDS = ("dwi", "affine", "bvals", "bvecs", "fa", "md", "brain")
LANDMARKS = ("putamen_L", "putamen_R", "thalamus_L", "thalamus_R", "caudate_L", "caudate_R")


def _centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask > 0.5).mean(0) + affine[:3, 3]


def _accuracy(warped_mask: np.ndarray, warped_landmarks: np.ndarray, atlas) -> tuple[float, float, float]:
    from common.prepare.registration import dice

    errors = [np.linalg.norm(_centroid_mm(w, atlas.affine) - _centroid_mm(atlas.mask(n), atlas.affine))
              for n, w in zip(LANDMARKS, warped_landmarks)]
    return dice(warped_mask > 0.5, atlas.brain > 0.5), float(np.mean(errors)), float(np.max(errors))


def _now() -> float:
    return time.process_time()


def _phantom(seed: int, cache: Path | None, make):
    """The phantom of ``seed``, from ``cache`` when it holds it (a SimpleNamespace with the same fields)."""
    from types import SimpleNamespace

    from prepare_phantoms import random_motion

    if cache is not None and cache.is_file():
        z = np.load(cache)
        if int(z["seed"]) == seed and "fa" in z:
            return SimpleNamespace(**{k: z[k] for k in FIELDS}, motion=random_motion(seed))
    phantom = make(seed=seed)
    if cache is not None:
        np.savez(cache, seed=seed, **{k: getattr(phantom, k) for k in FIELDS})
    return phantom


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--dipy-iterations", default="10,10,0",
                        help="dipy SyN iterations per level (shrink 4, 2, 1); the default stops at half resolution, "
                             "as the ANTs default (40, 20, 0) does")
    parser.add_argument("--phantom-cache", type=Path, default=None, help="keep the phantom here between runs")
    parser.add_argument("--only", choices=("ants", "dipy"), default=None, help="run one method only")
    args = parser.parse_args(argv)

    from prepare_phantoms import dwi_phantom, to_native

    from common.atlases import load_atlas
    from common.prepare import dti, registration

    atlas = load_atlas("spm1p5")
    start = _now()
    phantom = _phantom(args.seed, args.phantom_cache, dwi_phantom)
    print(f"phantom: {phantom.dwi.shape} DWI at 2 mm, ready in {_now() - start:.0f} s")
    shape = phantom.dwi.shape[:3]
    landmarks_native = to_native(np.stack([atlas.mask(n).astype(np.float32) for n in LANDMARKS]), atlas.affine,
                                 phantom.motion, shape, phantom.affine)

    # where one subject's time goes (the registration step is ANTs's, timed below)
    timings = {}
    t = _now()
    mean_b0 = phantom.dwi[..., phantom.bvals <= dti.B0_THRESHOLD].mean(-1)
    mask = dti.brain_mask(mean_b0)
    timings["brain mask (median_otsu)"] = _now() - t
    t = _now()
    fa, md = dti.fit_tensor(phantom.dwi, phantom.bvals, phantom.bvecs, mask)
    timings[f"tensor fit (WLS, {int(mask.sum())} voxels x {len(phantom.bvals)})"] = _now() - t
    t = _now()
    fixed = registration.template(2.0)
    timings["template load (once per process)"] = _now() - t
    results = {}
    if args.only in (None, "ants"):
        results["ANTsPy SyN (rigid+affine+SyN, Mattes MI)"] = _ants(registration, mean_b0 * mask, mask, fa, md,
                                                                     fixed, phantom, landmarks_native, atlas, timings)
    if args.only in (None, "dipy"):
        iterations = [int(x) for x in args.dipy_iterations.split(",")]
        results[f"dipy SyN (MI affine + CC SyN, {iterations})"] = _dipy(registration, mean_b0 * mask, mask, fixed,
                                                                        phantom, landmarks_native, atlas, iterations)

    print("\nregistration of the masked mean b=0 to the 2 mm ICBM152 template, one thread:")
    print(f"  {'method':<48} {'CPU s':>6} {'wall s':>7} {'brain Dice':>10} {'landmark mean mm':>17} {'max mm':>7}")
    for name, (cpu, wall, d, mean_err, max_err) in results.items():
        print(f"  {name:<48} {cpu:>6.1f} {wall:>7.1f} {d:>10.3f} {mean_err:>17.2f} {max_err:>7.2f}")
    print("\nwhere one subject's time goes (CPU s):")
    for name, seconds in timings.items():
        print(f"  {name:<48} {seconds:>7.1f}")
    return 0


def _ants(registration, moving, mask, fa, md, fixed, phantom, landmarks_native, atlas, timings):
    with tempfile.TemporaryDirectory() as tmp:
        t, wall = _now(), time.perf_counter()
        transforms = registration.register(registration.from_array(moving, phantom.affine), fixed, "SyN", workdir=tmp)
        cpu, wall = _now() - t, time.perf_counter() - wall
        timings["registration (ANTsPy SyN)"] = cpu
        t = _now()
        warped_mask = registration.to_grid(registration.from_array(mask.astype(np.float32), phantom.affine),
                                           transforms, "spm1p5")
        fa_grid, md_grid = (registration.to_grid(registration.from_array(v, phantom.affine), transforms, "spm1p5")
                            for v in (fa, md / MD_MAX_MM2_PER_S))
        timings["resampling FA, MD, mask onto spm1p5"] = _now() - t
        _print_recovery(fa_grid * (warped_mask > 0.5), md_grid * (warped_mask > 0.5), phantom)
        warped = [registration.to_grid(registration.from_array(m, phantom.affine), transforms, "spm1p5")
                  for m in landmarks_native]
    return (cpu, wall, *_accuracy(warped_mask, warped, atlas))


def _print_recovery(fa, md, phantom) -> None:
    """FA / MD errors against the truth inside the brain eroded by 6 mm, as tests/test_prepare_dti.py measures them."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(phantom.brain, iterations=4)
    fa_err, md_err = np.abs(np.clip(fa, 0, 1) - phantom.fa)[inner], np.abs(np.clip(md, 0, 1) - phantom.md)[inner]
    print(f"recovery (ANTsPy, brain eroded by 6 mm): |FA error| median {np.median(fa_err):.3f} "
          f"(90th percentile {np.percentile(fa_err, 90):.3f}), FA correlation "
          f"{np.corrcoef(fa[inner], phantom.fa[inner])[0, 1]:.3f}; |MD error| (scaled) median {np.median(md_err):.3f} "
          f"({np.median(md_err) * MD_MAX_MM2_PER_S:.2e} mm^2/s; 90th percentile {np.percentile(md_err, 90):.3f})")


def _dipy(registration, moving, mask, fixed, phantom, landmarks_native, atlas, iterations):
    from dipy.align import affine_registration
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric

    static = fixed.numpy()
    static_affine = registration.to_nibabel_affine(fixed)
    t, wall = _now(), time.perf_counter()
    _, affine = affine_registration(moving, static, moving_affine=phantom.affine, static_affine=static_affine,
                                    pipeline=["center_of_mass", "translation", "rigid", "affine"],
                                    level_iters=[100, 30, 0], sigmas=[3.0, 1.0, 0.0], factors=[4, 2, 1])
    syn = SymmetricDiffeomorphicRegistration(CCMetric(3), level_iters=iterations)
    mapping = syn.optimize(static, moving, static_grid2world=static_affine, moving_grid2world=phantom.affine,
                           prealign=affine)
    cpu, wall = _now() - t, time.perf_counter() - wall
    grid = atlas.grid

    def warp(volume):
        return mapping.transform(volume, image_world2grid=np.linalg.inv(phantom.affine), out_shape=grid.shape,
                                 out_grid2world=grid.affine)

    return (cpu, wall, *_accuracy(warp(mask.astype(np.float32)), [warp(m) for m in landmarks_native], atlas))


if __name__ == "__main__":
    raise SystemExit(main())
