"""Helpers for the progress-yielding generators that long compute functions are written as."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

R = TypeVar("R")


def drain(gen: Generator[Any, None, R], progress: Callable[[Any], None] | None = None) -> R:
    """Run ``gen`` to the end, passing each yielded record to ``progress``; return its return value.

    The plain-function twin of wrapping the generator in napari's ``thread_worker``: CLI and
    scripts use this, widgets use the worker, both get the same records and result.
    """
    while True:
        try:
            record = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(record)
