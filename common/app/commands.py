"""The commands of ``python -m common <command> --help`` (the application layer's entry point).

Commands:
  atlas     build (or check) the cached atlases of a grid:      python -m common atlas --grid spm1p5
  synth     write a synthetic cohort (pd: DTI FA/MD, pet: FDG):  python -m common synth pd --out DIR
  validate  check a dataset.json and every image it names:      python -m common validate DIR/dataset.json
  splits    write the seeded control train/test splits:         python -m common splits DIR/dataset.json
  experiment  train + evaluate a bundle over splits:            python -m common experiment pd --bundle pd_ae
              (ad_vae3d + the PET simulation-based evaluation:     python -m common experiment pet --epochs 5)
  benchmark   detection ladder, every model beside the baseline: python -m common benchmark detection --quick
  prepare   BIDS DWI / FDG PET onto the bundles' grids:         python -m common prepare dti BIDS_DIR --out DIR
  demo      the README's main job on the embedded synthetic data: python -m common demo
  release   reproducible, self-contained bundle zips:             python -m common release --out dist

Adding a command: a function (or a class whose methods are subcommands) in :func:`_commands` with an ``Args:``
line per parameter; :mod:`common.app.cli` turns the signature into flags, help and checks (ranges by flag name in
``common.settings.RANGES``). Keep heavy imports (torch, MONAI, nibabel) inside the function body so ``--help`` stays
fast. Global flags: ``-h``/``--help`` anywhere, ``--debug`` for the full traceback on an error.
"""

from __future__ import annotations


