"""drain / relay: the helpers that progress-yielding compute generators are run and wrapped with."""

from __future__ import annotations

from napari_cellularity.progress import drain, relay


def _counting(n: int, log: list):
    try:
        for i in range(n):
            yield {"step": i + 1}
        return "result"
    finally:
        log.append("closed")


def test_relay_transforms_records_and_keeps_the_return_value():
    log: list = []
    seen = []
    out = drain(relay(_counting(3, log), lambda r: r["step"] * 10), seen.append)
    assert seen == [10, 20, 30] and out == "result" and log == ["closed"]


def test_relay_closes_the_wrapped_generator_when_closed_early():
    log: list = []
    wrapped = relay(_counting(100, log), lambda r: r)
    assert next(wrapped) == {"step": 1}
    wrapped.close()  # what a cancelled worker does
    assert log == ["closed"]


def test_relay_under_yield_from_passes_the_return_value():
    def outer():
        value = yield from relay(_counting(2, []), str)
        return value.upper()

    assert drain(outer()) == "RESULT"
