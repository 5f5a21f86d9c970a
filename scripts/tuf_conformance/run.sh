#!/usr/bin/env bash
# Runs the public tuf-conformance suite (fetched separately: it is not part of this
# repository) against the offline-bundle adapter, once with aklited's verifier and once with
# python-tuf's, and prints both pass counts side by side. Not part of `make test`.
#
# Usage: scripts/tuf_conformance/run.sh [SUITE_DIR] [PYTEST_ARGS...]
#   SUITE_DIR              a checkout of theupdateframework/tuf-conformance
#                          (default: $TUF_CONFORMANCE_DIR)
#   PYTEST_ARGS            passed to both runs (e.g. -k test_basic)
# Environment:
#   TUF_CONFORMANCE_VENV   the suite's virtualenv (default: SUITE_DIR/env, as its `make dev`);
#                          created and filled from PyPI with the suite's pinned requirements
#                          when it lacks them
#   TUF_CONFORMANCE_OUT    where JUnit XML and logs go (default: a new temporary directory)
#   AKLITED_PYTHON         the interpreter with aklited and tuf (default: this repo's .venv)
#   AKLITED_REV            verify with aklited/ as committed at this revision (e.g. HEAD)
#                          instead of a copy of the working tree's aklited/
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

suite=${TUF_CONFORMANCE_DIR:-}
if [[ $# -gt 0 && $1 != -* ]]; then
    suite=$1
    shift
fi
if [[ -z $suite || ! -d $suite/tuf_conformance ]]; then
    echo "usage: $0 SUITE_DIR [PYTEST_ARGS...]   (or set TUF_CONFORMANCE_DIR)" >&2
    echo "SUITE_DIR is a checkout of github.com/theupdateframework/tuf-conformance" >&2
    exit 2
fi
suite=$(cd "$suite" && pwd)
venv=${TUF_CONFORMANCE_VENV:-$suite/env}
out=${TUF_CONFORMANCE_OUT:-$(mktemp -d -t tuf-conformance-XXXXXX)}
mkdir -p "$out"
aklited_python=${AKLITED_PYTHON:-$repo/.venv/bin/python}

if [[ ! -x $aklited_python ]]; then
    echo "$aklited_python missing: run 'make setup' first" >&2
    exit 2
fi

# The suite moves the client's clock with faketime (expiry tests).
if ! command -v faketime >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "run.sh: installing faketime"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
    else
        echo "faketime is missing: install it (Debian: apt-get install faketime)" >&2
        exit 2
    fi
fi

# The suite's pinned requirements (its pyproject.toml) in its own virtualenv.
if ! "$venv/bin/python" -c "import pytest, tuf, securesystemslib, pytest_jsonreport" 2>/dev/null; then
    echo "run.sh: installing the suite's requirements into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "$suite"
fi

# Which aklited the aklited run measures: a copy taken now, so that edits made to the tree
# while the suite runs (a few minutes) cannot mix two versions into one run.
export AKLITED_SRC=$out/aklited-src
rm -rf "$AKLITED_SRC"
mkdir -p "$AKLITED_SRC"
if [[ -n ${AKLITED_REV:-} ]]; then
    git -C "$repo" archive "$AKLITED_REV" aklited | tar -x -C "$AKLITED_SRC"
    measured="aklited/ at $AKLITED_REV ($(git -C "$repo" rev-parse --short "$AKLITED_REV"))"
else
    cp -a "$repo/aklited" "$AKLITED_SRC/"
    measured="aklited/ working tree at $(git -C "$repo" rev-parse --short HEAD)"
    if [[ -n $(git -C "$repo" status --porcelain -- aklited) ]]; then
        changes=$(git -C "$repo" diff HEAD -- aklited | sha256sum | cut -c1-12)
        measured+=" with uncommitted changes (diff sha256 $changes, copied $(date -u +%FT%TZ))"
    fi
fi
echo "run.sh: measuring $measured"
if ! PYTHONPATH=$AKLITED_SRC "$aklited_python" -c "import aklited.tuf.workflow" 2>"$out/import.log"; then
    echo "run.sh: that aklited does not import (see $out/import.log); try AKLITED_REV=HEAD" >&2
    exit 1
fi

status=0
for backend in aklited python-tuf; do
    echo "run.sh: running the suite with the $backend verifier (log: $out/$backend.log)"
    # --entrypoint=... in one word: a separate path argument would make pytest take this
    # repository's pyproject.toml as its configuration.
    (cd "$suite" && AKLITED_PYTHON=$aklited_python "$venv/bin/pytest" tuf_conformance \
        -p no:cacheprovider -q --rootdir="$suite" \
        --entrypoint="$here/client-$backend" \
        --junitxml="$out/$backend.xml" "$@") >"$out/$backend.log" 2>&1 || true
    if [[ ! -s $out/$backend.xml ]]; then
        echo "run.sh: the $backend run produced no results; see $out/$backend.log" >&2
        status=1
    fi
done
((status == 0)) || exit "$status"

echo
echo "aklited run: $measured" | tee "$out/summary.txt"
"$aklited_python" "$here/summarize.py" --offline "$here/offline_incompatible.txt" \
    aklited="$out/aklited.xml" python-tuf="$out/python-tuf.xml" | tee -a "$out/summary.txt"
echo
echo "run.sh: JUnit XML, logs and summary in $out"
