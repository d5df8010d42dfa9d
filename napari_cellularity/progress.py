"""The one progress record every long compute generator yields, and helpers to run them.

Every long computation in this package (prediction, analysis, training, fine-tuning,
cellularity refits) is a generator that yields :class:`Progress` records and returns its
result. Widgets run them in napari's ``thread_worker`` and read ``done`` / ``total`` /
``message``; the command line runs them with :func:`drain`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

R = TypeVar("R")

#: What a record reports: ``start`` (total known), ``tile`` (one tile finished), ``notice``
#: (a message for the user), ``stage`` (a named step of a longer job began or ended),
#: ``step`` (one optimisation step; ``data`` holds loss and learning rate), ``validation``
#: (a held-out evaluation; ``data`` holds its metrics).
ProgressKind = Literal["start", "tile", "notice", "stage", "step", "validation"]


@dataclass(frozen=True, eq=False)
class Progress:
    """One progress report.

    Attributes
    ----------
    kind : ProgressKind
    done, total : int
        Units finished out of ``total`` (0 when unknown: a bare notice).
    message : str
        Human-readable line for a status bar.
    stage : str
        Name of the job's stage (e.g. ``"maps"``, ``"cv"``, ``"before"``, ``"saved"``).
    data : Mapping
        Numbers and small values that belong to the record (loss, lr, metrics, model ref).
    tile_index : int or None
        For ``kind="tile"``: index of the finished tile in its grid.
    bounds_level0 : tuple of int or None
        For ``kind="tile"``: (row0, col0, row1, col1) of the tile in level-0 pixels.
    tile_probs : ndarray of shape (C, h, w) or None
        For ``kind="tile"``: the tile's uint8 probabilities at the model mpp.
    """

    kind: ProgressKind
    done: int = 0
    total: int = 0
    message: str = ""
    stage: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    tile_index: int | None = None
    bounds_level0: tuple[int, int, int, int] | None = None
    tile_probs: Any = None


def notice(message: str, done: int = 0, total: int = 0) -> Progress:
    """A ``notice`` record (``Progress("notice", ..., message=...)``)."""
    return Progress("notice", done, total, message)


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
