"""Model registry: shipped models (package data) + user models (per-user data dir).

A model is ``<stem>.json`` (config, with a ``kind`` field) beside its weights
(``<stem>.safetensors`` for networks, ``<stem>.txt`` for LightGBM). Entries are found by
scanning the two folders; nothing is kept in a hand-edited list. Set
``NAPARI_CELLULARITY_HOME`` to move the user folder (tests do).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import atomic_path, user_data_dir
from .config import ModelConfigError, SegmentationConfig, read_json

if TYPE_CHECKING:
    import torch

DEFAULT_SEGMENTATION_MODEL = "fpn-resnet34-brca"


class ModelNotFoundError(LookupError):
    """No registered model matches the requested name / version."""


class ModelFileError(ValueError):
    """A weights file is missing, truncated, foreign or fails its hash check."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered model."""

    name: str
    version: int
    kind: str
    config_path: Path
    source: str  # "shipped" or "user"
    #: Regressors: the segmentation model (``name@version``) whose maps they were trained on.
    segmentation_model: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def weights_path(self, suffix: str = ".safetensors") -> Path:
        return self.config_path.with_suffix(suffix)


ENV_SHIPPED = "NAPARI_CELLULARITY_SHIPPED_MODELS"


def shipped_models_dir() -> Path:
    """Models shipped with the package (``$NAPARI_CELLULARITY_SHIPPED_MODELS`` overrides: tests)."""
    env = os.environ.get(ENV_SHIPPED)
    return Path(env) if env else Path(__file__).parent / "weights"


def user_models_dir() -> Path:
    return user_data_dir() / "models"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelRegistryWarning(UserWarning):
    """A file in a model folder is not a usable model config; it is skipped (and named)."""


def _entry(data: dict, cfg: Path, source: str) -> ModelEntry:
    """A :class:`ModelEntry` from a config's JSON; :class:`ModelConfigError` naming the file when malformed."""
    missing = [k for k in ("name", "version", "kind") if k not in data]
    if missing:
        raise ModelConfigError(f"model config {cfg} lacks {missing}")
    name, version, kind = data["name"], data["version"], data["kind"]
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise ModelConfigError(f"model config {cfg}: 'name' must be a plain text name, got {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelConfigError(f"model config {cfg}: 'version' must be an integer >= 1, got {version!r}")
    if not isinstance(kind, str):
        raise ModelConfigError(f"model config {cfg}: 'kind' must be text, got {kind!r}")
    seg = data.get("segmentation_model")
    if seg is not None and not isinstance(seg, str):
        raise ModelConfigError(f"model config {cfg}: 'segmentation_model' must be text, got {seg!r}")
    return ModelEntry(name, version, kind, cfg, source, seg)


def scan_models() -> tuple[list[ModelEntry], list[tuple[Path, str]]]:
    """Every model config in the shipped and user folders: (entries, [(path, problem)] of unusable files)."""
    entries: list[ModelEntry] = []
    problems: list[tuple[Path, str]] = []
    for source, folder in (("shipped", shipped_models_dir()), ("user", user_models_dir())):
        if not folder.is_dir():
            continue
        for cfg in sorted(folder.glob("*.json")):
            try:
                entries.append(_entry(read_json(cfg), cfg, source))
            except (ModelConfigError, OSError) as exc:
                problems.append((cfg, str(exc)))
    return entries, problems


def list_models(kind: str | None = None) -> list[ModelEntry]:
    """All registered models (optionally of one ``kind``), sorted by name then version.

    Unusable config files are skipped with a :class:`ModelRegistryWarning` that names them.
    """
    entries, problems = scan_models()
    for _cfg, problem in problems:
        warnings.warn(f"{problem}; this model is skipped", ModelRegistryWarning, stacklevel=2)
    entries = [e for e in entries if kind is None or e.kind == kind]
    return sorted(entries, key=lambda e: (e.name, e.version, e.source))


def _has_hash(data: dict) -> bool:
    hashes = data.get("hashes")
    return bool(data.get("weights_sha256") or (isinstance(hashes, dict) and hashes.get("weights_sha256")))


def require_hash(entry: ModelEntry) -> None:
    """Refuse a model of the user folder whose config records no weights hash.

    Shipped models all carry one; a config passed by path is the caller's explicit choice
    (its weights are still checked for NaN / infinity and structure when loaded).

    Raises
    ------
    ModelFileError
        The config has no ``weights_sha256``: its weights cannot be verified.
    """
    if entry.source != "user":
        return
    if not _has_hash(read_json(entry.config_path)):
        raise ModelFileError(
            f"model {entry.ref} ({entry.config_path}) records no weights hash (weights_sha256), so its weights "
            "cannot be verified; save it again with napari-cellularity (training and fine-tuning record it)")


def find_model(ref: str | None, kind: str) -> ModelEntry:
    """Resolve ``"name"`` (latest version), ``"name@3"`` or a path to a ``.json`` config.

    ``None`` picks the newest model of ``kind`` named like the default, else any model of
    that kind.
    """
    if ref and (ref.endswith(".json") or os.sep in ref) and Path(ref).exists():
        data = read_json(ref)
        return _entry({"kind": kind, **data}, Path(ref), "file")
    entries = list_models(kind)
    if not entries:
        raise ModelNotFoundError(f"no {kind} model is installed (looked in {shipped_models_dir()} and {user_models_dir()})")
    if ref is None and kind == "segmentation":  # chosen explicitly, never "newest" (models/defaults.py)
        from .defaults import resolve_default

        return resolve_default(entries, kind)
    if ref is None:
        default = [e for e in entries if e.name.startswith(DEFAULT_SEGMENTATION_MODEL)] or entries
        return max(default, key=lambda e: (e.source == "user", e.version))
    name, _, version = ref.partition("@")
    if version and not version.isdigit():
        raise ModelNotFoundError(f"bad model reference {ref!r}: use NAME or NAME@VERSION with an integer version")
    matches = [e for e in entries if e.name == name and (not version or e.version == int(version))]
    if not matches:
        known = ", ".join(e.ref for e in entries)
        raise ModelNotFoundError(f"no {kind} model {ref!r}; installed: {known}")
    return max(matches, key=lambda e: e.version)


def next_version(name: str) -> int:
    """The next free version number for ``name`` across shipped and user models."""
    versions = [e.version for e in list_models() if e.name == name]
    return max(versions, default=0) + 1


def save_segmentation_model(
    net: torch.nn.Module, config: SegmentationConfig, folder: str | Path | None = None
) -> Path:
    """Save weights (safetensors, ``config.weights_dtype``) + JSON config; returns the JSON path.

    Files are written under temporary names and renamed, so a crash never leaves a half model.
    """
    import torch
    from safetensors.torch import save_file

    folder = Path(folder) if folder is not None else user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{config.name}-v{config.version}"
    weights = folder / f"{stem}.safetensors"
    dtype = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}[config.weights_dtype]
    state = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in net.state_dict().items()
    }
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"name": config.name, "version": str(config.version)})
    config.weights_sha256 = file_sha256(weights)
    cfg_path = folder / f"{stem}.json"
    config.save(cfg_path)
    return cfg_path


