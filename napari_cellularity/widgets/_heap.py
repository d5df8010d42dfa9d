"""Keep Python's full garbage collections short once napari and the model's libraries are loaded.

A full (generation-2) cyclic collection walks every tracked object. With napari, Qt and torch loaded
that is ~a million objects, 0.4-0.9 s of CPU on a loaded 2-core machine, and it runs on whichever
thread allocates at the time: on the GUI thread it freezes the viewer, on the analysis worker it holds
the GIL and freezes it just the same (measured with ``benchmarks/bench_gui_responsiveness.py``, its
``gc`` entries of ``worst_gaps``). Almost all of those objects are modules, classes and functions that
live as long as the process, so :func:`freeze_loaded_heap` moves them out of the collector's reach
(:func:`gc.freeze`) once, after the model's imports; later collections only walk what was made since.

The cost: cyclic garbage that exists at that moment is never collected (the imports' own temporaries,
small), and neither is an object alive then that later becomes unreachable only through a reference
cycle — e.g. a layer already open at the first Run that the user closes afterwards may keep its memory
until napari exits (reference counting still frees everything not in a cycle). Bounded: once per
process, by what was open at the first Run. Called in the worker, before the first analysis.
"""

from __future__ import annotations

import functools
import gc

from ._activity import is_sync


@functools.cache
def freeze_loaded_heap() -> bool:
    """Import the model's libraries with the cyclic collector paused, then :func:`gc.freeze` the heap.

    Returns True when it froze (once per process; later calls return the cached value). Not in the
    synchronous mode (tests): a frozen viewer of one test could never be collected in the next.
    """
    if is_sync():
        return False
    enabled = gc.isenabled()
    gc.disable()  # no full collections (GIL held for ~1 s each) while torch and smp import
    try:
        from . import _layers

        _layers.preload_display_modules()  # first: the layers made at the Run click need them now
        from .. import analysis  # noqa: F401 - the analysis modules
        from ..models import fpn  # noqa: F401 - torch, segmentation_models_pytorch
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
    return True
