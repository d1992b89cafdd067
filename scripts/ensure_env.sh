#!/usr/bin/env bash
# Create or refresh the cached virtual environment for this checkout.
#
# The environment lives outside the clone (default ~/.cache/avel/venv, override with
# AVEL_VENV) so the ~8 GB torch stack is downloaded once per machine. It is refreshed when
# requirements.lock, pyproject.toml or setup.py change, or when a different checkout uses it
# (the editable install then points at the new checkout). Prints the venv path.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${AVEL_VENV:-$HOME/.cache/avel/venv}"
python="${PYTHON:-python3}"
mkdir -p "$(dirname "$venv")"

want="$(cat "$repo/requirements.lock" "$repo/pyproject.toml" "$repo/setup.py" | sha256sum | cut -c1-16) $repo"

exec 9>"$venv.lock"
flock 9

if [[ -f "$venv/.avel-stamp" && "$(cat "$venv/.avel-stamp")" == "$want" ]]; then
    echo "$venv"
    exit 0
fi

quiet_pip() {
    # pip, with its output shown only when it fails (the local index mirrors print one
    # harmless "is ignored" line per package).
    local log
    log="$(mktemp)"
    if ! "$venv/bin/python" -m pip "$@" >"$log" 2>&1; then
        grep -v "is ignored: it is neither" "$log" >&2 || true
        rm -f "$log"
        echo "pip $* failed" >&2
        exit 1
    fi
    rm -f "$log"
}

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating environment in $venv (first run downloads the torch stack, a few minutes)" >&2
    "$python" -m venv "$venv"
    quiet_pip install --quiet --upgrade "pip>=24"
fi

deps_hash="$(sha256sum "$repo/requirements.lock" | cut -c1-16)"
if [[ ! -f "$venv/.avel-deps" || "$(cat "$venv/.avel-deps")" != "$deps_hash" ]]; then
    echo "installing locked dependencies into $venv" >&2
    quiet_pip install --quiet -r "$repo/requirements.lock"
    echo "$deps_hash" > "$venv/.avel-deps"
fi

quiet_pip install --quiet --no-deps -e "$repo"
"$venv/bin/python" -c "import avel.datasets, avel.extractors, avel.models, avel.pipeline, avel.cli" >&2
echo "$want" > "$venv/.avel-stamp"
echo "$venv"
