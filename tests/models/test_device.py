"""Automatic batch size: CPU keeps its default, CUDA measures free memory and one tile's cost (faked here)."""

from __future__ import annotations

import pytest
import torch

from napari_cellularity.models import device as dev
from napari_cellularity.models.device import (
    AUTO_BATCH_MAX,
    DEFAULT_BATCH_SIZE,
    auto_batch_size,
    batch_from_memory,
)

GIB, MIB = 2**30, 2**20


def test_batch_from_memory_fits_the_share_and_the_cap():
    assert batch_from_memory(10 * GIB, 100 * MIB, share=0.6) == 61  # floor(6 GiB / 100 MiB)
    assert batch_from_memory(1000 * GIB, 100 * MIB) == AUTO_BATCH_MAX
    assert batch_from_memory(50 * MIB, 100 * MIB) == 1  # never zero
    assert batch_from_memory(GIB, 0) == AUTO_BATCH_MAX  # a probe that measured nothing


def _fake_cuda(monkeypatch, free_bytes, per_tile_bytes, oom_on_probe=False):
    state = {"allocated": 3 * GIB, "peak": 3 * GIB, "probes": []}

    def probe(n):
        state["probes"].append(n)
        if oom_on_probe:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        state["peak"] = state["allocated"] + n * per_tile_bytes

    def reset(device=None):
        state["peak"] = state["allocated"]

    for name, fn in {"synchronize": lambda device=None: None, "empty_cache": lambda: None,
                     "memory_allocated": lambda device=None: state["allocated"], "reset_peak_memory_stats": reset,
                     "max_memory_allocated": lambda device=None: state["peak"],
                     "mem_get_info": lambda device=None: (free_bytes, 80 * GIB)}.items():
        monkeypatch.setattr(dev.torch.cuda, name, fn)
    return probe, state


def test_cuda_batch_from_free_memory_and_one_probed_tile(monkeypatch, caplog):
    probe, state = _fake_cuda(monkeypatch, free_bytes=20 * GIB, per_tile_bytes=500 * MIB)
    with caplog.at_level("INFO", logger=dev.__name__):
        batch, message = auto_batch_size(torch.device("cuda:0"), probe)
    assert state["probes"] == [1]
    assert batch == int(20 * GIB * dev.AUTO_BATCH_MEMORY_SHARE) // (500 * MIB) == 24
    assert message.startswith("batch size 24 chosen from 20.0 GiB free GPU memory (500 MiB per tile")
    assert message in caplog.text  # logged


def test_cuda_batch_is_capped(monkeypatch):
    probe, _ = _fake_cuda(monkeypatch, free_bytes=139 * GIB, per_tile_bytes=60 * MIB)
    assert auto_batch_size(torch.device("cuda"), probe)[0] == AUTO_BATCH_MAX


def test_cuda_probe_out_of_memory_gives_batch_one(monkeypatch):
    probe, _ = _fake_cuda(monkeypatch, free_bytes=GIB, per_tile_bytes=GIB, oom_on_probe=True)
    assert auto_batch_size(torch.device("cuda"), probe)[0] == 1


def test_cuda_probe_other_errors_are_not_hidden(monkeypatch):
    _fake_cuda(monkeypatch, free_bytes=GIB, per_tile_bytes=GIB)

    def broken(n):
        raise ValueError("wrong tile shape")

    with pytest.raises(ValueError, match="wrong tile shape"):
        auto_batch_size(torch.device("cuda"), broken)


def test_cpu_keeps_its_default_and_runs_no_probe():
    calls = []
    assert auto_batch_size(torch.device("cpu"), calls.append)[0] == DEFAULT_BATCH_SIZE
    assert calls == []
