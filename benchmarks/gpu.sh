#!/usr/bin/env bash
# The GPU check of issue 12 in one call, inside ~9 minutes (GPU_BUDGET_S, default 540 s):
#   1. installs the wheels carried in .whl/ (benchmarks/gpu_wheels.sh made them), builds the atlases, a paper-size
#      synthetic PD cohort (56 controls, 129 patients) and a PET cohort of 40 CN + 4 AD;
#   2. measures each bundle's training throughput with and without AMP and the data path's efficiency
#      (benchmarks/gpu_throughput.py: throughput.json, throughput.md);
#   3. runs as much of the paper protocols as the time left allows, each under a hard time limit: ad_vae3d's
#      training + simulation-based evaluation, then one --paper PD split of pd_ae and of pd_sae, with the epochs
#      that fit at the measured rates (benchmarks/gpu_protocol.py: protocol.json, protocol.md, the runs' summaries).
# Results (8 files at most, none deeper than the folder) go to $1, else $OUT (the device tool's folder), else
# outputs/gpu; gpu.log holds everything printed.
#
#   here, once:        bash benchmarks/gpu_wheels.sh
#   on the device:     run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
#   where the packages are installed already:   GPU_SKIP_INSTALL=1 bash benchmarks/gpu.sh RESULTS_DIR
#   a dry run of the plumbing on a CPU (small cohorts, quick throughput):
#       GPU_SKIP_INSTALL=1 GPU_DEVICE=cpu GPU_BUDGET_S=300 GPU_PD_SYNTH="--n_controls 20 --n_patients 4" \
#       GPU_PET_SYNTH="--n_controls 8 --n_patients 2" GPU_THROUGHPUT_ARGS=--quick bash benchmarks/gpu.sh /tmp/dry
set -uo pipefail
START=$SECONDS
BUDGET=${GPU_BUDGET_S:-540}
RESULTS=${1:-${OUT:-outputs/gpu}}
WORK=${GPU_WORK:-/tmp/gpu_work}
DEVICE=${GPU_DEVICE:-cuda}
mkdir -p "$RESULTS" "$WORK"
exec > >(tee -a "$RESULTS/gpu.log") 2>&1
left() { echo $((BUDGET - (SECONDS - START))); }
step() { echo "== [$((SECONDS - START)) s] $*"; }

if [ -z "${GPU_SKIP_INSTALL:-}" ]; then
    step "installing the carried wheels"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export BRAIN_ANOMALY_CACHE=${BRAIN_ANOMALY_CACHE:-$WORK/cache}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, monai, ignite, nibabel, nilearn; print('torch', torch.__version__,
'cuda', torch.cuda.is_available(), 'monai', monai.__version__, 'ignite', ignite.__version__,
'nibabel', nibabel.__version__, 'nilearn', nilearn.__version__)" || exit 1

step "atlases"
timeout 150 python3 -m common atlas --grid all --quiet true || exit 1
# the paper-size PD cohort is written one subject after another on one core (minutes): in the background, while
# the GPU measures and trains ad_vae3d on the PET cohort
step "paper-size synthetic PD cohort (in the background)"
timeout $(($(left) - 120)) python3 -m common synth pd --out "$WORK/pd" ${GPU_PD_SYNTH:---paper_size true} \
    --progress false > "$WORK/synth_pd.log" 2>&1 &
PD_SYNTH=$!
step "PET cohort for the throughput figure and the VAE run"
timeout 120 python3 -m common synth pet --out "$WORK/pet" ${GPU_PET_SYNTH:---n_controls 40 --n_patients 4} \
    --progress false || exit 1

step "ad_vae3d training throughput, AMP off and on ($(left) s left)"
timeout $(($(left) / 3)) python3 benchmarks/gpu_throughput.py --device "$DEVICE" --bundles ad_vae3d \
    --pet "$WORK/pet/dataset.json" --out "$RESULTS" ${GPU_THROUGHPUT_ARGS:-} \
    || echo "ad_vae3d throughput: failed"
RUNS="$WORK/runs.jsonl"
: > "$RUNS"
# run_protocol BUNDLE SECONDS FIXED_S EPOCH_ITEMS COMMAND...: the epochs that fit, then the command under a hard limit
run_protocol() {
    local bundle=$1 seconds=$2 fixed=$3 items=$4 epochs rc t0
    shift 4
    if [ "$seconds" -lt 30 ]; then
        printf '{"bundle": "%s", "epochs": 0, "epoch_items": %s, "wall_s": 0, "exit_code": -1}\n' "$bundle" "$items" \
            >> "$RUNS"
        return
    fi
    epochs=$(python3 benchmarks/gpu_protocol.py epochs --throughput "$RESULTS/throughput.json" --bundle "$bundle" \
        --seconds "$seconds" --fixed "$fixed" --epoch-items "$items") || epochs=1
    step "$bundle: $epochs epochs in at most $seconds s"
    t0=$SECONDS
    timeout -k 5 "$seconds" "$@" --epochs "$epochs"
    rc=$?
    printf '{"bundle": "%s", "epochs": %s, "epoch_items": %s, "wall_s": %s, "exit_code": %s}\n' \
        "$bundle" "$epochs" "$items" $((SECONDS - t0)) "$rc" >> "$RUNS"
}
# epoch sizes: the VAE at most 40 volumes, pd_ae at most 41 training controls x 40 slices, pd_sae the paper's
# 300,000 pairs; fixed costs (loading, the evaluation of the split) are guesses the first run will correct
L=$(($(left) - 150)); run_protocol ad_vae3d $((L * 4 / 10)) 90 40 \
    python3 -m common experiment pet --dataset_dir "$WORK/pet" --out "$WORK/exp/ad_vae3d" --progress false

step "waiting for the PD cohort"
wait $PD_SYNTH
rc=$?
cat "$WORK/synth_pd.log"
if [ $rc -eq 0 ]; then
    step "pd_ae and pd_sae training throughput, AMP off and on ($(left) s left)"
    timeout $(($(left) / 3)) python3 benchmarks/gpu_throughput.py --device "$DEVICE" --bundles pd_ae,pd_sae \
        --pd "$WORK/pd/dataset.json" --out "$RESULTS" --append ${GPU_THROUGHPUT_ARGS:-} || echo "PD throughput: failed"
    L=$(($(left) - 20)); run_protocol pd_ae $((L * 4 / 10)) 60 1640 \
        python3 -m common experiment pd --paper true --bundle pd_ae --splits 1 --dataset_dir "$WORK/pd" \
        --out "$WORK/exp/pd_ae" --progress false
    L=$(($(left) - 15)); run_protocol pd_sae "$L" 60 300000 \
        python3 -m common experiment pd --paper true --bundle pd_sae --splits 1 --dataset_dir "$WORK/pd" \
        --out "$WORK/exp/pd_sae" --progress false
else
    echo "the PD cohort was not written in time (exit $rc): no PD figures"
fi

step "results"
python3 benchmarks/gpu_protocol.py report --runs "$RUNS" --out "$RESULTS"
for bundle in pd_ae pd_sae; do
    f="$WORK/exp/$bundle/split_aggregates.json"
    [ -f "$f" ] && cp "$f" "$RESULTS/${bundle}_split_aggregates.json"
done
f="$WORK/exp/ad_vae3d/split_00/eval/split_0/summary.json"
[ -f "$f" ] && cp "$f" "$RESULTS/ad_vae3d_summary.json"
step "done"
ls -l "$RESULTS"
