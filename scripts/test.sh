#!/usr/bin/env bash
# Set up, then run the test suite (extra arguments go to pytest, e.g. scripts/test.sh -x tests/io).
# No display needed: viewer tests run with QT_QPA_PLATFORM=offscreen and never draw.
# Screenshots (docs/make_screenshots.py) need Xvfb; see README.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
source "${VENV:-.venv}/bin/activate"

run_pytest() {
    # Tests never draw: Qt runs offscreen (tests/conftest.py patches vispy's two GL queries).
    QT_QPA_PLATFORM=offscreen python -m pytest -q "$@"
}

set +e
run_pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; treating as failure" >&2
    exit 1
fi
exit "$status"
