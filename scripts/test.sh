#!/usr/bin/env bash
# Set up, then run the test suite (extra arguments go to pytest, e.g. scripts/test.sh -x tests/io).
# 1. Everything with Qt offscreen (no display needed; viewer tests never draw there).
# 2. If Xvfb is installed (xvfb-run on PATH) and no pytest arguments were given, the rendering
#    widget tests (tests/widgets/test_rendered_*.py: screenshots of overlays) on a real virtual
#    display (1366x768, Qt's xcb platform), where they run instead of being skipped. Only those:
#    the other widget files already ran in step 1, and under xcb a long widget file can abort
#    natively (seen 2026-12-01: test_retrain.py segfaults on its third viewer, passes alone).
#    CI without Xvfb keeps step 1 only. NC_NO_XVFB=1 skips step 2.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
source "${VENV:-.venv}/bin/activate"

run_pytest() {
    QT_QPA_PLATFORM=offscreen python -m pytest -q "$@"
}

run_pytest_xvfb() {
    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1366x768x24" python -m pytest -q "$@"
}

set +e
if [ "$#" -eq 0 ]; then
    # Widget files run one process each (isolation is cheap). Root cause of the abort that made
    # this necessary ("Fatal Python error: none_dealloc" at about the 37th widget test in one
    # process, 2026-12-01): PySide6/shiboken6 6.12.0 drops a reference to None on every void Qt
    # call (label.setText, processEvents, ...: -1 per call; 6.11.3: 0), and on Python 3.11 None
    # is mortal, so ~90,000 calls after a viewer is up it is freed. napari_cellularity.widgets
    # now reserves references when it measures the leak (widgets/_none_guard.py); with that, all
    # widget files passed in one process (offscreen, and under Xvfb/xcb: 60 passed, incl. the
    # test_retrain.py that used to segfault on its third viewer there). The real fix is
    # PySide6 != 6.12.0 on Python < 3.12 (6.11.3 measured: no leak).
    run_pytest --ignore=tests/widgets
    status=$?
    for f in tests/widgets/test_*.py; do
        [ "$status" -eq 0 ] || break
        run_pytest "$f"
        status=$?
    done
else
    run_pytest "$@"
    status=$?
fi
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; treating as failure" >&2
    exit 1
fi
if [ "$status" -eq 0 ] && [ "$#" -eq 0 ] && [ -z "${NC_NO_XVFB:-}" ]; then
    if command -v xvfb-run >/dev/null 2>&1; then
        echo "test.sh: rendering widget tests on a virtual display (Xvfb 1366x768)"
        set +e
        for f in tests/widgets/test_rendered_*.py; do
            run_pytest_xvfb "$f"
            status=$?
            [ "$status" -eq 0 ] || break
        done
        set -e
    else
        echo "test.sh: xvfb-run not found; rendered widget tests were skipped (offscreen only)"
    fi
fi
exit "$status"
