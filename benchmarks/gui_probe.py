"""Event-loop probes for ``bench_gui_responsiveness.py``: ticks with GUI-thread CPU, stall sampling, GC and imports.

Every record is taken on the GUI thread (Linux ``schedstat`` for run-queue waits and Mesa's llvmpipe threads).
"""

from __future__ import annotations

import bisect
import collections
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Longest tolerated GUI stall (event-loop gap) while a job runs.
MAX_GAP_MS = 250.0


def viewer_camera(viewer: Any) -> Any:
    """``napari_cellularity.widgets._camera.viewer_camera``; ``viewer.camera`` for a ``--package-dir`` without it."""
    try:
        from napari_cellularity.widgets._camera import viewer_camera as camera_of
    except ImportError:  # an older checkout under test
        return viewer.camera
    return camera_of(viewer)


def stats_ms(values_s: list[float]) -> dict[str, float]:
    if not values_s:
        return {"n": 0}
    a = np.asarray(values_s) * 1e3
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "max_ms": round(float(a.max()), 1),
            "over_100ms": int((a > 100).sum()), "over_250ms": int((a > MAX_GAP_MS).sum())}


@dataclass
class Probe:
    """Records QTimer ticks, camera steps and our GUI-thread callbacks, each with GUI-thread CPU time.

    Every record is taken on the GUI thread, so ``time.thread_time()`` there is the GUI thread's own
    CPU time: a gap's CPU delta is the work the GUI thread did in it (ours, napari's, the software-GL
    draw), its wall length minus that is waiting (the machine's load, the GIL, the X server).
    """

    viewer: Any
    ticks: list[float] = field(default_factory=list)
    #: per tick: GUI-thread CPU s, its run-queue wait s (waiting for a CPU), the GL threads' CPU s and wait s
    tick_cpu: list[tuple[float, float, float, float]] = field(default_factory=list)
    camera_s: list[float] = field(default_factory=list)
    #: (name, start, end, GUI-thread CPU s) of each callback of ours and each camera step
    calls: list[tuple[str, float, float, float]] = field(default_factory=list)
    step: int = 0
    gl_tids: list[str] = field(default_factory=lambda: thread_ids_named("llvmpipe"))

    def tick(self) -> None:
        self.ticks.append(time.perf_counter())
        wait = schedstat_s("/proc/thread-self/schedstat")[1]
        gl = [schedstat_s(f"/proc/self/task/{tid}/schedstat") for tid in self.gl_tids]
        self.tick_cpu.append((time.thread_time(), wait, sum(g[0] for g in gl), sum(g[1] for g in gl)))

    def reset(self) -> None:
        self.ticks, self.tick_cpu, self.camera_s, self.calls = [], [], [], []

    def gap_parts_ms(self, i: int) -> dict[str, float]:
        """Gap ``i`` (tick i to i + 1) split: GUI-thread CPU and its wait for a CPU, the GL threads' (summed)."""
        keys = ("gui_cpu_ms", "gui_runqueue_wait_ms", "gl_threads_cpu_ms", "gl_threads_runqueue_wait_ms")
        return {k: round((b - a) * 1e3, 1) for k, a, b in zip(keys, self.tick_cpu[i], self.tick_cpu[i + 1], strict=True)}

    def timed(self, name: str, fn: Any) -> Any:
        """``fn`` wrapped to record its wall and GUI-thread CPU time in :attr:`calls` (call it on the GUI thread)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls.append((name, t0, time.perf_counter(), time.thread_time() - c0))

        return call

    def camera_step(self, app: Any) -> None:
        """One programmatic pan or zoom, then process events (incl. the redraw); timed."""
        cam = viewer_camera(self.viewer)
        t0, c0 = time.perf_counter(), time.thread_time()
        if self.step % 2:
            cam.zoom = cam.zoom * (1.1 if self.step % 4 == 1 else 1 / 1.1)
        else:
            dy = 20.0 if self.step % 4 == 0 else -20.0
            cam.center = (cam.center[-2] + dy, cam.center[-1] - dy)
        app.processEvents()
        t1 = time.perf_counter()
        self.camera_s.append(t1 - t0)
        self.calls.append(("camera_step+processEvents", t0, t1, time.thread_time() - c0))
        self.step += 1

    def worst_gaps(self, origin: float, n: int = 5) -> list[dict[str, Any]]:
        """The ``n`` longest event-loop gaps: wall, GUI-thread CPU, and the calls that overlapped them.

        ``ours`` lists the callbacks overlapping the gap with their own wall / CPU ms (a camera step
        runs nested event processing, so our callbacks can run inside it and appear in both).
        """
        wall = np.diff(self.ticks) if len(self.ticks) > 1 else np.zeros(0)
        out = []
        for i in np.argsort(-wall)[:n]:
            t0, t1 = self.ticks[i], self.ticks[i + 1]
            inside = [c for c in self.calls if c[1] < t1 and c[2] > t0]
            out.append({
                "at_s": round(t0 - origin, 2), "wall_ms": round(float(wall[i]) * 1e3, 1), **self.gap_parts_ms(i),
                "ours_cpu_ms": round(sum(c[3] for c in inside if not c[0].startswith("camera")) * 1e3, 1),
                "calls": [[c[0], round((c[2] - c[1]) * 1e3, 1), round(c[3] * 1e3, 1)] for c in inside][:8],
                "gc": GC_LOG.within(t0, t1),
            })
        return out

    def phase(self, t0: float, t1: float) -> dict[str, Any]:
        """Gaps that end between ``t0`` and ``t1``: wall and GUI-thread CPU statistics, the longest gap's CPU."""
        ticks = np.asarray(self.ticks)
        idx = [i for i in range(len(ticks) - 1) if t0 < ticks[i + 1] <= t1]
        if not idx:
            return {"n": 0}
        wall = ticks[np.asarray(idx) + 1] - ticks[idx]
        cpu = [self.tick_cpu[i + 1][0] - self.tick_cpu[i][0] for i in idx]
        worst = idx[int(np.argmax(wall))]
        costliest = [idx[k] for k in np.argsort(cpu)[::-1][:6]]
        return {"wall": stats_ms(list(wall)), "gui_cpu": stats_ms(cpu),
                "longest": {"wall_ms": round(float(wall.max()) * 1e3, 1), **self.gap_parts_ms(worst)},
                "most_gui_cpu": [{"gui_cpu_ms": self.gap_parts_ms(i)["gui_cpu_ms"],
                                  "wall_ms": round(float(ticks[i + 1] - ticks[i]) * 1e3, 1),
                                  "ours": [[c[0], round(c[3] * 1e3, 1)] for c in self.calls
                                           if c[1] < ticks[i + 1] and c[2] > ticks[i] and not c[0].startswith("camera")]}
                                 for i in costliest]}

    def callbacks(self) -> dict[str, dict[str, float]]:
        """Per callback name: count, total and longest wall / GUI-thread CPU ms."""
        out: dict[str, dict[str, float]] = {}
        for name, t0, t1, cpu in self.calls:
            agg = out.setdefault(name, {"n": 0, "wall_ms": 0.0, "cpu_ms": 0.0, "max_wall_ms": 0.0, "max_cpu_ms": 0.0})
            agg["n"] += 1
            agg["wall_ms"] = round(agg["wall_ms"] + (t1 - t0) * 1e3, 1)
            agg["cpu_ms"] = round(agg["cpu_ms"] + cpu * 1e3, 1)
            agg["max_wall_ms"] = round(max(agg["max_wall_ms"], (t1 - t0) * 1e3), 1)
            agg["max_cpu_ms"] = round(max(agg["max_cpu_ms"], cpu * 1e3), 1)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["max_cpu_ms"]))

    def summary(self, origin: float | None = None) -> dict[str, Any]:
        gaps = list(np.diff(self.ticks)) if len(self.ticks) > 1 else []
        parts = np.diff(np.asarray(self.tick_cpu).reshape(-1, 4), axis=0)
        out = {"tick_gap": stats_ms(gaps), "tick_gap_gui_cpu": stats_ms(list(parts[:, 0])),
               "tick_gap_gui_runqueue_wait": stats_ms(list(parts[:, 1])),
               "tick_gap_gl_threads_cpu": stats_ms(list(parts[:, 2])),
               "tick_gap_gl_threads_runqueue_wait": stats_ms(list(parts[:, 3])),
               "gl_threads": len(self.gl_tids), "camera_step": stats_ms(self.camera_s)}
        if origin is not None:
            out["worst_gaps"] = self.worst_gaps(origin)
            out["callbacks"] = self.callbacks()
        return out


