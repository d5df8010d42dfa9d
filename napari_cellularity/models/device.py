"""Device selection: CUDA with autocast when available, CPU otherwise. One place for it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import PRECISIONS

log = logging.getLogger(__name__)

#: Tiles per forward pass on the CPU (and on CUDA when the user sets none and memory cannot be measured).
DEFAULT_BATCH_SIZE = 4
#: Largest automatic batch on CUDA (beyond it a bigger batch no longer speeds up a 256-512 px tile FPN).
AUTO_BATCH_MAX = 64
#: Share of the free GPU memory the tiles of an automatic batch may take; the rest is headroom for
#: allocator fragmentation, cuDNN workspaces that grow with the batch, the blended strip and other programs.
AUTO_BATCH_MEMORY_SHARE = 0.6


class DeviceError(RuntimeError):
    """The requested device cannot be used."""


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is, for display in the UI and summaries."""

    device: str
    name: str
    total_mem_gb: float | None = None
    free_mem_gb: float | None = None


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device to use.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises
    ------
    DeviceError
        If CUDA is requested but not available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unsupported device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no CUDA GPU is available; use device='cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"unsupported device {device!r}; use auto, cpu or cuda")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"{device!r} requested but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return dev


def describe_devices() -> list[DeviceInfo]:
    """List usable devices with names and memory (free memory for GPUs)."""
    infos = [DeviceInfo("cpu", "CPU")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            infos.append(
                DeviceInfo(f"cuda:{i}", torch.cuda.get_device_name(i), total / 2**30, free / 2**30)
            )
    return infos


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX); emulated bf16 would be slower."""
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private API: absent in other torch builds
        return False


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """The compute precision ``autocast_context`` will use: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast_context(device: torch.device, enabled: bool = True, precision: str | None = None):
    """Mixed precision on CUDA (bf16 where supported, else fp16); on the CPU only with ``precision="auto"``
    and native bf16 (2x faster there, validation F1 within 0.002 of fp32). ``precision=None`` keeps the CPU
    in fp32 (training validation, reports)."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cpu" and precision is None:
        return contextlib.nullcontext()
    chosen = resolve_precision(device, precision or "auto")
    if chosen == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if chosen == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error (so callers can retry smaller or on CPU)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def batch_from_memory(free_bytes: int, per_tile_bytes: int, cap: int = AUTO_BATCH_MAX,
                      share: float = AUTO_BATCH_MEMORY_SHARE) -> int:
    """Tiles per batch that fit ``share`` of ``free_bytes`` at ``per_tile_bytes`` each, in ``1 .. cap``."""
    return int(max(1, min(int(cap), int(free_bytes * share) // max(1, int(per_tile_bytes)))))


def auto_batch_size(device: torch.device, probe: Callable[[int], object]) -> tuple[int, str]:
    """Tiles per forward pass when the user chose none: :data:`DEFAULT_BATCH_SIZE` on the CPU; on CUDA
    measured from free memory.

    ``probe(n)`` must run the real forward pass (precision, test-time augmentation) on ``n`` tiles. It is
    run once on one tile: its peak memory above what was allocated before (``torch.cuda.max_memory_allocated``:
    input, activations, outputs, workspaces) is the per-tile cost, counted in full for every tile of a
    batch (conservative: weights and fixed workspaces are not per tile). The batch is then
    :func:`batch_from_memory` of the free memory (``torch.cuda.mem_get_info``, after releasing cached
    blocks). A batch that still runs out of memory is halved by the caller.

    Returns
    -------
    (int, str)
        The batch size and a line saying how it was chosen (also logged).
    """
    if device.type != "cuda":
        return DEFAULT_BATCH_SIZE, f"batch size {DEFAULT_BATCH_SIZE} on the CPU"
    try:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        allocated = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        probe(1)
        torch.cuda.synchronize(device)
        per_tile = max(1, torch.cuda.max_memory_allocated(device) - allocated)
        torch.cuda.empty_cache()
        free, _total = torch.cuda.mem_get_info(device)
    except Exception as exc:  # noqa: BLE001 - out of memory on one tile: the smallest batch; the rest re-raised
        if not is_out_of_memory(exc):
            raise
        torch.cuda.empty_cache()
        message = "batch size 1: one tile already fills the GPU memory"
        log.info(message)
        return 1, message
    batch = batch_from_memory(free, per_tile)
    message = (f"batch size {batch} chosen from {free / 2**30:.1f} GiB free GPU memory "
               f"({per_tile / 2**20:.0f} MiB per tile, at most {AUTO_BATCH_MAX})")
    log.info(message)
    return batch, message
