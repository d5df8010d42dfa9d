#!/usr/bin/env bash
# Set up, then run the test suite (extra arguments go to pytest, e.g. scripts/test.sh -x tests/io).
# Viewer tests need a display: uses Xvfb (installed with apt when running as root without DISPLAY),
# else falls back to QT_QPA_PLATFORM=offscreen (drawing/screenshot tests then skip or fail).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
source "${VENV:-.venv}/bin/activate"

XVFB_PACKAGES=(xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
    libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-image0 libxcb-render-util0)
if [ -z "${DISPLAY:-}" ] && ! command -v xvfb-run >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing Xvfb packages"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${XVFB_PACKAGES[@]}" >/dev/null) \
            || echo "test.sh: could not install Xvfb; using QT_QPA_PLATFORM=offscreen" >&2
    else
        echo "test.sh: no DISPLAY and no xvfb-run (not root or no apt); using QT_QPA_PLATFORM=offscreen" >&2
    fi
fi

run_pytest() {
    if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
        xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest -q "$@"
    elif [ -z "${DISPLAY:-}" ]; then
        QT_QPA_PLATFORM=offscreen python -m pytest -q "$@"
    else
        python -m pytest -q "$@"
    fi
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
