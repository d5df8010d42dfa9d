"""Keep ``None`` alive under PySide6 6.12.0 on Python 3.11 (a reference-count bug in the binding).

PySide6 / shiboken6 6.12.0 returns ``None`` from every ``void`` Qt method without taking a
reference to it, so each call such as ``label.setText(...)`` or ``QApplication.processEvents()``
lowers ``None``'s reference count by one (measured: -1.000 per call; 6.11.3 on the same Python:
0). On Python 3.12+ ``None`` is immortal (PEP 683) and nothing happens; on 3.11 the count reaches
zero after some 10⁵ calls (about 90,000 references exist once a napari viewer is up) and the
process aborts with ``Fatal Python error: none_dealloc`` — a long napari session, or ~37 widget
tests in one process, dies. The fix is a PySide6 without the bug (``PySide6 != 6.12.0`` on
Python < 3.12); until it is installed, :func:`guard_none_refcount` measures the leak once and, if
present, gives ``None`` a reference count no session can use up (what Python 3.12 does for every
interpreter). Called when the widgets package is imported.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

#: References added to ``None`` when the leak is present: ~10¹² void calls before it matters.
NONE_RESERVE = 1 << 40
_PROBE_CALLS = 64


def none_leak_per_call() -> float:
    """``None`` references lost per ``void`` Qt call with the installed binding (0.0 when fine)."""
    try:
        from qtpy import API_NAME
        from qtpy.QtCore import QObject
    except Exception:  # noqa: BLE001 - no Qt binding: nothing can leak
        return 0.0
    if API_NAME != "PySide6":
        return 0.0
    probe = QObject()
    probe.setObjectName("probe")
    before = sys.getrefcount(None)
    for _ in range(_PROBE_CALLS):
        probe.setObjectName("probe")  # a void method
    return (before - sys.getrefcount(None)) / _PROBE_CALLS


def guard_none_refcount() -> bool:
    """If the Qt binding leaks ``None`` references (and ``None`` is mortal), reserve plenty.

    Returns True when the reserve was added (at most once per process).
    """
    if sys.version_info >= (3, 12) or getattr(guard_none_refcount, "done", False):
        return False
    leak = none_leak_per_call()
    if leak < 0.5:
        return False
    # ob_refcnt is the first field of every object (CPython 3.11 layout); None is a static object,
    # never freed, so a larger count changes nothing but how many bad decrements it survives.
    ctypes.c_ssize_t.from_address(id(None)).value += NONE_RESERVE
    guard_none_refcount.done = True  # type: ignore[attr-defined]
    logger.warning("the Qt binding loses a reference to None on every void call (%.1f per call; PySide6 6.12.0 "
                   "on Python 3.11); reserved %d references so napari does not abort with none_dealloc. "
                   "Install PySide6 != 6.12.0 to fix it properly.", leak, NONE_RESERVE)
    return True
