"""Checkpoints of a training run folder: ``best.pt``, ``last.pt`` (+ optimizer), ``state.json``.

Every file is written atomically (:func:`napari_cellularity.files.atomic_path`), so a run killed
while saving resumes from the previous checkpoint. Loading never unpickles code
(``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from napari_cellularity.files import atomic_path, write_text_atomic

#: Fresh run state: steps done, best validation score, evaluations since it, validation records.
NEW_RUN_STATE: dict[str, Any] = {"step": 0, "best_score": -1.0, "evals_since_best": 0, "history": []}


def save_state_dict(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` atomically."""
    import torch

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_last(run_dir: str | Path, net: Any, optimizer: Any, state: dict) -> None:
    """Write ``last.pt`` (network + optimizer) and ``state.json`` (the run state) for resuming."""
    run_dir = Path(run_dir)
    save_state_dict({"model": net.state_dict(), "optimizer": optimizer.state_dict()}, run_dir / "last.pt")
    write_text_atomic(run_dir / "state.json", json.dumps(state, indent=1))


def resume(run_dir: str | Path, net: Any, optimizer: Any, device: Any) -> dict | None:
    """Load ``last.pt`` into ``net`` and ``optimizer``; return the run state, or None for a fresh run."""
    import torch

    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    if not last.exists():
        return None
    ckpt = torch.load(last, map_location=device, weights_only=True)
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return json.loads((run_dir / "state.json").read_text())


def load_network_state(path: str | Path) -> dict:
    """A network state dict from a checkpoint file (plain state dict or ``{"model": ...}``); never unpickles code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / foreign file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: no network state in this checkpoint")
    return state


def load_best(run_dir: str | Path, config: Any, device: str = "auto") -> tuple[Any, dict]:
    """The run's best network (``best.pt``, else ``last.pt``) in eval mode, and its validation record.

    Returns
    -------
    net : torch.nn.Module
        Built from ``config`` on ``device``.
    best : dict
        The validation record with the highest score (``{}`` when the run never validated).
    """
    from napari_cellularity.models.device import select_device
    from napari_cellularity.models.fpn import build_network

    run_dir = Path(run_dir)
    state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").exists() else {"history": []}
    net = build_network(config)
    path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    net.load_state_dict(load_network_state(path))
    best = max(state["history"], key=lambda r: r.get("score", -1), default={})
    return net.to(select_device(device)).eval(), best


@contextlib.contextmanager
def fresh_run_dir(run_dir: str | Path | None, stem: str):
    """A new, empty folder: a temporary one (removed afterwards) or ``run_dir/<stem>-<time>``."""
    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="nc-finetune-") as tmp:
            yield Path(tmp)
        return
    path = Path(run_dir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    k = 1
    while path.exists():
        path, k = Path(f"{path}-{k}"), k + 1
    path.mkdir(parents=True)
    yield path
