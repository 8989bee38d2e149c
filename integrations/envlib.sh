# Sourced by integrations/*/setup_env.sh. One virtual environment per set of requirements, built once and
# reused: its folder name carries a hash of the requirements files and the interpreter, so a change to either
# builds a new one and CI runs on the same machine reuse the last one. A build that stops half-way leaves no
# marker and is redone; concurrent builds (test workers, a user) wait on a lock instead of racing.
#
# Root: $BRAIN_ANOMALY_ENVS, else ~/.cache/brain-anomaly-bundles/envs. It is not $BRAIN_ANOMALY_CACHE on purpose:
# the tests point that at a per-checkout folder, which would rebuild the environments on every clean clone.
#
# Interpreter: $PYTHON, else the first of `python`, `python3` on PATH (for an environment that reuses the
# interpreter's packages: the first that imports torch). It is used as `sys.executable` reports it, not through
# a shim, and it may itself be a virtual environment: `python -m venv` bases a new environment on the venv's
# BASE interpreter, so `--system-site-packages` alone would see the base's packages, not the venv's (no torch
# when torch lives in the venv). The new environment therefore also gets a .pth file that adds the venv's
# site-packages (with their own .pth files: editable installs). A conda environment or the system Python is
# its own base: `--system-site-packages` is enough there.

envs_root() {
    echo "${BRAIN_ANOMALY_ENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/brain-anomaly-bundles/envs}"
}

# find_python SYSTEM_SITE: the interpreter's sys.executable (SYSTEM_SITE=1: the first candidate with torch).
find_python() {
    local system_site=$1 candidates cand exe tried=()
    if [[ -n ${PYTHON:-} ]]; then candidates=("$PYTHON"); else candidates=(python python3); fi
    for cand in "${candidates[@]}"; do
        command -v "$cand" >/dev/null 2>&1 || { tried+=("$cand (not found)"); continue; }
        exe=$("$cand" -c 'import sys; print(sys.executable)' 2>/dev/null) \
            || { tried+=("$cand (does not run)"); continue; }
        if [[ $system_site == 1 ]] \
           && ! "$exe" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is None)' 2>/dev/null; then
            tried+=("$exe (no torch)")
            continue
        fi
        echo "$exe"
        return 0
    done
    echo "error: no suitable python: tried ${tried[*]}; activate the project's environment (the one with torch," \
         "monai and this repository installed) or set PYTHON" >&2
    return 1
}

# python_kind PY: "venv" (a virtual environment: prefix differs from base_prefix), "conda" or "system".
python_kind() {
    "$1" -c 'import os, sys
if sys.prefix != sys.base_prefix: print("venv")
elif os.path.isdir(os.path.join(sys.prefix, "conda-meta")): print("conda")
else: print("system")'
}

# env_dir NAME SYSTEM_SITE REQUIREMENTS [NODEPS_REQUIREMENTS]: the environment's folder (nothing is built).
env_dir() {
    local name=$1 system_site=$2 py key
    shift 2
    py=$(find_python "$system_site") || return 1
    # the interpreter itself, not the name it was found by (a pyenv shim and its target are one interpreter)
    key=$( { "$py" -c 'import os, sys; print(sys.version, os.path.realpath(sys.executable), sys.prefix)';
             echo "system_site=$system_site"; [[ $system_site == 1 ]] && echo "parent_site_pth=1"; cat "$@"; } \
           | sha256sum | cut -c1-12)
    echo "$(envs_root)/$name-$key"
}

# parent_site_dirs PY: the site-packages folders of the virtual environment PY runs in, one per line.
parent_site_dirs() {
    "$1" -c 'import site, sys
print("\n".join(p for p in site.getsitepackages() if p.startswith(sys.prefix)))'
}

# describe_env NAME SYSTEM_SITE REQUIREMENTS [NODEPS_REQUIREMENTS]: what make_env would do (nothing is built).
describe_env() {
    local system_site=$2 py kind dir
    py=$(find_python "$system_site") || return 1
    kind=$(python_kind "$py")
    dir=$(env_dir "$@") || return 1
    echo "interpreter: $py ($kind)"
    echo "environment: $dir ($([[ -f $dir/.complete ]] && echo built || echo "not built"))"
    if [[ $system_site == 1 ]]; then
        echo "sees: the interpreter's packages (--system-site-packages)"
        if [[ $kind == venv ]]; then
            echo "sees: the virtual environment's site-packages through a .pth file:"
            parent_site_dirs "$py" | sed 's/^/  /'
        fi
    fi
}

# make_env NAME SYSTEM_SITE REQUIREMENTS [NODEPS_REQUIREMENTS]: build the environment unless it is complete;
# print its python. SYSTEM_SITE=1 lets it see the interpreter's packages (torch, monai, this project).
# NODEPS_REQUIREMENTS are installed first, into the environment itself (even when the interpreter has them),
# without dependencies.
make_env() {
    local name=$1 system_site=$2 req=$3 nodeps=${4:-} dir py start
    py=$(find_python "$system_site") || return 1
    dir=$(env_dir "$@") || return 1
    mkdir -p "$(envs_root)"
    (
        flock 9
        if [[ -f "$dir/.complete" ]]; then
            echo "reusing $dir" >&2
            exit 0
        fi
        start=$SECONDS
        echo "building $dir from $py ($(python_kind "$py"); once, later runs reuse it)" >&2
        # (errexit does not reach into a subshell on the left of ||: every step checks itself)
        rm -rf "$dir" || exit 1
        if [[ $system_site == 1 ]]; then
            "$py" -m venv --system-site-packages "$dir" || exit 1
            if [[ $(python_kind "$py") == venv ]]; then
                # lines starting with "import" run at start-up: addsitedir also reads the venv's own .pth files
                site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || exit 1
                parent_site_dirs "$py" | while read -r parent; do
                    echo "import site; site.addsitedir($("$py" -c 'import sys; print(repr(sys.argv[1]))' "$parent"))"
                done > "$site/_brain_anomaly_parent_env.pth" || exit 1
            fi
            "$dir/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is None)' \
                || { echo "error: $dir does not see torch" >&2; exit 1; }
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
    ) 9>"$dir.lock" || { echo "error: building $dir failed (see the messages above)" >&2; return 1; }
    echo "$dir/bin/python"
}
