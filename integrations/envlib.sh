# Sourced by integrations/*/setup_env.sh. One virtual environment per set of requirements, built once and
# reused: its folder name carries a hash of the requirements files and the interpreter, so a change to either
# builds a new one and CI runs on the same machine reuse the last one. A build that stops half-way leaves no
# marker and is redone; concurrent builds (test workers, a user) wait on a lock instead of racing.
#
# Root: $BRAIN_ANOMALY_ENVS, else ~/.cache/brain-anomaly-bundles/envs. It is not $BRAIN_ANOMALY_CACHE on purpose:
# the tests point that at a per-checkout folder, which would rebuild the environments on every clean clone.

envs_root() {
    echo "${BRAIN_ANOMALY_ENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/brain-anomaly-bundles/envs}"
}

# env_dir NAME SYSTEM_SITE REQUIREMENTS [NODEPS_REQUIREMENTS]: the environment's folder (nothing is built).
env_dir() {
    local name=$1 system_site=$2 py key
    shift 2
    py=$(command -v "${PYTHON:-python3}") || { echo "error: no python interpreter (${PYTHON:-python3})" >&2; return 1; }
    # the interpreter itself, not the name it was found by (a pyenv shim and its target are one interpreter)
    key=$( { "$py" -c 'import os, sys; print(sys.version, os.path.realpath(sys.executable), sys.prefix)';
             echo "system_site=$system_site"; cat "$@"; } | sha256sum | cut -c1-12)
    echo "$(envs_root)/$name-$key"
}

# make_env NAME SYSTEM_SITE REQUIREMENTS [NODEPS_REQUIREMENTS]: build the environment unless it is complete;
# print its python. SYSTEM_SITE=1 lets it see the interpreter's packages (torch, monai, this project).
# NODEPS_REQUIREMENTS are installed first, into the environment itself (even when the interpreter has them),
# without dependencies.
make_env() {
    local name=$1 system_site=$2 req=$3 nodeps=${4:-} dir py start
    dir=$(env_dir "$@") || return 1
    py=$(command -v "${PYTHON:-python3}")
    mkdir -p "$(envs_root)"
    (
        flock 9
        if [[ -f "$dir/.complete" ]]; then
            echo "reusing $dir" >&2
            exit 0
        fi
        start=$SECONDS
        echo "building $dir (once; later runs reuse it)" >&2
        # (errexit does not reach into a subshell on the left of ||: every step checks itself)
        rm -rf "$dir" || exit 1
        if [[ $system_site == 1 ]]; then
            "$py" -m venv --system-site-packages "$dir" || exit 1
        else
            "$py" -m venv "$dir" || exit 1
        fi
        if [[ -n $nodeps ]]; then
            "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --ignore-installed \
                -r "$nodeps" >&2 || exit 1
        fi
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2 || exit 1
        "$dir/bin/python" -c 'import sys' >/dev/null 2>&1  # one start-up runs the packages' first-import hooks
        echo "built in $((SECONDS - start)) s" >&2
        touch "$dir/.complete"
    ) 9>"$dir.lock" || { echo "error: building $dir failed (see pip's messages above)" >&2; return 1; }
    echo "$dir/bin/python"
}
