"""Does the viewer stay responsive while Analyze runs? Threaded path, on a real (virtual) display.

Run by hand under Xvfb; numbers go in issue notes, not in tests::

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/bench_gui_responsiveness.py \
        --size 1024 --mpp 0.5 --threads 1 --json /tmp/gui_bench.json

(``--model NAME`` picks a registered model; by default the default segmentation model, e.g. the
shipped ``fpn-resnet34-brca@2``.) The issue's target: no event-loop gap over
:data:`MAX_GAP_MS` (250 ms) while a CPU analysis of a 1024² region runs; ``gaps_over_250ms``
and ``verdict`` say whether it held.

What it does, in one ``napari.Viewer(show=True)`` with the Analyze dock (threaded worker,
``NAPARI_CELLULARITY_SYNC`` is forced off):

1. ``idle``: 3 s of programmatic pan/zoom steps with nothing running (baseline); after the cold
   run ``idle_with_results`` repeats it with the result layers shown (the drawing baseline the
   warm run is compared with: on a software-GL display every redraw costs per visible layer).
2. ``run_cold`` / ``run_warm``: clicks Run on the current view (a ``--size``² image at
   ``--mpp`` µm/px fitted into the canvas, so the view box is the whole image) while the
   camera keeps panning/zooming; cold includes loading the network, warm reuses the cache.
3. ``cancel``: clicks Cancel after ``--cancel-after`` tiles; reports how long Cancel took.
4. ``error``: runs on the (absent) CUDA device; checks that an error notification arrives
   and the status line says what failed.

Event-loop latency is measured with a ``QTimer`` firing every 10 ms: the gaps between its
ticks (p50 / p95 / max) are how long the GUI thread was busy; ``phases`` splits a run's gaps into
click to first tile (model loading), tiles, and result layers (from the worker's return to the end), each
with its ``most_gui_cpu`` gaps (GUI-thread CPU, wall, our callbacks inside them). On a loaded machine a wall gap also
counts the time the GUI thread waited for a CPU, so every tick also reads ``time.thread_time()`` on
the GUI thread: ``tick_gap_gui_cpu`` is the GUI thread's own CPU per gap (load-independent: ours,
napari's, vispy's GL calls). From Linux ``schedstat`` each tick also reads the GUI thread's run-queue
wait (``tick_gap_gui_runqueue_wait``: runnable, waiting for a CPU, i.e. the machine's load) and the
CPU and run-queue wait of Mesa's software-GL rasteriser threads (``tick_gap_gl_threads_cpu`` /
``_runqueue_wait``, threads ``llvmpipe-N``, summed: the draw's pixels are filled there, not on the GUI
thread). ``worst_gaps`` lists the longest gaps with
their wall ms, these three parts and the calls that overlapped them (``calls``: name, wall ms, CPU ms; ``ours_cpu_ms``
sums our callbacks, i.e. everything but the benchmark's camera steps; ``gc``: the garbage collections
inside the gap, per thread — one on the worker holds the GIL, see :class:`GcLog`). ``callbacks`` aggregates our
GUI-thread callbacks (the worker's ``_on_yield`` / ``_on_return``, each call the widget queues on its
``GuiQueue``, the activity bar's flush, the Run click) by name; ``headline`` collects the numbers for
an issue note. Each camera step is timed as
``camera.zoom``/``camera.center`` assignment + ``QApplication.processEvents()`` (the redraw).
``click_to_first_tile_s`` is from the Run click to the first painted tile.

What blocked the GUI (``--sample-stalls``: ``stalls`` of each run, longest first): a sampler thread records the GUI
thread's Python stack every 20 ms while its event loop has not ticked for 120 ms (and the other
threads' innermost frames, to spot a worker holding the GIL), plus the CPU time the GUI thread
used meanwhile (``gui_thread_cpu_ms_after_120ms``: far below the gap means it was waiting, on a
loaded machine mostly for a CPU). ``imports_by_thread`` lists the modules first imported during
the cold run per thread (GUI-thread imports are stalls). ``--profile-gui FILE.prof`` cProfiles
the GUI thread during the cold run. Report ``load_average`` with every number.
The sampler reads another thread's frames (``sys._current_frames``); with it about one run in three
on a loaded machine died natively in napari's layer-list paint (CPython 3.11, seen 2026-12-01),
without it 0 of 5 — so it is opt-in, for finding causes, not for the reported gaps.

Before/after a change, alternate runs of both versions so they see the same machine load::

    git archive REV napari_cellularity | tar -x -C /tmp/old_nc
    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/bench_gui_responsiveness.py \
        --package-dir /tmp/old_nc --skip cancel error --json /tmp/old.json   # then without it

Numbers on a loaded 2-core machine (a training job in the background) are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gui_probe import (  # noqa: E402
    GC_LOG,
    MAX_GAP_MS,
    ImportLog,
    Probe,
    StallSampler,
    call_name,
    pump,
    stats_ms,
    thread_cpu_s,
)


def instrument_gui_thread(widget: Any, probe: Probe) -> None:
    """Time (wall + GUI-thread CPU) every call the widget queues on its GuiQueue, and the activity bar's flush.

    Patched once per process; an older ``--package-dir`` without these parts is measured without them.
    """
    gui = getattr(widget, "gui", None)
    if gui is not None and not getattr(gui, "_bench_timed", False):
        add = gui.add
        gui.add = lambda fn, *args: add(probe.timed(call_name(fn, args), fn), *args)
        gui._bench_timed = True
    try:
        from napari_cellularity.widgets._activity import ActivityBar
    except ImportError:
        return
    if not getattr(ActivityBar.flush, "_bench_timed", False):
        flush = ActivityBar.flush
        timed_flush = lambda self: probe.timed("ActivityBar.flush", flush)(self)  # noqa: E731
        timed_flush._bench_timed = True
        ActivityBar.flush = timed_flush


def instrument(widget: Any, probe: Probe, cancel_after: int | None = None) -> dict[str, list]:
    """Wrap the widget's worker callbacks to time them on the GUI thread (wall + CPU) and log progress/ETA."""
    log: dict[str, list] = {"on_yield_s": [], "progress": [], "status": []}
    instrument_gui_thread(widget, probe)

    def timed(record: Any) -> None:
        t0 = time.perf_counter()
        probe.timed(f"_on_yield({getattr(record, 'kind', '?')})", original)(record)
        log["on_yield_s"].append(time.perf_counter() - t0)
        log["progress"].append(widget.progress.value())
        log["status"].append(widget.status.text())
        print(f"  {time.perf_counter() - widget.t_start:7.2f} s  yield {len(log['status'])}: "
              f"{widget.status.text()!r} ({log['on_yield_s'][-1] * 1e3:.0f} ms on GUI thread)",
              file=sys.stderr, flush=True)
        n_tiles = sum("tiles" in s for s in log["status"])
        if cancel_after is not None and n_tiles == cancel_after:
            # a click arrives like a user's: through the event loop, which may run nested
            # inside napari's progress-bar updates, so click from a timer, not from pump()
            from qtpy.QtCore import QTimer

            log["cancel_at"] = [time.perf_counter()]
            QTimer.singleShot(0, widget.cancel_button.click)

    widget.__dict__.pop("_on_yield", None)
    widget.__dict__.pop("_on_return", None)
    original, original_return = widget._on_yield, widget._on_return

    def timed_return(result: Any) -> None:
        t0 = time.perf_counter()
        log["returned_at"] = [t0]
        probe.timed("_on_return", original_return)(result)
        log["on_return_s"] = [time.perf_counter() - t0]

    widget._on_yield = timed  # run() looks the bound methods up at click time
    widget._on_return = timed_return
    return log


