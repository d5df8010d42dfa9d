"""Which model is the default, which versions are only candidates, and which classes a model learned.

* The default model of each kind is chosen **explicitly** ("Set as default" in the Analyze
  widget) and stored in ``<user data>/default_models.json``; nothing becomes the default by
  being the newest. Without a stored choice the default is the newest *shipped* model named
  like :data:`~napari_cellularity.models.registry.DEFAULT_SEGMENTATION_MODEL` (the shipped
  default), and :func:`restore_shipped_default` goes back to it.
* A **candidate** is a fine-tuned version that scored worse than its base on some class
  (``training.finetune`` records ``metrics.finetune.guard.candidate = true``). It is saved, but
  it is never the default and never selected without an explicit, warned confirmation
  (:class:`CandidateModelError` otherwise).
* :func:`class_evidence` / :func:`untrained_classes`: a class the model never saw annotated
  cells of (e.g. the shipped model's ``normal`` channel: its training and validation data hold
  no normal-epithelium points) is reported as untrained so the UI can grey it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import user_data_dir, write_json_atomic
from .config import CELL_CLASSES, ModelConfigError, read_json
from .registry import DEFAULT_SEGMENTATION_MODEL

DEFAULTS_FILE = "default_models.json"


class CandidateModelError(ValueError):
    """A candidate (worse than its base) was asked to become the default without confirmation."""


def defaults_path() -> Path:
    """``<user data>/default_models.json`` (follows ``NAPARI_CELLULARITY_HOME``)."""
    return user_data_dir() / DEFAULTS_FILE


def _read_choices() -> dict[str, str]:
    path = defaults_path()
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except ModelConfigError:
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def chosen_default(kind: str = "segmentation") -> str | None:
    """The ``name@version`` the user set as default for ``kind``, or None (shipped default)."""
    return _read_choices().get(kind)


def candidate_reason(config_path: str | Path) -> str | None:
    """Why the model at ``config_path`` is a candidate (e.g. ``"worse on lymphocyte"``), or None."""
    try:
        data = read_json(config_path)
    except ModelConfigError:
        return None
    guard = ((data.get("metrics") or {}).get("finetune") or {}).get("guard") or {}
    if not guard.get("candidate"):
        return None
    worse = guard.get("worse_classes") or []
    return "worse than its base on " + ", ".join(worse) if worse else "worse than its base"


def set_default(entry: Any, kind: str = "segmentation", *, confirmed_candidate: bool = False) -> str:
    """Make the registry entry ``entry`` (a ``ModelEntry``) the default of ``kind``; returns its ref.

    Raises
    ------
    CandidateModelError
        ``entry`` is a candidate and ``confirmed_candidate`` is False.
    """
    reason = candidate_reason(entry.config_path)
    if reason and not confirmed_candidate:
        raise CandidateModelError(f"{entry.ref} is a candidate ({reason}); confirm to make it the default")
    write_json_atomic(defaults_path(), {**_read_choices(), kind: entry.ref})
    return entry.ref


def restore_shipped_default(kind: str = "segmentation") -> None:
    """Forget the user's choice for ``kind``: the shipped default is used again."""
    choices = _read_choices()
    if choices.pop(kind, None) is not None:
        write_json_atomic(defaults_path(), choices)


def shipped_default(entries: Sequence[Any]) -> Any | None:
    """Newest shipped entry named like the shipped default, else newest shipped, else None."""
    shipped = [e for e in entries if e.source == "shipped"]
    named = [e for e in shipped if e.name.startswith(DEFAULT_SEGMENTATION_MODEL)] or shipped
    return max(named, key=lambda e: e.version) if named else None


def resolve_default(entries: Sequence[Any], kind: str = "segmentation") -> Any:
    """The default among registry ``entries`` (non-empty): the stored choice, the shipped default,
    else the newest entry that is not a candidate (else the newest).
    """
    choice = chosen_default(kind)
    for e in entries:
        if e.ref == choice:
            return e
    found = shipped_default(entries)
    if found is not None:
        return found
    ok = [e for e in entries if candidate_reason(e.config_path) is None] or list(entries)
    named = [e for e in ok if e.name.startswith(DEFAULT_SEGMENTATION_MODEL)] or ok
    return max(named, key=lambda e: (e.source == "user", e.version))


def class_evidence(config: Any) -> dict[str, int] | None:
    """Annotated cells of each class the model was trained or validated on, or None if unrecorded.

    Reads every per-class ``metrics.<evaluation>.n_true`` and ``training.finetune.cell_counts``
    of the model and, recursively, of the base it was fine-tuned from (``metrics.base``,
    ``training.base_training``).
    """
    metrics, training = dict(config.metrics or {}), dict(config.training or {})
    return _evidence(metrics, training, depth=0)


def _evidence(metrics: dict, training: dict, depth: int) -> dict[str, int] | None:
    found: dict[str, int] = {}
    sources = [v.get("n_true") for k, v in metrics.items() if isinstance(v, dict) and k != "base"]
    sources.append((training.get("finetune") or {}).get("cell_counts"))
    for counts in sources:
        if isinstance(counts, dict):
            for cls in CELL_CLASSES:
                found[cls] = found.get(cls, 0) + int(counts.get(cls, 0) or 0)
    if depth < 20 and (isinstance(metrics.get("base"), dict) or isinstance(training.get("base_training"), dict)):
        base = _evidence(metrics.get("base") or {}, training.get("base_training") or {}, depth + 1)
        for cls, n in (base or {}).items():
            found[cls] = found.get(cls, 0) + n
    return found or None


def untrained_classes(config: Any) -> tuple[str, ...]:
    """Cell classes of ``config`` with no annotated cell in its recorded training / validation data.

    Models without any record (e.g. hand-built test models) report nothing as untrained.
    """
    evidence = class_evidence(config)
    if evidence is None:
        return ()
    return tuple(c for c in CELL_CLASSES if c in config.class_names and evidence.get(c, 0) == 0)
