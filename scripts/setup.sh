#!/usr/bin/env bash
# Create .venv (Python 3.11) and install napari-cellularity with the tested torch pair.
# Idempotent: skips pip when .venv/.setup-stamp matches the hash of pyproject.toml + constraints.txt.
# Env: PYTHON (interpreter to create the venv with, default python3.11), VENV (default .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"
STAMP="$VENV/.setup-stamp"

if [ ! -x "$VENV/bin/python" ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "setup.sh: $PYTHON not found; install Python 3.11 (e.g. apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    echo "setup.sh: creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi

want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && "$VENV/bin/python" -c "import napari_cellularity, torch, napari" >/dev/null 2>&1; then
    echo "setup.sh: $VENV is up to date"
    exit 0
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
"${PIP[@]}" install -q -c constraints.txt -e ".[qt,testing]"
echo "$want" > "$STAMP"
echo "setup.sh: done ($("$VENV/bin/python" -c 'import napari_cellularity as m; print("napari-cellularity", m.__version__)'))"
