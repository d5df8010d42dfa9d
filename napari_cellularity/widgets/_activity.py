"""The napari activity-dock progress bar of a background job, fed by progress records, and the ETA.

Used by :func:`._worker.run_generator` (which re-exports these names); the records' ``done`` /
``total`` / ``message`` drive the bar, with the ETA in its description.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..progress import Progress

#: ``NAPARI_CELLULARITY_SYNC=1``: jobs run in the calling thread (tests), see :mod:`._worker`.
ENV_SYNC = "NAPARI_CELLULARITY_SYNC"


def is_sync() -> bool:
    """True when generators must run synchronously (``NAPARI_CELLULARITY_SYNC=1``)."""
    return os.environ.get(ENV_SYNC, "").strip().lower() in ("1", "true", "yes", "on")


def estimate_eta_s(done: int, total: int | None, elapsed_s: float) -> float | None:
    """Seconds left, assuming a constant rate; ``None`` while unknown (nothing done yet)."""
    if not total or done <= 0 or elapsed_s <= 0:
        return None
    return max(0.0, elapsed_s * (total - done) / done)


def format_eta(eta_s: float | None) -> str:
    """``"ETA 1:05"`` / ``"ETA 1:02:03"``, or ``"ETA --"`` while unknown."""
    if eta_s is None:
        return "ETA --"
    secs = int(round(eta_s))
    hours, rest = divmod(secs, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"ETA {hours}:{minutes:02d}:{seconds:02d}" if hours else f"ETA {minutes}:{seconds:02d}"


#: How often the napari activity bar is updated while a job runs (it re-enters Qt's event loop).
BAR_REFRESH_MS = 500


class ActivityBar:
    """A napari progress bar fed by progress records, with ETA in its description.

    napari's Qt progress bar runs ``QApplication.processEvents()`` on every value or description
    change; called from a worker callback, that nested the whole event loop (other callbacks,
    redraws, re-entrant painting) inside the callback once per tile. So records only update the
    numbers here, and a :data:`BAR_REFRESH_MS` timer pushes them to the bar from the top of the
    event loop (at once in the synchronous mode, where there is no loop).
    """

    def __init__(self, total: int | None, desc: str) -> None:
        self.desc = desc
        self.start_s = time.perf_counter()
        self.done = 0
        self.total = total
        self.eta_s: float | None = None
        self.bar: Any = None  # made at the first flush: a click that starts a job does not wait for it
        self.shown: tuple[int, int | None, str] = (0, total, desc)
        self.text = desc
        self.timer: Any = None

    def update(self, record: Any) -> None:
        if not isinstance(record, Progress) or record.total <= 0:
            return
        self.total = record.total
        self.done = record.done
        self.eta_s = estimate_eta_s(self.done, self.total, time.perf_counter() - self.start_s)
        suffix = f" ({record.message})" if record.message else ""
        self.text = f"{self.desc}: {format_eta(self.eta_s)}{suffix}"
        if is_sync():
            self.flush()
        elif self.timer is None:
            from qtpy.QtCore import QTimer

            self.timer = QTimer()
            self.timer.setInterval(BAR_REFRESH_MS)
            self.timer.timeout.connect(self.flush)
            self.timer.start()

    def flush(self) -> None:
        """Show the latest numbers on the napari bar (if they changed)."""
        if self.bar is None:
            from napari.utils import progress

            self.bar = progress(total=self.total or 0, desc=self.desc)
        done, total, text = self.shown
        if self.total != total:
            self.bar.total = self.total
        if self.done > done:
            self.bar.update(self.done - done)
        if self.text != text:
            self.bar.set_description(self.text)
        self.shown = (self.done, self.total, self.text)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.stop()
        if self.bar is not None:
            self.bar.close()
