"""run_generator on a real worker thread: callbacks stay in order when Qt's loop is re-entered;
Triton's LLVM is isolated from an already loaded (GL driver's) libLLVM."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import subprocess
import sys
import textwrap
import time

import pytest

from napari_cellularity.progress import Progress
from napari_cellularity.widgets import _worker


def _records(n):
    for i in range(n):
        time.sleep(0.02)
        yield Progress("step", done=i + 1, total=n)
    return "result"


def test_threaded_callbacks_do_not_nest_when_a_callback_processes_events(qtbot, monkeypatch):
    """napari's progress bar calls processEvents(); later signals must wait for the current one."""
    from qtpy.QtWidgets import QApplication

    monkeypatch.setenv(_worker.ENV_SYNC, "0")
    events: list[str] = []
    finished: list[bool] = []

    def on_yield(record):
        events.append(f"start {record.done}")
        for _ in range(30):  # what napari's QtLabeledProgressBar.setValue does, while the
            time.sleep(0.005)  # worker keeps emitting (few calls: a tight processEvents loop
            QApplication.processEvents()  # crashes PySide6 6.12 on Python 3.11, none_dealloc)
        events.append(f"end {record.done}")

    worker = run = _worker.run_generator(
        lambda: _records(5), on_yield=on_yield, on_return=lambda v: events.append(f"return {v}"),
        on_finish=lambda: finished.append(True), progress_desc="Test",
    )
    assert run is worker
    qtbot.waitUntil(lambda: bool(finished), timeout=10_000)
    expected = [e for i in range(1, 6) for e in (f"start {i}", f"end {i}")] + ["return result"]
    assert events == expected


def test_in_order_runs_queued_callbacks_after_an_exception():
    order = _worker._InOrder()
    seen: list[int] = []

    def boom(_):
        seen.append(0)
        raise ValueError("callback failed")

    wrapped_boom, wrapped_ok = order.wrap(boom), order.wrap(seen.append)
    with pytest.raises(ValueError, match="callback failed"):
        wrapped_boom(None)
    wrapped_ok(1)
    assert seen == [0, 1] and not order.busy


def test_isolate_triton_llvm_is_a_no_op_without_a_loaded_llvm(monkeypatch):
    monkeypatch.setattr(_worker, "_llvm_already_loaded", lambda: False)
    _worker.isolate_triton_llvm.cache_clear()
    try:
        assert _worker.isolate_triton_llvm() is False
    finally:
        _worker.isolate_triton_llvm.cache_clear()


def _libllvm() -> str | None:
    for name in ("LLVM-15", "LLVM-14", "LLVM"):
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


@pytest.mark.skipif(sys.platform != "linux", reason="ELF symbol interposition is Linux-specific")
def test_triton_imports_after_a_global_libllvm_when_isolated():
    """Mesa's GL driver maps libLLVM globally; ``import triton`` then crashed (segfault).

    A subprocess stands in for napari's GL canvas by loading libLLVM with RTLD_GLOBAL.
    """
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (CPU-only torch)")
    lib = _libllvm()
    if lib is None:
        pytest.skip("no shared libLLVM on this machine")
    code = textwrap.dedent(f"""
        import ctypes, os
        ctypes.CDLL({lib!r}, mode=os.RTLD_GLOBAL)
        from napari_cellularity.widgets._worker import isolate_triton_llvm
        assert isolate_triton_llvm() is True
        import triton
        print("imported")
    """)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "imported" in proc.stdout