def schedstat_s(path: str) -> tuple[float, float]:
    """A thread's Linux ``schedstat``: seconds on a CPU, seconds runnable but waiting for one (the
    machine's load); zeros where the kernel does not provide it."""
    try:
        with open(path, encoding="ascii") as fh:
            on_cpu, waiting = fh.read().split()[:2]
        return int(on_cpu) * 1e-9, int(waiting) * 1e-9
    except (OSError, ValueError):
        return 0.0, 0.0


def thread_ids_named(prefix: str) -> list[str]:
    """Ids of this process's threads whose name starts with ``prefix`` (Mesa's software GL: ``llvmpipe-N``)."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return []
    out = []
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="ascii") as fh:
                if fh.read().startswith(prefix):
                    out.append(tid)
        except OSError:
            continue
    return out


def thread_cpu_s(native_id: int | None) -> float | None:
    """CPU seconds (user + system) a thread of this process has used (Linux /proc), else None."""
    if native_id is None:
        return None
    try:
        with open(f"/proc/self/task/{native_id}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StallSampler:
    """Samples the GUI thread's Python stack while its event loop is stalled (a poor man's py-spy).

    A daemon thread looks every ``every_s`` at the probe's last tick; once it is older than
    ``after_s`` it records the main thread's stack (and the other threads' innermost frame, to
    see a worker that holds the GIL). Each stall is reported as its length and the most frequent
    stack lines, so the benchmark says *what* blocked the GUI, not only for how long.
    """

    def __init__(self, probe: Probe, after_s: float = 0.12, every_s: float = 0.02) -> None:
        self.probe, self.after_s, self.every_s = probe, after_s, every_s
        self.main_id = threading.main_thread().ident
        self.main_native = threading.main_thread().native_id
        self.stalls: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="stall-sampler")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(1.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            last = self.probe.ticks[-1] if self.probe.ticks else None
            now = time.perf_counter()
            if last is None or now - last < self.after_s:
                if self._current is not None:
                    self._close(last)
                continue
            if self._current is None or self._current["since"] != last:
                if self._current is not None:
                    self._close(last)
                self._current = {"since": last, "main": collections.Counter(), "other": collections.Counter(), "n": 0,
                                 "cpu0": thread_cpu_s(self.main_native)}
            frames = sys._current_frames()
            main = frames.get(self.main_id)
            if main is not None:
                stack = traceback.extract_stack(main)
                ours = [f for f in stack if "site-packages" not in f.filename or "napari" in f.filename
                        or "vispy" in f.filename]
                key = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}"
                                  for f in reversed((ours or stack)[-6:]))
                self._current["main"][key] += 1
            for ident, frame in frames.items():
                if ident not in (self.main_id, threading.get_ident()):
                    f = traceback.extract_stack(frame)[-1]
                    self._current["other"][f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}"] += 1
            self._current["n"] += 1

    def _close(self, next_tick: float | None) -> None:
        cur, self._current = self._current, None
        ticks = self.probe.ticks  # the stall ends at the first tick after it began (the sampler may
        after = bisect.bisect_right(ticks, cur["since"])  # notice late on a loaded machine)
        end = ticks[after] if after < len(ticks) else (next_tick or time.perf_counter())
        cpu1 = thread_cpu_s(self.main_native)
        # CPU the GUI thread used in the stall (from when the stall was noticed, 10 ms ticks): far
        # below gap_ms means the thread waited (other processes' load, the GIL, the GL driver)
        cpu_ms = None if cur["cpu0"] is None or cpu1 is None else round((cpu1 - cur["cpu0"]) * 1e3)
        self.stalls.append({
            "at_s": round(cur["since"], 3), "gap_ms": round((end - cur["since"]) * 1e3, 1), "samples": cur["n"],
            "gui_thread_cpu_ms_after_120ms": cpu_ms,
            "main": cur["main"].most_common(4), "other_threads": cur["other"].most_common(3),
        })

    def report(self, since: float) -> list[dict[str, Any]]:
        """The stalls recorded after ``since`` (perf_counter), longest first."""
        return sorted((s for s in self.stalls if s["at_s"] >= since), key=lambda s: -s["gap_ms"])


class GcLog:
    """Records each cyclic garbage collection: thread, generation, start and end (``gc.callbacks``).

    A full (generation 2) collection walks every tracked object; with torch and napari loaded that is
    hundreds of ms. On the GUI thread it is GUI-thread CPU; on the worker it holds the GIL, so the GUI
    thread waits (neither CPU nor run-queue wait). ``worst_gaps`` lists the collections inside each gap.
    """

    def __init__(self) -> None:
        self.records: list[tuple[str, int, float, float]] = []
        self._start: dict[int, float] = {}

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._start[threading.get_ident()] = now
            return
        t0 = self._start.pop(threading.get_ident(), now)
        if now - t0 > 0.005 or info.get("generation") == 2:
            self.records.append((threading.current_thread().name, int(info.get("generation", -1)), t0, now))

    def install(self) -> None:
        import gc

        gc.callbacks.append(self)

    def within(self, t0: float, t1: float) -> list[list[Any]]:
        """[thread, generation, ms] of the collections overlapping ``t0``..``t1``."""
        return [[th, gen, round((b - a) * 1e3, 1)] for th, gen, a, b in self.records if a < t1 and b > t0]


#: The process's garbage-collection log (installed by :func:`main`).
GC_LOG = GcLog()


class ImportLog:
    """Records each module imported while installed: its name, thread and when (a meta-path hook).

    Imports on the GUI thread after the window is up are stalls (PySide6's import hook reads each
    new module's source); the list says which modules to import in the worker ahead of time.
    """

    def __init__(self) -> None:
        self.records: list[tuple[float, str, str]] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name not in sys.modules:
            self.records.append((time.perf_counter(), threading.current_thread().name, name))
        return None  # never finds anything itself: the normal finders do the import

    def install(self) -> None:
        sys.meta_path.insert(0, self)

    def report(self, since: float) -> dict[str, list[str]]:
        """Modules first imported after ``since``, per thread (the GUI thread's in full)."""
        out: dict[str, list[str]] = {}
        for t, thread, name in self.records:
            if t >= since:
                short = name if thread == "MainThread" else name.split(".")[0]
                if short not in out.setdefault(thread, []):
                    out[thread].append(short)
        return out


def pump(app: Any, probe: Probe, until: Any, timeout_s: float, camera_every_s: float = 0.05) -> float:
    """Run the Qt event loop (blocking on events, not spinning) with camera steps until ``until()``."""
    from qtpy.QtCore import QEventLoop

    t0 = time.perf_counter()
    next_cam = t0
    while not until():
        now = time.perf_counter()
        if now - t0 > timeout_s:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s")
        if now >= next_cam:
            probe.camera_step(app)
            next_cam = time.perf_counter() + camera_every_s
        app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
    return time.perf_counter() - t0


def call_name(fn: Any, args: tuple) -> str:
    """``_paint(malignant)``, ``show_points(lymphocyte)``: a queued call's function and its class argument."""
    inner = getattr(fn, "func", fn)  # functools.partial
    name = getattr(inner, "__name__", type(inner).__name__)
    strings = [a for a in (*getattr(fn, "args", ()), *args) if isinstance(a, str)]
    strings += [a[0] for a in args if isinstance(a, tuple) and len(a) == 1 and isinstance(a[0], str)]
    return f"{name}({strings[0]})" if strings else name
