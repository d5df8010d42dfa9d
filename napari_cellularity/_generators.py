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


def relay(gen: Generator[Any, None, R], transform: Callable[[Any], Any]) -> Generator[Any, None, R]:
    """Re-yield ``transform(record)`` for each record of ``gen`` and return ``gen``'s return value.

    ``gen`` is closed when the relay is closed (a cancelled worker), so its ``finally`` blocks run.
    (``yield from`` over a generator expression would drop the wrapped generator's return value.)
    """
    try:
        while True:
            try:
                record = next(gen)
            except StopIteration as stop:
                return stop.value
            yield transform(record)
    finally:
        gen.close()
