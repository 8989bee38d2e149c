"""Wall time of the PET simulation-based evaluation, per stage, with the real 3D VAE (random weights: the cost
does not depend on training) on the synthetic PET cohort's test split.

Stages: loading (validated, once), the degree sweep (10 degrees x test controls), the dementia table (6 dementias
at 30 %; its metrics hold the SSIM maps, the costly part), the real patients, then tables + figures + files.
Reconstruction and metric times overlap (metrics run in threads while the next batch is reconstructed): per
stage they are the summed seconds of each, the wall total is printed last. The model's forward time alone is
measured first for reference.

    python benchmarks/pet_evaluation.py [--batch-size 4] [--device cuda] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from common.data import split_subjects
from common.data.synthetic import default_cohort
from common.evaluation.pet import run_pet_evaluation
from common.networks import VAE3d, VAEReconstructor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="metric threads")
    args = parser.parse_args()

    dataset = default_cohort("pet", progress=False)  # the demo cohort (20 CN, 10 AD): 5 test controls in split 0
    test, patients = split_subjects(dataset, "test", 0), split_subjects(dataset, "patients", 0)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = VAEReconstructor(VAE3d()).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())

    x = torch.rand(args.batch_size, 1, 80, 96, 80, device=device)
    with torch.no_grad():
        model(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(3):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    per_image = (time.perf_counter() - start) / (3 * args.batch_size)
    print(f"VAE3d ({n_params / 1e6:.1f} M parameters) on {device}: {1e3 * per_image:.0f} ms per image "
          f"(batch {args.batch_size}, no grad)")

    with tempfile.TemporaryDirectory() as out:
        result = run_pet_evaluation(model, test, patients, out, batch_size=args.batch_size, device=device,
                                    progress=False, num_threads=args.threads, verbose=False)
    t = result["timings"]
    n_sweep = len(test) * len(result["settings"]["degrees"])
    n_dementia = len(test) * len(result["settings"]["dementias"])
    print(f"{len(test)} test controls, {len(patients)} patients: {n_sweep} sweep images, {n_dementia} dementia images"
          f" (one shared with the sweep per subject), {len(patients)} patient images")
    print(f"{'stage':<32}{'reconstruction s':>18}{'metrics s':>12}")
    print(f"{'loading (validated, once)':<32}{t['load_s']:>18.2f}")
    for stage, label in (("sweep", "degree sweep"), ("dementias", "dementia table"), ("patients", "CN vs AD patients")):
        print(f"{label:<32}{t['reconstruction_s'][stage]:>18.2f}{t['metrics_s'][stage]:>12.2f}")
    print(f"{'tables, figures, files':<32}{t['tables_and_files_s']:>18.2f}")
    print(f"{'reconstruction + metrics (wall)':<32}{t['reconstruct_and_metrics_s']:>18.2f}")
    print(f"{'total (wall)':<32}{t['total_s']:>18.2f}")


if __name__ == "__main__":
    main()