def load_segmentation_model(
    ref: str | None = None, device: str | torch.device | None = "cpu"
) -> tuple[torch.nn.Module, SegmentationConfig]:
    """Load a registered segmentation model (eval mode, fp32 on ``device``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .device import select_device
    from .fpn import build_network

    entry = find_model(ref, "segmentation")
    require_hash(entry)
    config = SegmentationConfig.load(entry.config_path)
    weights = entry.weights_path()
    if not weights.exists():
        raise ModelFileError(f"weights file missing for {entry.ref}: {weights}")
    if config.weights_sha256 and file_sha256(weights) != config.weights_sha256:
        raise ModelFileError(f"weights file {weights} does not match its recorded hash (corrupt or replaced)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"cannot read weights {weights}: {exc}") from None
    check_finite(state, weights)
    try:
        net = build_network(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"model config {entry.config_path}: unusable architecture: {exc}") from None
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelFileError(f"weights {weights} do not fit the architecture in its config: {exc}") from None
    net = net.to(select_device(device)).eval()
    return net, config


def check_finite(state: dict, weights: str | Path) -> None:
    """Raise :class:`ModelFileError` naming the first tensor of ``state`` holding NaN or infinity."""
    import numpy as np
    import torch

    for key, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
            finite = bool(torch.isfinite(tensor).all())
        else:  # numpy is several times faster than torch here for float16
            finite = bool(np.isfinite(tensor.detach().cpu().numpy()).all())
        if not finite:
            raise ModelFileError(f"weights {weights}: tensor {key!r} holds NaN or infinite values (corrupt model)")


#: Lines every LightGBM text model has before its trees.
_LGBM_HEADER_KEYS = ("version=", "num_class=", "max_feature_idx=", "tree_sizes=")


def check_lightgbm_text(text: str, path: str | Path) -> None:
    """Check that a LightGBM text model is complete before LightGBM parses it.

    LightGBM aborts the whole process (``terminate called``, or a segmentation fault) on many
    truncated or corrupt model files, so the structure is verified here: the header keys,
    every tree at the byte offset and of the size ``tree_sizes`` records, ``end of trees``,
    the parameters block and the final ``pandas_categorical`` line.

    Raises
    ------
    ModelFileError
        The text is truncated or malformed (the message names the file and what is missing).
    """
    def bad(problem: str) -> ModelFileError:
        return ModelFileError(f"LightGBM model {path} is truncated or corrupt: {problem}")

    if not text.startswith("tree\n"):
        raise bad("it does not start with 'tree'")
    head, sep, rest = text.partition("\n\n")
    lines = head.split("\n")
    for key in _LGBM_HEADER_KEYS:
        if not any(line.startswith(key) for line in lines):
            raise bad(f"no '{key[:-1]}' line")
    sizes_text = next(line for line in lines if line.startswith("tree_sizes="))[len("tree_sizes="):]
    try:
        sizes = [int(v) for v in sizes_text.split()]
    except ValueError:
        raise bad("'tree_sizes' is not a list of integers") from None
    data, offset = rest.encode("utf-8"), 0
    for i, size in enumerate(sizes):
        block = data[offset:offset + size]
        if size <= 0 or len(block) != size or not block.startswith(f"Tree={i}\n".encode()) \
                or b"leaf_value=" not in block:
            raise bad(f"tree {i} of {len(sizes)} is missing or cut")
        offset += size
    tail = data[offset:].decode("utf-8", errors="replace")
    if "end of trees" not in tail[:200] or "end of parameters" not in tail:
        raise bad("the end of the trees or of the parameters is missing")
    if not tail.rstrip("\n").rsplit("\n", 1)[-1].startswith("pandas_categorical:"):
        raise bad("the final 'pandas_categorical' line is missing")
