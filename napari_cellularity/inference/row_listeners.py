"""Post-processing on finished rows of predicted maps, beside the network (``predict_region``'s ``row_listener``).

:func:`~.predict.predict_region` calls ``rows_final(probs, rows_done)`` after each finished strip (rows
``[0, rows_done)`` of the stored maps are final), ``wait()`` before the store is committed (renamed) and
``cancel()`` when it stops unfinished. :class:`BackgroundRows` is the base of such listeners (one worker
thread, results collected in submission order, time spent); :class:`RowListeners` fans one hook out to several.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class BackgroundRows:
    """Work submitted from ``rows_final`` runs in one worker thread; :meth:`_collect` receives each result in order.

    Parameters
    ----------
    background : bool
        Run the work in a thread (numpy / scipy / torch release the GIL for most of it); False: inline.
    thread_name : str
        Name prefix of the worker thread.
    """

    def __init__(self, background: bool = True, thread_name: str = "rows") -> None:
        self.background = bool(background)
        self.thread_name = thread_name
        self.busy_s = 0.0  # seconds spent in the submitted work (in the thread and inline)
        self._futures: list[Future] = []
        self._pool: ThreadPoolExecutor | None = None

    def rows_final(self, probs: Any, rows_done: int) -> None:
        """Rows ``[0, rows_done)`` of ``probs`` are final (subclasses submit the work they allow)."""
        raise NotImplementedError

    def _collect(self, result: Any) -> None:
        raise NotImplementedError

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if not self.background:
            self._collect(self._timed(fn, *args))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=self.thread_name)
        self._futures.append(self._pool.submit(self._timed, fn, *args))

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.busy_s += time.perf_counter() - t0

    def wait(self) -> None:
        """Wait for the submitted work (raises what it raised)."""
        futures, self._futures = self._futures, []
        for future in futures:
            self._collect(future.result())

    def cancel(self) -> None:
        """Drop work not yet started and wait for the running one (the maps are about to go away)."""
        for future in self._futures:
            future.cancel()
        for future in self._futures:
            if not future.cancelled():
                future.exception()
        self._futures = []
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class RowListeners:
    """Several row listeners behind one ``row_listener``."""

    def __init__(self, *listeners: Any) -> None:
        self.listeners = [x for x in listeners if x is not None]

    def rows_final(self, probs: Any, rows_done: int) -> None:
        for listener in self.listeners:
            listener.rows_final(probs, rows_done)

    def wait(self) -> None:
        for listener in self.listeners:
            listener.wait()

    def cancel(self) -> None:
        for listener in self.listeners:
            listener.cancel()
