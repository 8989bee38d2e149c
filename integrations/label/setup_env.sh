#!/usr/bin/env bash
# The MONAI Label environment: a virtual environment of its own (NOT the project's: monailabel 0.8.5 needs
# numpy < 2) with monailabel 0.8.5, torch 2.13 (the CUDA build, which runs on CPU) and what the bundles' inference
# imports. Built once (about 7 min on 2 cores, 7.5 GB: PyPI's CUDA torch, see requirements.txt), then reused;
# prints its python.
#
#   bash integrations/label/setup_env.sh            # build or reuse; last line: the environment's python
#   bash integrations/label/setup_env.sh --path     # only print where it is (or would be)
#   bash integrations/label/setup_env.sh --dry-run  # which interpreter, which environment, what it sees
#
# PYTHON names the interpreter to base it on (default: python, else python3); BRAIN_ANOMALY_ENVS the folder of
# environments.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../envlib.sh"

args=(label 0 "$here/requirements.txt")
if [[ ${1:-} == --path ]]; then
    echo "$(env_dir "${args[@]}")/bin/python"
elif [[ ${1:-} == --dry-run ]]; then
    describe_env "${args[@]}"
else
    make_env "${args[@]}"
fi