def run_phase(app, probe, widget, timeout_s: float, cancel_after: int | None = None,
              sampler: StallSampler | None = None, imports: ImportLog | None = None) -> dict[str, Any]:
    """Click Run, keep panning/zooming until the worker finishes; optionally click Cancel."""
    log = instrument(widget, probe, cancel_after)
    probe.reset()
    cpu_start = thread_cpu_s(threading.main_thread().native_id)
    t_click = time.perf_counter()
    probe.timed("run (the click)", widget.run_button.click)()
    click_return_s = time.perf_counter() - t_click
    for name in ("returned", "errored", "aborted", "finished"):
        sig = getattr(widget.worker, name, None)
        if sig is not None:
            sig.connect(lambda *a, _n=name: print(f"  worker {_n}", file=sys.stderr, flush=True))
    # not worker.is_running: that is False until the pool thread starts; Run is re-enabled
    # by the widget's on_finish, i.e. after the result (or error/cancel) was handled
    pump(app, probe, widget.run_button.isEnabled, timeout_s)
    t_end = time.perf_counter()
    wall_s = t_end - t_click
    cancel_s = t_end - log["cancel_at"][0] if log.get("cancel_at") else None
    pump(app, probe, lambda: True, 1.0)  # deliver the last queued signals
    etas = [s.split(", ")[-1] for s in log["status"] if "ETA" in s]
    out = {
        "wall_s": round(wall_s, 2), "click_return_ms": round(click_return_s * 1e3, 1),
        "click_to_first_tile_s": None if widget.first_tile_s is None else round(widget.first_tile_s, 2),
        "yields": len(log["on_yield_s"]), "on_yield": stats_ms(log["on_yield_s"]),
        "on_yield_total_s": round(float(sum(log["on_yield_s"])), 2),
        "on_return_ms": [round(v * 1e3, 1) for v in log.get("on_return_s", [])],
        "progress_values_seen": sorted(set(log["progress"]))[-3:], "distinct_etas": len(set(etas)),
        "final_status": widget.status.text(), **probe.summary(t_click),
        "gui_thread_cpu_s": round(thread_cpu_s(threading.main_thread().native_id) - cpu_start, 2),
        "load_average": os.getloadavg(),
    }
    first = t_click + widget.first_tile_s if widget.first_tile_s is not None else t_end
    returned = log.get("returned_at", [t_end])[0]
    out["phases"] = {"click_to_first_tile": probe.phase(t_click, first), "tiles": probe.phase(first, returned),
                     "result_layers": probe.phase(returned, time.perf_counter())}
    gcs = GC_LOG.within(t_click, time.perf_counter())
    out["gc_ms_by_thread"] = {th: round(sum(ms for t, _, ms in gcs if t == th), 1) for th in {g[0] for g in gcs}}
    out["gc_longest"] = max(gcs, key=lambda g: g[2], default=None)
    if cancel_s is not None:
        out["cancel_to_finished_s"] = round(cancel_s, 2)
    if imports is not None:
        out["imports_by_thread"] = imports.report(t_click)
    if sampler is not None:
        out["stalls"] = [{**st, "at_s": round(st["at_s"] - t_click, 2)} for st in sampler.report(t_click)[:6]]
    return out


