"""freeze_loaded_heap: never in the synchronous (test) mode; in the app, once, with the collector running after."""

from __future__ import annotations

import gc

from napari_cellularity.widgets import _heap


def test_no_freeze_in_the_synchronous_mode(monkeypatch):
    monkeypatch.setenv("NAPARI_CELLULARITY_SYNC", "1")
    before = gc.get_freeze_count()
    assert _heap.freeze_loaded_heap.__wrapped__() is False
    assert gc.get_freeze_count() == before and gc.isenabled()


def test_freeze_imports_then_freezes_and_reenables_the_collector(monkeypatch):
    monkeypatch.setenv("NAPARI_CELLULARITY_SYNC", "0")
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(gc.isenabled()))  # not the test process's heap
    assert _heap.freeze_loaded_heap.__wrapped__() is True
    assert frozen == [False] and gc.isenabled()  # frozen while paused, running again after
