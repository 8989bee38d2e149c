#!/usr/bin/env bash
# The MONAI Deploy environment: a virtual environment with monai-deploy-app-sdk 4.0.0 (holoscan), pydicom and
# highdicom that reuses this project's interpreter packages (torch CPU, monai, nibabel, common), so nothing
# heavy is installed twice. Built once (25 s with a warm pip cache, 40 s without; 0.5 GB), then reused;
# prints its python.
#
#   bash integrations/deploy/setup_env.sh            # build or reuse; last line: the environment's python
#   bash integrations/deploy/setup_env.sh --path     # only print where it is (or would be)
#   bash integrations/deploy/setup_env.sh --dry-run  # which interpreter, which environment, what it sees
#
# PYTHON names the project's interpreter (default: the first of python, python3 that imports torch, as
# sys.executable reports it: a venv, a conda env or the system Python); BRAIN_ANOMALY_ENVS the folder of environments.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../envlib.sh"

args=(deploy 1 "$here/requirements.txt" "$here/requirements-local.txt")
if [[ ${1:-} == --path ]]; then
    echo "$(env_dir "${args[@]}")/bin/python"
elif [[ ${1:-} == --dry-run ]]; then
    describe_env "${args[@]}"
else
    make_env "${args[@]}"
fi
