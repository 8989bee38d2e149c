"""Command line of the shared library: ``python -m common <command> --help``.

Commands:
  atlas     build (or check) the cached atlases of a grid:      python -m common atlas --grid spm1p5
  synth     write a synthetic cohort (pd: DTI FA/MD, pet: FDG):  python -m common synth pd --out DIR
  validate  check a dataset.json and every image it names:      python -m common validate DIR/dataset.json
  splits    write the seeded control train/test splits:         python -m common splits DIR/dataset.json
  experiment  train + evaluate a bundle over splits:            python -m common experiment pd --bundle pd_ae
              (ad_vae3d + the PET simulation-based evaluation:     python -m common experiment pet --epochs 5)
  benchmark   detection ladder, every model beside the baseline: python -m common benchmark detection --quick
  demo      the README's main job on the embedded synthetic data: python -m common demo
  release   reproducible, self-contained bundle zips:             python -m common release --out dist
"""

from __future__ import annotations

import sys


def _commands() -> dict:
    # Imports stay inside so that `--help` and one command do not pay for every other command's imports.
    def atlas(grid: str = "all", rebuild: bool = False, quiet: bool = False):
        """Build the atlases of GRID ('spm1p5', 'clinicadl2' or 'all') into the cache; print ROI voxel counts."""
        from common.atlases.cli import atlas_command

        return atlas_command(grid=grid, rebuild=rebuild, quiet=quiet)

    def validate(dataset_json: str, check_data: bool = True):
        """Check DATASET_JSON and every image it names (grid, dims, finite values, ranges); exit 2 on errors."""
        from common.data.cli import validate_command

        return validate_command(dataset_json, check_data=check_data)

    def splits(
        dataset_json: str,
        out: str | None = None,
        n_splits: int = 10,
        n_test: int | None = None,
        n_val: int = 0,
        seed: int = 0,
        n_calib: int = 0,
    ):
        """Write N_SPLITS age/sex-balanced train/test splits of the controls (default OUT: next to dataset.json);
        N_VAL validation and N_CALIB calibration controls (held out of training, for thresholds) per split."""
        from common.data.cli import splits_command

        return splits_command(dataset_json, out=out, n_splits=n_splits, n_test=n_test, n_val=n_val, seed=seed,
                              n_calib=n_calib)

    def demo(out: str = "outputs/demo", seed: int = 0, pd_controls: int = 20, pd_patients: int = 20,
             pet_controls: int = 20, pet_patients: int = 10, train: bool = True, pd_ae_epochs: int = 30,
             pd_sae_epochs: int = 10, pd_sae_pairs: int = 45_000):
        """The README's main job: atlases, demo cohorts, pd_ae, pd_sae and ad_vae3d trained and evaluated on short
        CPU schedules, AE vs SAE, figures and one HTML report (OUT/report.html); --train False skips training."""
        from common.demo import run_demo

        run_demo(out=out, seed=seed, pd_controls=pd_controls, pd_patients=pd_patients, pet_controls=pet_controls,
                 pet_patients=pet_patients, train=train, pd_ae_epochs=pd_ae_epochs, pd_sae_epochs=pd_sae_epochs,
                 pd_sae_pairs=pd_sae_pairs)

    class ExperimentCommands:
        """Train and evaluate a bundle over seeded control splits, then aggregate (the papers' protocols)."""

        def pd(self, bundle: str = "pd_ae", dataset_dir: str | None = None, out: str | None = None,
               splits: int = 10, seed: int = 0, n_val: int = 3, epochs: int | None = None, progress: bool = True,
               n_calib: int = 4, reference_pool: str = "calib", scoring: str | None = None,
               overwrite: bool = False):
            """PD protocol: per split train BUNDLE (pd_ae, pd_sae, or normative: the voxel-wise z-score baseline),
            evaluate per ROI; mean +- sd over splits. N_CALIB calibration controls per split set the thresholds
            (--reference_pool train: the paper's pool, the training controls); --scoring zscore|raw: error maps
            standardised against the controls' errors, or raw. A killed run resumes: finished splits are reused when
            their data and settings are unchanged, else refused; --overwrite true recomputes them from scratch."""
            from common.evaluation.experiment import run_pd_experiment

            run_pd_experiment(bundle=bundle, dataset_dir=dataset_dir, out=out, splits=splits, seed=seed,
                              n_val=n_val, epochs=epochs, progress=progress, n_calib=n_calib,
                              reference_pool=reference_pool, scoring=scoring, overwrite=overwrite)

        def pet(self, dataset_dir: str | None = None, out: str | None = None, split: int = 0, seed: int = 0,
                n_val: int = 3, epochs: int | None = None, learning_rate: float | None = None,
                batch_size: int | None = None, short_schedule: bool = False, progress: bool = True,
                overwrite: bool = False):
            """AD paper protocol: train ad_vae3d on SPLIT, then the simulation-based evaluation (degree sweep,
            six dementias, CN vs AD, voxel detection) under OUT/split_XX/eval. A killed run resumes.
            --short_schedule True trains with the bundle's short CPU recipe (minutes; DEMO_VAE_OVERRIDES) instead
            of the paper's schedule; --epochs / --learning_rate / --batch_size still override it. A split made
            from other data or settings is refused; --overwrite True recomputes it from scratch."""
            from common.evaluation.experiment import (
                DEMO_VAE_OVERRIDES,
                run_pet_experiment,
            )

            overrides = dict(DEMO_VAE_OVERRIDES) if short_schedule else {}
            for key, value in (("epochs", epochs), ("learning_rate", learning_rate)):
                if value is not None:
                    overrides.pop(key, None)  # the explicit argument wins over the recipe
            if batch_size is not None:
                overrides["batch_size"] = int(batch_size)
            run_pet_experiment(dataset_dir=dataset_dir, out=out, split=split, seed=seed, n_val=n_val, epochs=epochs,
                               learning_rate=learning_rate, progress=progress, overrides=overrides or None,
                               overwrite=overwrite)

        def compare(self, runs: str = "outputs/experiments/pd_ae,outputs/experiments/pd_sae",
                    out: str = "outputs/experiments/compare"):
            """Models side by side per ROI (table + paper Fig. 4 style figure): RUNS is a comma-separated list
            of experiment folders written by `experiment pd`."""
            from common.evaluation.experiment import compare_experiments

            compare_experiments(runs if isinstance(runs, str) else ",".join(runs), out)

    class BenchmarkCommands:
        """Benchmarks of what the models detect, each beside the voxel-wise z-score baseline."""

        def detection(self, out: str = "outputs/benchmark/detection", quick: bool = False, seeds: str | None = None,
                      models: str | None = None, progress: bool = True):
            """Effect-size ladder on synthetic PD cohorts (2.5-20 %, smooth and patchy, deep nuclei or white
            matter): every model and the baseline trained once per seed and evaluated per rung; writes
            OUT/detection.csv, mde.csv, detection.md and figures. --quick: one seed, 3 effects, short schedules
            (minutes); SEEDS / MODELS: comma-separated overrides (e.g. --models pd_ae,normative)."""
            from common.evaluation.benchmark import LadderSettings, run_detection_benchmark

            overrides = {}
            if seeds is not None:
                overrides["seeds"] = tuple(int(x) for x in str(seeds).split(",") if str(x).strip())
            if models is not None:
                overrides["models"] = tuple(m.strip() for m in str(models).split(",") if m.strip())
            settings = LadderSettings.quick(**overrides) if quick else LadderSettings(**overrides)
            run_detection_benchmark(out, settings, progress=progress)

    def release(bundles: str | None = None, out: str = "dist", max_embedded_mb: float = 50.0,
                weights_base_url: str | None = None, bundles_dir: str | None = None, verify: str | None = None,
                sha256: str | None = None):
        """Write OUT/<bundle>_v<version>.zip per bundle (BUNDLES: comma-separated, default all): the bundle with
        a vendored copy of common/, same bytes every time; weights above MAX_EMBEDDED_MB go to large_files.json.
        --verify ZIP --sha256 HEX checks a downloaded zip instead (prints ok, or exits 2 with both digests)."""
        from common.release import build_releases, verify_release

        if verify is not None:
            verify_release(verify, sha256)
            print(f"ok: {verify} sha256 {str(sha256).strip().lower()}")
            return

        build_releases(bundles=bundles, out=out, bundles_dir=bundles_dir, max_embedded_mb=max_embedded_mb,
                       weights_base_url=weights_base_url)

    from common.data.synthetic.cli import SynthCommands

    return {"atlas": atlas, "synth": SynthCommands, "validate": validate, "splits": splits,
            "experiment": ExperimentCommands, "benchmark": BenchmarkCommands, "demo": demo,
            "release": release}


def main(argv: list[str] | None = None):
    import fire

    from common.errors import InputDataError

    try:
        fire.Fire(_commands(), command=argv, name="common")
    except InputDataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