def build(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Viewer (shown), H&E image layer at ``args.mpp``, Analyze dock on CPU over the view."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cellularity.synthetic import make_he_patch
    from napari_cellularity.widgets.analyze import REGION_VIEW

    viewer = napari.Viewer(show=True)
    if args.image:
        viewer.open(args.image, plugin="napari-cellularity")
    else:
        patch = make_he_patch((args.size, args.size), mpp=args.mpp, seed=0)
        viewer.add_image(patch.image, name="he", rgb=True, scale=(args.mpp, args.mpp),
                         metadata={"mpp_source": "benchmark"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    widget.refresh_models()
    refs = [widget.model_combo.itemData(i).ref for i in range(widget.model_combo.count())]
    match = [i for i, r in enumerate(refs) if args.model in (r, r.split("@")[0])]
    if args.model and not match:
        raise SystemExit(f"model {args.model!r} not in the registry ({refs}); set NAPARI_CELLULARITY_HOME")
    if match:
        widget.model_combo.setCurrentIndex(match[0])
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.region_combo.setCurrentText(REGION_VIEW)
    widget.batch_spin.setValue(args.batch_size)
    app = QApplication.instance()
    viewer.window.resize(*args.window)  # public API; the Xvfb screen size
    for _ in range(20):
        app.processEvents()
    viewer.reset_view()  # the whole image in view: the view box is the whole image
    for _ in range(20):
        app.processEvents()
    return viewer, widget, app


def error_phase(app, probe, widget, timeout_s: float) -> dict[str, Any]:
    """Run on the unavailable CUDA device: an error notification must arrive."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(f"{n.severity}: {n.message}"))
    idx = widget.device_combo.findData("cuda")
    if idx < 0:
        return {"skipped": "a CUDA device exists here"}
    widget.device_combo.setCurrentIndex(idx)
    try:
        out = run_phase(app, probe, widget, timeout_s)
    finally:
        widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    return {"notifications": seen[-2:], "final_status": out["final_status"], "wall_s": out["wall_s"]}


def headline(phase: dict[str, Any]) -> dict[str, Any]:
    """The numbers an issue note needs: longest gap (wall) and the GUI thread's CPU in it, gaps > 250 ms
    by wall and by GUI-thread CPU, the largest GUI-thread CPU of any gap, and our costliest callback."""
    worst = (phase.get("worst_gaps") or [{}])[0]
    ours = next(iter((phase.get("callbacks") or {}).items()), None)
    return {"longest_gap_ms": worst.get("wall_ms"), "its_gui_cpu_ms": worst.get("gui_cpu_ms"),
            "its_gui_runqueue_wait_ms": worst.get("gui_runqueue_wait_ms"),
            "its_gl_threads_cpu_ms": worst.get("gl_threads_cpu_ms"), "its_ours_cpu_ms": worst.get("ours_cpu_ms"),
            "gaps_over_250ms": phase["tick_gap"].get("over_250ms"),
            "max_gap_gui_cpu_ms": phase["tick_gap_gui_cpu"].get("max_ms"),
            "gaps_gui_cpu_over_250ms": phase["tick_gap_gui_cpu"].get("over_250ms"),
            "costliest_callback": None if ours is None else [ours[0], ours[1]["max_cpu_ms"]],
            "load_average": phase.get("load_average")}


def _use_package_dir(path: str) -> None:
    """Import napari_cellularity from ``path``: drop the editable install's finder, put ``path`` first."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in str(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in str(h)]
    sys.path.insert(0, os.path.abspath(path))
    import napari_cellularity

    if not napari_cellularity.__file__.startswith(os.path.abspath(path)):
        raise SystemExit(f"could not import napari_cellularity from {path} (got {napari_cellularity.__file__})")
    print(f"benchmarking {napari_cellularity.__file__}", file=sys.stderr)


def _copy_thumbnails() -> None:
    """Experiment (``--copy-thumbnails``): layer-list thumbnails as QImages that own their pixels."""
    from napari._qt.containers import qt_layer_model

    original = qt_layer_model.QtLayerListModel.data

    def data(self, index, role=qt_layer_model.Qt.ItemDataRole.DisplayRole):
        if role != qt_layer_model.ThumbnailRole or not index.isValid():
            return original(self, index, role)
        thumb = np.ascontiguousarray(self.getItem(index).thumbnail)  # alive until the copy is made
        image = qt_layer_model.QImage(thumb.data, thumb.shape[1], thumb.shape[0],
                                      qt_layer_model.QImage.Format.Format_RGBA8888)
        return image.copy()

    qt_layer_model.QtLayerListModel.data = data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="segmentation model (name or name@version; default: the default)")
    p.add_argument("--window", type=int, nargs=2, default=(1366, 768), help="window width height")
    p.add_argument("--image", default=None, help="slide/image file (default: synthetic H&E patch)")
    p.add_argument("--size", type=int, default=1024, help="synthetic image side in px")
    p.add_argument("--mpp", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--cancel-after", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--skip", nargs="*", default=[], choices=["warm", "cancel", "error"])
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--copy-thumbnails", action="store_true",
                   help="experiment: napari's layer list builds each thumbnail QImage on a temporary bytes object; "
                        "patch it to return an owning copy (to test whether that is the native crash in its paint)")
    p.add_argument("--package-dir", default=None, metavar="DIR",
                   help="benchmark the napari_cellularity package in DIR (an older checkout, e.g. from "
                        "`git archive REV napari_cellularity | tar -x -C DIR`) instead of the installed one")
    p.add_argument("--sample-stalls", action="store_true",
                   help="sample the GUI thread's stack during stalls (see the module docstring: it can crash)")
    p.add_argument("--profile-gui", default=None, metavar="FILE.prof",
                   help="cProfile the GUI thread during the cold run and write the stats here")
    args = p.parse_args(argv)
    if args.package_dir:
        _use_package_dir(args.package_dir)
    import faulthandler

    faulthandler.enable(all_threads=True)  # a native crash prints every thread's Python stack
    GC_LOG.install()
    os.environ["NAPARI_CELLULARITY_SYNC"] = "0"  # the threaded path is what we measure
    if args.copy_thumbnails:
        _copy_thumbnails()
    import torch

    torch.set_num_threads(args.threads)
    viewer, widget, app = build(args)
    probe = Probe(viewer)
    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(probe.tick)
    timer.start()
    results: dict[str, Any] = {"args": vars(args), "canvas_px": list(viewer.canvas.size),
                               "load_average_start": os.getloadavg()}
    t_idle = time.perf_counter()
    pump(app, probe, lambda: time.perf_counter() - t_idle > 3.0, 10.0)
    results["idle"] = probe.summary(t_idle)
    print(f"idle: {results['idle']}", file=sys.stderr, flush=True)
    sampler, imports = (StallSampler(probe) if args.sample_stalls else None), ImportLog()
    if sampler is not None:
        sampler.start()
    imports.install()
    profiler = None
    if args.profile_gui:
        import cProfile

        profiler = cProfile.Profile()  # profiles the calling (GUI) thread only
        profiler.enable()
    results["run_cold"] = run_phase(app, probe, widget, args.timeout, sampler=sampler, imports=imports)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile_gui)
    results["run_cold"]["region_rc"] = [widget.run_inputs["box"].rows, widget.run_inputs["box"].cols]
    results["layers"] = [lay.name for lay in viewer.layers]
    probe.reset()  # the same pan/zoom with the result layers shown and no job: the drawing baseline
    t_idle = time.perf_counter()
    pump(app, probe, lambda: time.perf_counter() - t_idle > 3.0, 10.0)
    results["idle_with_results"] = {**probe.summary(t_idle), "load_average": os.getloadavg()}
    print(f"idle with results: {results['idle_with_results']}", file=sys.stderr, flush=True)
    if "warm" not in args.skip:
        results["run_warm"] = run_phase(app, probe, widget, args.timeout, sampler=sampler)
    if "cancel" not in args.skip:
        results["cancel"] = run_phase(app, probe, widget, args.timeout, cancel_after=args.cancel_after)
    if "error" not in args.skip:
        results["error"] = error_phase(app, probe, widget, args.timeout)
    timer.stop()
    if sampler is not None:
        sampler.stop()
    results["load_average_end"] = os.getloadavg()
    runs = [results[k] for k in ("run_cold", "run_warm") if k in results]
    results["max_gap_ms_during_runs"] = max(r["tick_gap"].get("max_ms", 0.0) for r in runs)
    results["headline"] = {k: headline(results[k]) for k in ("idle", "run_cold", "idle_with_results", "run_warm")
                           if k in results}
    print(f"headline: {json.dumps(results['headline'])}", file=sys.stderr, flush=True)
    results["verdict"] = ("ok" if results["max_gap_ms_during_runs"] <= MAX_GAP_MS
                          else f"GUI stalled > {MAX_GAP_MS:.0f} ms")
    text = json.dumps(results, indent=1, default=str)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
