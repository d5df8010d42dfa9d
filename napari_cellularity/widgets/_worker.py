"""Run long compute generators off the GUI thread, with a progress bar, ETA and Cancel.

Every long compute function in this package is a generator: it yields small progress
records and returns its result (STYLE rule 3). Widgets hand such a generator to
:func:`run_generator`, which

* runs it in a ``napari.qt.threading`` worker thread (or synchronously, in the calling
  thread, when the environment variable ``NAPARI_CELLULARITY_SYNC=1`` is set: tests do);
* drives a ``napari.utils.progress`` bar (shown in napari's activity dock) from the
  records' ``done`` / ``total`` fields, with an ETA in its description;
* delivers every record to ``on_yield`` and the generator's return value to
  ``on_return``, both on the GUI thread;
* turns an exception into a readable ``show_error`` notification (class name + message,
  no bare traceback) and then calls ``on_error(exc)``;
* cancels at the next ``yield`` when ``worker.quit()`` is called (``on_abort`` then runs
  and the generator is closed, so its ``finally`` blocks release resources).

The bar reads the ``done`` / ``total`` / ``message`` of
:class:`~napari_cellularity.progress.Progress` records (records without a total, such as
bare notices, leave it as it is); ``on_yield`` receives every record.

Example
-------
>>> def count(n):                                  # doctest: +SKIP
...     for i in range(n):
...         yield Progress("step", done=i + 1, total=n)
...     return "ok"
>>> worker = run_generator(lambda: count(3), on_return=print, progress_desc="Counting")
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
import traceback
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import create_worker  # here, not at the first Run click (GUI thread)

from ._activity import ENV_SYNC, ActivityBar, estimate_eta_s, format_eta, is_sync  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

GenFn = Callable[[], Generator[Any, Any, Any]]


@dataclass
class _Failure:
    """Returned by the guarded generator instead of raising across the thread boundary."""

    exc: BaseException
    traceback_text: str


def describe_exception(exc: BaseException) -> str:
    """A one-line, user-facing description: ``"ClassName: message"``."""
    text = str(exc).strip() or "(no message)"
    return f"{type(exc).__name__}: {text}"


def _llvm_already_loaded() -> bool:
    """True when a shared LLVM library (e.g. Mesa's, loaded by the OpenGL driver) is mapped."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            return any("libLLVM" in line for line in fh)
    except OSError:
        return False


@functools.cache
def isolate_triton_llvm() -> bool:
    """Load Triton's native library with its own LLVM symbols if a GL driver's LLVM is loaded.

    ``import segmentation_models_pytorch`` imports ``torchvision.ops`` -> ``torch._dynamo``
    -> ``triton`` (installed with CUDA builds of torch). On Linux, napari's OpenGL canvas
    (Mesa: llvmpipe, radeonsi ...) has already loaded ``libLLVM`` globally by then, and
    ``libtriton.so`` (which carries its own LLVM) binds to those symbols and crashes the
    whole process with a segmentation fault while importing (seen under Xvfb with
    ``libLLVM-15``; headless tests never load GL so never saw it). Pre-loading
    ``libtriton.so`` with ``RTLD_DEEPBIND`` makes it use its own LLVM; the later
    ``import triton`` reuses that handle. Cached: does the work at most once.

    Returns
    -------
    bool
        True when the library was pre-loaded, False when nothing had to be done.
    """
    if sys.platform != "linux" or "triton" in sys.modules or not hasattr(os, "RTLD_DEEPBIND"):
        return False
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not _llvm_already_loaded():
        return False
    lib = os.path.join(os.path.dirname(spec.origin), "_C", "libtriton.so")
    if not os.path.isfile(lib):
        return False
    import ctypes

    try:
        ctypes.CDLL(lib, mode=os.RTLD_NOW | os.RTLD_DEEPBIND)
    except OSError as exc:  # leave the normal import to report its own error
        logger.warning("could not pre-load %s: %s", lib, exc)
        return False
    logger.info("pre-loaded %s with RTLD_DEEPBIND (an OpenGL driver's LLVM is loaded)", lib)
    return True


def _guarded(gen_fn: GenFn, holder: list) -> Generator[Any, Any, Any]:
    """Run ``gen_fn()`` and return a :class:`_Failure` instead of raising."""
    try:
        isolate_triton_llvm()  # before the job imports torch/smp (see its docstring)
        gen = gen_fn()
        holder.append(gen)
        return (yield from gen)
    except GeneratorExit:
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the user, never swallowed
        logger.exception("background job failed")
        return _Failure(exc, traceback.format_exc())


class _InOrder:
    """Runs worker callbacks one at a time, in arrival order, even if one re-enters Qt's loop.

    napari's Qt progress bar calls ``QApplication.processEvents()`` in ``setValue`` and
    ``setDescription``. Updating the bar inside a ``yielded`` callback therefore delivered the
    *next* queued signals (later tiles, ``returned``, ``finished``) nested inside it: the
    earlier tile was painted over the final blended map and its status line ("2/3 tiles")
    replaced "Done" (measured under Xvfb, benchmarks/bench_gui_responsiveness.py). Wrapped
    callbacks queue instead and run after the current one returns.
    """

    def __init__(self) -> None:
        self.pending: deque = deque()
        self.busy = False

    def wrap(self, fn: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            self.pending.append((fn, args))
            if self.busy:
                return
            self.busy = True
            try:
                while self.pending:
                    queued_fn, queued_args = self.pending.popleft()
                    queued_fn(*queued_args)
            finally:
                self.busy = False

        return call


class GuiQueue:
    """Runs queued GUI-thread calls one per event-loop turn, in order, so no single turn stalls.

    Painting a result (adding or refreshing several layers) in one callback blocks the event loop
    for the sum of its parts; queued here, pan / zoom / clicks are served between the parts.
    In the synchronous mode (``NAPARI_CELLULARITY_SYNC=1``) calls run at once.
    """

    def __init__(self) -> None:
        self.pending: deque = deque()
        self.timer: Any = None

    def add(self, fn: Callable[..., None], *args: Any) -> None:
        if is_sync():
            fn(*args)
            return
        self.pending.append((fn, args))
        if self.timer is None:
            from qtpy.QtCore import QTimer

            self.timer = QTimer()
            self.timer.setSingleShot(True)
            self.timer.setInterval(0)
            self.timer.timeout.connect(self._run_one)
        if not self.timer.isActive():
            self.timer.start()

    def _run_one(self) -> None:
        if self.pending:
            fn, args = self.pending.popleft()
            try:
                fn(*args)
            finally:
                if self.pending:
                    self.timer.start()

    def __len__(self) -> int:
        return len(self.pending)


class SyncWorker:
    """Stand-in for a napari ``GeneratorWorker`` that runs in the calling thread.

    Used when ``NAPARI_CELLULARITY_SYNC=1``. ``quit()`` (typically called from an
    ``on_yield`` callback) stops the loop at the next yield, like the threaded worker.
    """

    def __init__(self, gen: Generator[Any, Any, Any]) -> None:
        self._gen = gen
        self.abort_requested = False
        self.is_running = False
        self.callbacks: dict[str, list[Callable]] = {
            k: [] for k in ("yielded", "returned", "aborted", "finished")
        }

    def quit(self) -> None:
        """Request cancellation; honoured at the next yield."""
        self.abort_requested = True

    def _emit(self, name: str, *args: Any) -> None:
        for cb in self.callbacks[name]:
            cb(*args)

    def start(self) -> None:
        """Run the generator to completion (or until :meth:`quit`)."""
        self.is_running = True
        try:
            while True:
                if self.abort_requested:
                    self._gen.close()
                    self._emit("aborted")
                    break
                try:
                    record = next(self._gen)
                except StopIteration as stop:
                    self._emit("returned", stop.value)
                    break
                self._emit("yielded", record)
        finally:
            self.is_running = False
            self._emit("finished")


def run_generator(
    gen_fn: GenFn,
    *,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_abort: Callable[[], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    progress_total: int | None = None,
    progress_desc: str = "Working",
    start: bool = True,
) -> Any:
    """Run a compute generator in a worker thread with progress, ETA, Cancel and error reporting.

    Parameters
    ----------
    gen_fn
        Zero-argument callable returning the generator (use ``functools.partial`` or a
        lambda to bind arguments). It is called inside the worker thread.
    on_yield
        Called on the GUI thread with every yielded record (e.g. to paint a tile).
    on_return
        Called on the GUI thread with the generator's return value (not on error/cancel).
    on_error
        Called with the exception after a ``show_error`` notification was shown.
    on_abort
        Called after a cancellation (``worker.quit()``) took effect.
    on_finish
        Always called last (success, error or cancel): re-enable buttons here.
    progress_total
        Initial total for the progress bar; records carrying ``total`` override it.
    progress_desc
        Label of the progress bar and prefix of error notifications (e.g. ``"Analyze"``).
    start
        Start immediately (default). With ``False`` call ``worker.start()`` yourself.

    Returns
    -------
    worker
        A napari ``GeneratorWorker`` (threaded) or :class:`SyncWorker` (sync mode). Both
        have ``quit()``, ``start()`` and ``is_running``; ``worker.eta_s`` and
        ``worker.progress_done``/``progress_total`` are readable from ``on_yield``.
    """
    holder: list = []
    bar = ActivityBar(progress_total, progress_desc)
    if is_sync():
        worker: Any = SyncWorker(_guarded(gen_fn, holder))
        connect = lambda name, cb: worker.callbacks[name].append(cb)  # noqa: E731
    else:
        worker = create_worker(functools.partial(_guarded, gen_fn, holder), _start_thread=False)
        connect = lambda name, cb: getattr(worker, name).connect(cb)  # noqa: E731
    worker.eta_s = None
    worker.progress_done, worker.progress_total = 0, progress_total

    def _yielded(record: Any) -> None:
        bar.update(record)
        worker.eta_s, worker.progress_done, worker.progress_total = bar.eta_s, bar.done, bar.total
        if on_yield is not None:
            on_yield(record)

    def _returned(value: Any) -> None:
        if isinstance(value, _Failure):
            _report_failure(progress_desc, value, on_error)
        elif on_return is not None:
            on_return(value)

    def _finished() -> None:
        bar.close()
        for gen in holder:  # release resources (GPU memory, files) held in finally blocks
            gen.close()
        if on_finish is not None:
            on_finish()

    in_order = _InOrder()
    connect("yielded", in_order.wrap(_yielded))
    connect("returned", in_order.wrap(_returned))
    connect("aborted", in_order.wrap(on_abort or (lambda: None)))
    connect("finished", in_order.wrap(_finished))
    if start:
        worker.start()
    return worker


def _report_failure(
    desc: str, failure: _Failure, on_error: Callable[[BaseException], None] | None
) -> None:
    """Show a readable notification for a failed job, then call ``on_error``."""
    from napari.utils.notifications import show_error

    show_error(f"{desc} failed: {describe_exception(failure.exc)}")
    if on_error is not None:
        on_error(failure.exc)