def _commands() -> dict:
    # Imports stay inside so that `--help` and one command do not pay for every other command's imports.
    def atlas(grid: str = "all", rebuild: bool = False, quiet: bool = False):
        """Build the atlases of a grid into the cache (or check the cached ones); print ROI voxel counts.

        Args:
            grid: 'spm1p5', 'clinicadl2' or 'all'
            rebuild: build again even when a cached atlas passes its checks
            quiet: print one line per grid instead of the ROI table
        """
        from common.errors import SettingsError
        from common.grids import GRIDS

        if grid != "all" and grid not in GRIDS:
            raise SettingsError("--grid", f"unknown grid {grid!r}; expected one of: all, {', '.join(GRIDS)}")
        from common.app.atlas_commands import atlas_command

        return atlas_command(grid=grid, rebuild=rebuild, quiet=quiet)

    def validate(dataset_json: str, check_data: bool = True):
        """Check a dataset.json and every image it names (grid, dims, finite values, ranges); exit 2 on errors.

        Args:
            dataset_json: the dataset.json to check
            check_data: also read every voxel (finite values, plausible ranges); false checks headers only
        """
        from common.app.data_commands import validate_command

        return validate_command(dataset_json, check_data=check_data)

    def splits(dataset_json: str, out: str | None = None, n_splits: int = 10, n_test: int | None = None,
               n_val: int = 0, seed: int = 0, n_calib: int = 0):
        """Write age/sex-balanced train/val/test splits of the controls (patients in every test set).

        Args:
            dataset_json: the cohort's dataset.json
            out: the splits file to write (None: splits.json next to the dataset.json)
            n_splits: number of seeded splits
            n_test: controls per test set (None: the protocol's default for the cohort size)
            n_val: controls per validation set, taken from the training controls
            seed: random seed of the splits
            n_calib: calibration controls per split, held out of training (for thresholds)
        """
        from common.app.data_commands import splits_command

        return splits_command(dataset_json, out=out, n_splits=n_splits, n_test=n_test, n_val=n_val, seed=seed,
                              n_calib=n_calib)

    def demo(out: str = "outputs/demo", seed: int = 0, pd_controls: int = 20, pd_patients: int = 20,
             pet_controls: int = 20, pet_patients: int = 10, train: bool = True, pd_ae_epochs: int = 30,
             pd_sae_epochs: int = 10, pd_sae_pairs: int = 45_000):
        """The README's main job: atlases, demo cohorts, the three bundles trained and evaluated, one HTML report.

        pd_ae, pd_sae and ad_vae3d on short CPU schedules, AE vs SAE, figures and OUT/report.html.

        Args:
            out: output folder (cohorts, runs, figures, report.html)
            seed: random seed of the cohorts, splits and training
            pd_controls: controls of the PD cohort
            pd_patients: patients of the PD cohort
            pet_controls: cognitively normal subjects of the PET cohort
            pet_patients: AD patients of the PET cohort
            train: train and evaluate the bundles (false: cohorts and figures only)
            pd_ae_epochs: pd_ae training epochs
            pd_sae_epochs: pd_sae training epochs
            pd_sae_pairs: pd_sae patch pairs per epoch
        """
        from common.app.demo import run_demo

        run_demo(out=out, seed=seed, pd_controls=pd_controls, pd_patients=pd_patients, pet_controls=pet_controls,
                 pet_patients=pet_patients, train=train, pd_ae_epochs=pd_ae_epochs, pd_sae_epochs=pd_sae_epochs,
                 pd_sae_pairs=pd_sae_pairs)

    class SynthCommands:
        """Write a synthetic cohort (deterministic for a seed); an existing identical cohort is reused."""

        def pd(self, out: str = "outputs/cohorts/pd", n_controls: int = 20, n_patients: int = 20, seed: int = 0,
               effect_size: float = 0.05, heterogeneity: float = 0.0, paper_size: bool = False,
               overwrite: bool = False, progress: bool = True, locations: str = "mixed",
               nuclei: str = "sn,putamen,gpi,stn", fixed_change: bool = False):
            """PD DTI cohort: FA and MD maps on the 1.5 mm grid, patients with white-matter changes.

            Args:
                out: output folder (NIfTI files + dataset.json)
                n_controls: number of healthy controls
                n_patients: number of PD patients
                seed: random seed (the same seed gives the same files)
                effect_size: mean relative FA/MD change in the patients' lesions (0.05: 5 %)
                heterogeneity: patchiness of the patients' changes at the voxel scale (0: smooth)
                paper_size: the paper's 56 controls / 129 patients (overrides the counts)
                overwrite: replace an existing cohort made with other settings
                progress: show a progress bar
                locations: where patients' changes go: mixed (white-matter blobs and nuclei), nuclei or white_matter
                nuclei: comma-separated nuclei that may change (e.g. putamen: one deep nucleus)
                fixed_change: every patient changes by exactly effect_size, both sides of each affected nucleus
            """
            from common.app.synth_commands import synth_pd

            synth_pd(out, n_controls, n_patients, seed, effect_size, heterogeneity, paper_size, overwrite, progress,
                     locations, nuclei, fixed_change)

        def pet(self, out: str = "outputs/cohorts/pet", n_controls: int = 20, n_patients: int = 10, seed: int = 0,
                degree_min: float = 15.0, degree_max: float = 35.0, paper_size: bool = False,
                overwrite: bool = False, progress: bool = True):
            """FDG PET cohort: SUVR images on the 2 mm grid, AD patients with simulated hypometabolism.

            Args:
                out: output folder (NIfTI files + dataset.json)
                n_controls: number of cognitively normal subjects
                n_patients: number of AD patients
                seed: random seed (the same seed gives the same files)
                degree_min: lowest hypometabolism of a patient, in percent
                degree_max: highest hypometabolism of a patient, in percent
                paper_size: the paper's cohort size (overrides the counts)
                overwrite: replace an existing cohort made with other settings
                progress: show a progress bar
            """
            if degree_min > degree_max:
                from common.errors import SettingsError

                raise SettingsError("--degree_min", f"{degree_min:g} is above --degree_max {degree_max:g}")
            from common.app.synth_commands import synth_pet

            synth_pet(out, n_controls, n_patients, seed, degree_min, degree_max, paper_size, overwrite, progress)

    class ExperimentCommands:
        """Train and evaluate a bundle over seeded control splits, then aggregate (the papers' protocols)."""

        def pd(self, bundle: str = "pd_ae", dataset_dir: str | None = None, out: str | None = None,
               splits: int | None = None, seed: int = 0, n_val: int | None = None, epochs: int | None = None,
               progress: bool = True, n_calib: int | None = None, reference_pool: str | None = None,
               scoring: str | None = None, overwrite: bool = False, paper: bool = False, exact_split: bool = False,
               pairs_per_epoch: int | None = None):
            """PD protocol: per split train a bundle, evaluate per ROI; mean +- sd over splits. Resumable.

            A killed run resumes: finished splits are reused when their data and settings are unchanged, else
            refused (--overwrite true recomputes them from scratch). --paper true runs the paper's protocol at its
            size (56 controls / 129 patients, 10 splits, 15 test controls, the paper's epochs); --splits or
            --epochs with it run a reduced scale, labelled in OUT/protocol.json.

            Args:
                bundle: pd_ae, pd_sae or normative (the voxel-wise z-score baseline, fitted instead of trained)
                dataset_dir: folder of the cohort's dataset.json (None: the embedded synthetic PD cohort, or the
                    paper-size one with --paper)
                out: output folder (None: outputs/experiments/BUNDLE)
                splits: number of seeded control splits to train and evaluate (None: 10)
                seed: random seed of the splits and the training
                n_val: validation controls per split (None: 3)
                epochs: training epochs (None: the bundle's schedule, the paper's)
                progress: show progress bars
                n_calib: calibration controls per split (never trained on) that set the thresholds (None: 4; 6
                    with --paper)
                reference_pool: controls whose errors set the thresholds: calib (default), or train (the paper's)
                scoring: zscore (error maps standardised against the controls' errors) or raw (None: the bundle's)
                overwrite: recompute splits made from other data or settings instead of refusing
                paper: the paper's protocol at its size (paper-size synthetic cohort unless --dataset_dir)
                exact_split: with --paper, the paper's exact 41 train / 15 test split: no validation or
                    calibration controls, thresholds from the training controls
                pairs_per_epoch: pd_sae's training pairs per epoch (None: the bundle's, the paper's 300,000)
            """
            from common.errors import SettingsError

            for flag, value, allowed in (("--bundle", bundle, ("pd_ae", "pd_sae", "normative")),
                                         ("--reference_pool", reference_pool, (None, "calib", "train")),
                                         ("--scoring", scoring, (None, "zscore", "raw"))):
                if value not in allowed:
                    raise SettingsError(flag, f"expected one of {', '.join(map(str, allowed))}, got {value!r}")
            if pairs_per_epoch is not None and bundle != "pd_sae":
                raise SettingsError("--pairs_per_epoch", f"is pd_sae's setting; --bundle is {bundle}")
            from common.app.experiment import run_pd_experiment

            run_pd_experiment(bundle=bundle, dataset_dir=dataset_dir, out=out, splits=splits, seed=seed,
                              n_val=n_val, epochs=epochs, progress=progress, n_calib=n_calib,
                              reference_pool=reference_pool, scoring=scoring, overwrite=overwrite, paper=paper,
                              exact_split=exact_split,
                              overrides={"pairs_per_epoch": int(pairs_per_epoch)} if pairs_per_epoch else None)

        def pet(self, dataset_dir: str | None = None, out: str | None = None, split: int = 0, seed: int = 0,
                n_val: int = 3, epochs: int | None = None, learning_rate: float | None = None,
                batch_size: int | None = None, short_schedule: bool = False, progress: bool = True,
                overwrite: bool = False, paper: bool = False):
            """AD protocol: train ad_vae3d on one split, then the simulation-based evaluation. Resumable.

            Degree sweep, six dementias, CN vs AD and voxel detection under OUT/split_XX/eval. --paper true runs
            the paper's protocol at its size (301 CN / 311 AD, a 237/34/30 control split, 300 epochs); --epochs
            or --short_schedule with it run a reduced scale, labelled in OUT/protocol.json.

            Args:
                dataset_dir: folder of the cohort's dataset.json (None: the embedded synthetic PET cohort)
                out: output folder (None: outputs/experiments/ad_vae3d)
                split: index of the control split to train on
                seed: random seed of the splits and the training
                n_val: validation controls of the split
                epochs: training epochs (None: the schedule's)
                learning_rate: learning rate (None: the schedule's)
                batch_size: batch size (None: the schedule's)
                short_schedule: the bundle's few-minute CPU recipe instead of the paper's schedule
                progress: show progress bars
                overwrite: recompute a split made from other data or settings instead of refusing
                paper: the paper's protocol at its size (paper-size synthetic cohort unless --dataset_dir)
            """
            from common.app.experiment import run_pet_experiment, short_schedule_overrides

            overrides = short_schedule_overrides() if short_schedule else {}  # ad_vae3d's configs/train_short.json
            for key, value in (("epochs", epochs), ("learning_rate", learning_rate)):
                if value is not None:
                    overrides.pop(key, None)  # the explicit argument wins over the recipe
            if batch_size is not None:
                overrides["batch_size"] = int(batch_size)
            run_pet_experiment(dataset_dir=dataset_dir, out=out, split=split, seed=seed, n_val=n_val, epochs=epochs,
                               learning_rate=learning_rate, progress=progress, overrides=overrides or None,
                               overwrite=overwrite, paper=paper)

        def compare(self, runs: str = "outputs/experiments/pd_ae,outputs/experiments/pd_sae",
                    out: str = "outputs/experiments/compare"):
            """Models side by side per ROI: a table and a paper Fig. 4 style figure.

            Args:
                runs: comma-separated experiment folders written by `experiment pd`
                out: output folder of the table and figure
            """
            from common.app.experiment import compare_experiments

            compare_experiments(runs, out)

        def reproduction(self, pd_runs: str | None = None, pet_run: str | None = None,
                         out: str = "outputs/experiments/reproduction.md", hardware: str = "2-core CPU"):
            """The papers' tables beside this project's, from finished `experiment pd` / `experiment pet` runs.

            Protocol and scale of each run, measured and extrapolated paper-size times, PD g-mean / AUC over splits
            with the paper's, models compared split by split (paired tests), the PET evaluation with the paper's.

            Args:
                pd_runs: comma-separated MODEL=FOLDER of `experiment pd` runs, e.g.
                    pd_ae=outputs/experiments/pd_ae,normative=outputs/experiments/normative
                pet_run: folder of an `experiment pet` run
                out: the markdown file to write
                hardware: the machine the runs ran on, as the report should name it
            """
            from common.errors import SettingsError

            runs = {}
            for item in [x for x in str(pd_runs or "").split(",") if x.strip()]:
                name, sep, folder = item.partition("=")
                if not sep or not name.strip() or not folder.strip():
                    raise SettingsError("--pd_runs", f"expected MODEL=FOLDER items, got {item!r}")
                runs[name.strip()] = folder.strip()
            if not runs and pet_run is None:
                raise SettingsError("--pd_runs", "name at least one run (--pd_runs or --pet_run)")
            from common.app.reproduction import write_reproduction_report

            write_reproduction_report(out, runs, pet_run, hardware)

    class BenchmarkCommands:
        """Benchmarks of what the models detect, each beside the voxel-wise z-score baseline."""

        def detection(self, out: str = "outputs/benchmark/detection", quick: bool = False, seeds: str | None = None,
                      models: str | None = None, progress: bool = True):
            """Effect-size ladder on synthetic PD cohorts: every model and the baseline, per effect size.

            2.5-20 % changes, smooth and patchy, deep nuclei or white matter; each model trained once per seed and
            evaluated per rung; writes OUT/detection.csv, mde.csv, detection.md and figures.

            Args:
                out: output folder
                quick: one seed, 3 effect sizes, short schedules (minutes)
                seeds: comma-separated seeds (None: the ladder's)
                models: comma-separated models, e.g. pd_ae,normative (None: pd_ae, pd_sae and normative)
                progress: show progress bars
            """
            from common.errors import SettingsError

            seed_list = None
            if seeds is not None:
                try:
                    seed_list = tuple(int(x) for x in str(seeds).split(",") if str(x).strip())
                except ValueError:
                    raise SettingsError("--seeds", f"expected comma-separated integers, got {seeds!r}") from None
                if not seed_list or min(seed_list) < 0:
                    raise SettingsError("--seeds", f"expected comma-separated integers >= 0, got {seeds!r}")
            from common.app.benchmark import LadderSettings, run_detection_benchmark

            overrides = {}
            if seed_list is not None:
                overrides["seeds"] = seed_list
            if models is not None:
                overrides["models"] = tuple(m.strip() for m in str(models).split(",") if m.strip())
            settings = LadderSettings.quick(**overrides) if quick else LadderSettings(**overrides)
            run_detection_benchmark(out, settings, progress=progress)

    class PrepareCommands:
        """BIDS scans onto the bundles' grids, one folder per subject, resumable; writes OUT/dataset.json."""

        def dti(self, bids_dir: str, out: str, workers: int = 1, progress: bool = True,
                default_group: str | None = None, registration_mm: float = 2.0, min_dice: float = 0.85,
                use_t1w: bool = True):
            """DWI -> brain mask, dipy tensor fit (WLS), FA and MD on spm1p5 (MD / 3.5e-3 mm^2/s), QC figure.

            Registration to the ICBM152 template with ANTsPy SyN, through the T1w when there is one. No eddy-current,
            motion or susceptibility-distortion correction (docs/prepare.md).

            Args:
                bids_dir: the BIDS dataset (sub-*/[ses-*/]dwi/*_dwi.nii.gz with .bval and .bvec)
                out: output folder (one folder per subject + dataset.json); done subjects are skipped
                workers: subjects prepared in parallel processes
                progress: show a progress bar
                default_group: group (control or patient) of subjects participants.tsv gives none
                registration_mm: resolution of the template the registration runs at (mm)
                min_dice: brain-mask Dice with the template below which a registration counts as failed
                use_t1w: register through the subject's T1w when present
            """
            from common.app.prepare_commands import prepare_command
            from common.prepare.runner import PrepareOptions

            options = PrepareOptions(registration_mm=registration_mm, min_dice=min_dice, use_t1w=use_t1w)
            prepare_command("dti", bids_dir, out, workers=workers, progress=progress, default_group=default_group,
                            options=options)

        def pet(self, bids_dir: str, out: str, workers: int = 1, progress: bool = True,
                default_group: str | None = None, registration_mm: float = 2.0, min_dice: float = 0.85,
                use_t1w: bool = True):
            """FDG PET -> frame average, registration to the template, SUVR (cerebellum + pons), clinicadl2, QC figure.

            Args:
                bids_dir: the BIDS dataset (sub-*/[ses-*/]pet/*_pet.nii.gz with its .json sidecar)
                out: output folder (one folder per subject + dataset.json); done subjects are skipped
                workers: subjects prepared in parallel processes
                progress: show a progress bar
                default_group: group (control or patient) of subjects participants.tsv gives none
                registration_mm: resolution of the template the registration runs at (mm)
                min_dice: brain-mask Dice with the template below which a registration counts as failed
                use_t1w: register through the subject's T1w when present
            """
            from common.app.prepare_commands import prepare_command
            from common.prepare.runner import PrepareOptions

            options = PrepareOptions(registration_mm=registration_mm, min_dice=min_dice, use_t1w=use_t1w)
            prepare_command("pet", bids_dir, out, workers=workers, progress=progress, default_group=default_group,
                            options=options)

    def release(bundles: str | None = None, out: str = "dist", max_embedded_mb: float = 50.0,
                weights_base_url: str | None = None, bundles_dir: str | None = None, verify: str | None = None,
                sha256: str | None = None):
        """Write one reproducible, self-contained zip per bundle (the same bytes every time).

        OUT/<bundle>_v<version>.zip holds the bundle and a vendored copy of common/.

        Args:
            bundles: comma-separated bundle names (None: every bundle)
            out: output folder of the zips
            max_embedded_mb: weights above this size (MB) go to large_files.json instead of the zip
            weights_base_url: URL prefix of the weights listed in large_files.json
            bundles_dir: folder holding the bundles (None: this repository's bundles/)
            verify: a downloaded zip to check against --sha256 instead of building (prints ok, or exits 2)
            sha256: the expected sha256 (64 hex digits) of the zip given with --verify
        """
        from common.app.release import build_releases, verify_release

        if verify is not None:
            verify_release(verify, sha256)
            print(f"ok: {verify} sha256 {str(sha256).strip().lower()}")
            return

        build_releases(bundles=bundles, out=out, bundles_dir=bundles_dir, max_embedded_mb=max_embedded_mb,
                       weights_base_url=weights_base_url)

    return {"atlas": atlas, "synth": SynthCommands, "validate": validate, "splits": splits,
            "experiment": ExperimentCommands, "benchmark": BenchmarkCommands, "prepare": PrepareCommands, "demo": demo,
            "release": release}


def main(argv: list[str] | None = None):
    """Run the command line on ``argv`` (default ``sys.argv[1:]``): help, or the command with checked flags.
    Bad flags and bad data exit with code 2 after one ``error:`` block."""
    from common.app.cli import run_command_line

    return run_command_line(_commands(), argv)

