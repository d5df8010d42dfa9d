"""Model registry: shipped models (package data) + user models (per-user data dir).

A model is ``<stem>.json`` (config, with a ``kind`` field) beside its weights
(``<stem>.safetensors`` for networks, ``<stem>.txt`` for LightGBM). Entries are found by
scanning the two folders; nothing is kept in a hand-edited list. Set
``NAPARI_CELLULARITY_HOME`` to move the user folder (tests do).
"""

from __future__ import annotations

import hashlib
import os
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


def list_models(kind: str | None = None) -> list[ModelEntry]:
    """All registered models (optionally of one ``kind``), sorted by name then version."""
    entries: list[ModelEntry] = []
    for source, folder in (("shipped", shipped_models_dir()), ("user", user_models_dir())):
        if not folder.is_dir():
            continue
        for cfg in sorted(folder.glob("*.json")):
            try:
                data = read_json(cfg)
            except ModelConfigError:
                continue
            if not {"name", "version", "kind"} <= set(data):
                continue
            if kind is not None and data["kind"] != kind:
                continue
            entries.append(ModelEntry(data["name"], int(data["version"]), data["kind"], cfg, source,
                                      data.get("segmentation_model")))
    return sorted(entries, key=lambda e: (e.name, e.version, e.source))


def find_model(ref: str | None, kind: str) -> ModelEntry:
    """Resolve ``"name"`` (latest version), ``"name@3"`` or a path to a ``.json`` config.

    ``None`` picks the newest model of ``kind`` named like the default, else any model of
    that kind.
    """
    if ref and (ref.endswith(".json") or os.sep in ref) and Path(ref).exists():
        data = read_json(ref)
        return ModelEntry(data["name"], int(data["version"]), data.get("kind", kind), Path(ref), "file")
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
    net = build_network(config)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelFileError(f"weights {weights} do not fit the architecture in its config: {exc}") from None
    net = net.to(select_device(device)).eval()
    return net, config
