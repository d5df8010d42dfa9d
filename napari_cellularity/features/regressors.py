"""Cellularity regressors over segmentation maps: one interface, two kinds, saved in the registry.

* ``cellularity-lgbm``: LightGBM on the 81 features (Rakhlin et al., section 3.3 / 4.3), saved in
  LightGBM's own text format ``<stem>.txt`` beside ``<stem>.json`` (no pickle).
* ``cellularity-cnn``: ResNet-34 (random init) over the 4-channel maps resized to
  ``input_size_px``, one sigmoid output (section 3.2), saved as ``<stem>.safetensors`` + JSON.

Both take maps at the segmentation model's mpp and return cellularity in [0, 1].
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from napari_cellularity.files import atomic_path, write_bytes_atomic, write_json_atomic
from napari_cellularity.models.config import (
    CLASS_NAMES,
    ModelConfigError,
    config_from_dict,
    read_json,
)
from napari_cellularity.models.registry import (
    ModelFileError,
    check_lightgbm_text,
    file_sha256,
    find_model,
    list_models,
    require_hash,
    user_models_dir,
)

from .cellularity_features import FEATURE_NAMES, as_probabilities, extract_features_batch

KINDS = ("cellularity-lgbm", "cellularity-cnn")
#: Kind of the model-free fallback (never saved; see ``cellularity_map.SegmentationAreaEstimate``).
ESTIMATE_KIND = "segmentation-area-estimate"
#: Kind of the model-free direct estimate from detected nuclei (never saved; ``cell_area.CellAreaEstimate``).
DIRECT_KIND = "cell-area-estimate"
CELLULARITY_FORMAT_VERSION = 1
#: LightGBM parameters. From the paper (section 4.3): L2 objective, 600 rounds, learning rate
#: 0.01, max depth 5, 8 leaves. Ours: ``min_data_in_leaf`` 5 (LightGBM's default 20 cannot split
#: the ~100-sample sets we have; capped further at N/4), one thread, fixed seed, deterministic.
PAPER_LGBM_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.01,
    "max_depth": 5,
    "num_leaves": 8,
    "num_boost_round": 600,
    "min_data_in_leaf": 5,
    "verbosity": -1,
    "num_threads": 1,
    "seed": 0,
    "deterministic": True,
}


class FeatureMismatchError(ModelFileError):
    """A saved LightGBM model was trained on other features than this version computes."""


class RegressorInputError(ValueError):
    """Maps given to a regressor do not fit it (channels, mpp)."""


@dataclass
class CellularityConfig:
    """Everything needed to rebuild and trust a cellularity regressor (saved as ``<stem>.json``).

    Parameters
    ----------
    kind
        ``"cellularity-lgbm"`` or ``"cellularity-cnn"``.
    segmentation_model
        ``name@version`` of the segmentation model whose maps it was trained on.
    mpp
        Microns per pixel of those maps (the segmentation model's mpp).
    patch_size_um
        Side of the training patches in µm; whole-slide heatmaps use this patch size.
    label_source
        Where the training targets came from: ``"pathologist"`` (BreastPathQ),
        ``"derived-from-points"`` or ``"synthetic"`` (or several, joined by ``+``).
    """

    kind: str
    name: str
    version: int = 1
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    segmentation_model: str = ""
    mpp: float = 1.0
    patch_size_um: float = 256.0
    input_size_px: int = 64
    params: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    label_source: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    )
    hashes: dict[str, str] = field(default_factory=dict)
    #: ``name@version`` of the model this one was refitted from (None for a first model).
    parent: str | None = None
    #: Isotonic map onto a pathologist's scale (``features.calibration.IsotonicCalibration.to_dict``), or None.
    calibration: dict[str, Any] | None = None
    format_version: int = CELLULARITY_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.kind not in (*KINDS, ESTIMATE_KIND, DIRECT_KIND):
            raise ModelConfigError(f"cellularity config kind must be one of {KINDS}, got {self.kind!r}")
        if not self.name or "/" in self.name or "\\" in self.name or "@" in self.name:
            raise ModelConfigError(f"invalid model name {self.name!r}")
        if int(self.version) < 1:
            raise ModelConfigError(f"version must be >= 1, got {self.version}")
        if not (0.05 <= float(self.mpp) <= 20):
            raise ModelConfigError(f"mpp {self.mpp} outside 0.05..20 µm/px")
        if not (float(self.patch_size_um) > 0):
            raise ModelConfigError(f"patch_size_um must be positive, got {self.patch_size_um}")
        if self.format_version > CELLULARITY_FORMAT_VERSION:
            raise ModelConfigError(
                f"cellularity config format {self.format_version} is newer than this plugin supports; "
                "update napari-cellularity"
            )
        self.feature_names = list(self.feature_names)
        self.class_names = list(self.class_names)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def stem(self) -> str:
        return f"{self.name}-v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["calibration"] is None:  # configs without one stay readable by older versions
            del d["calibration"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellularityConfig:
        return config_from_dict(cls, data, "cellularity config")


@runtime_checkable
class CellularityRegressor(Protocol):
    """Anything that turns segmentation maps into cellularity values in [0, 1]."""

    config: CellularityConfig

    def predict_maps(self, probs_batch: list[np.ndarray] | np.ndarray, mpp: float) -> np.ndarray:
        """Cellularity of each (C, H, W) map stack at ``mpp``; ndarray of shape (N,) in [0, 1]."""
        ...


def _check_mpp(config: CellularityConfig, mpp: float) -> None:
    if abs(float(mpp) - config.mpp) > 1e-3 * config.mpp:
        raise RegressorInputError(
            f"{config.ref} was trained on maps at {config.mpp} µm/px but got maps at {mpp} µm/px; "
            "use the segmentation model it was trained with"
        )


class LightGBMCellularity:
    """LightGBM over the 81 features (a ``lightgbm.Booster`` plus its config)."""

    def __init__(self, booster: Any, config: CellularityConfig) -> None:
        if config.kind != "cellularity-lgbm":
            raise ModelConfigError(f"expected a cellularity-lgbm config, got {config.kind!r}")
        names = list(booster.feature_name())
        if names != list(config.feature_names) or names != list(FEATURE_NAMES):
            raise FeatureMismatchError(
                f"{config.ref} was trained on {len(names)} features that differ from the "
                f"{len(FEATURE_NAMES)} this version computes (first difference: "
                f"{_first_difference(names, list(FEATURE_NAMES))}); retrain it with "
                "'napari-cellularity train cellularity'"
            )
        self.booster = booster
        self.config = config

    def predict_features(self, features: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Cellularity of (N, 81) features; with ``calibrated`` the stored isotonic calibration is applied."""
        x = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))
        raw = np.clip(self.booster.predict(x), 0.0, 1.0)
        return apply_calibration(self.config, raw) if calibrated else raw

    def predict_maps(self, probs_batch: list[np.ndarray] | np.ndarray, mpp: float) -> np.ndarray:
        _check_mpp(self.config, mpp)
        feats = extract_features_batch(probs_batch, mpp, tuple(self.config.class_names))
        return self.predict_features(feats) if len(feats) else np.zeros(0)


def apply_calibration(config: CellularityConfig, values: np.ndarray) -> np.ndarray:
    """``values`` through the config's isotonic calibration (unchanged when it has none)."""
    if not config.calibration:
        return values
    from .calibration import IsotonicCalibration

    return IsotonicCalibration.from_dict(config.calibration).apply(values)


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"#{i} {x!r} vs {y!r}"
    return f"lengths {len(a)} vs {len(b)}"


def build_cnn(n_channels: int = 4) -> Any:
    """ResNet-34 (random init, never downloads) with ``n_channels`` inputs and one output."""
    import torch
    from torchvision.models import resnet34

    net = resnet34(weights=None, num_classes=1)
    net.conv1 = torch.nn.Conv2d(n_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def maps_to_tensor(probs_batch: list[np.ndarray] | np.ndarray, size_px: int, class_names: tuple[str, ...]) -> Any:
    """(N, C, size, size) float tensor in [-1, 1]: each map area-resized to ``size_px``."""
    import torch
    import torch.nn.functional as F

    out = []
    for p in probs_batch:
        t = torch.from_numpy(as_probabilities(p, class_names))[None]
        out.append(F.interpolate(t, size=(size_px, size_px), mode="area" if min(t.shape[-2:]) >= size_px
                                 else "bilinear"))
    return torch.cat(out).mul_(2.0).sub_(1.0)


class CNNCellularity:
    """ResNet-34 regressor over the segmentation maps (Rakhlin et al., section 3.2)."""

    def __init__(self, net: Any, config: CellularityConfig) -> None:
        if config.kind != "cellularity-cnn":
            raise ModelConfigError(f"expected a cellularity-cnn config, got {config.kind!r}")
        self.net = net.eval()
        self.config = config

    def predict_maps(self, probs_batch: list[np.ndarray] | np.ndarray, mpp: float, batch_size: int = 32) -> np.ndarray:
        import torch

        _check_mpp(self.config, mpp)
        probs_batch = list(probs_batch)
        preds = []
        with torch.inference_mode():
            for s in range(0, len(probs_batch), batch_size):
                x = maps_to_tensor(probs_batch[s : s + batch_size], self.config.input_size_px,
                                   tuple(self.config.class_names))
                preds.append(torch.sigmoid(self.net(x).float())[:, 0].numpy())
        return apply_calibration(self.config, np.concatenate(preds).astype(np.float64)) if preds else np.zeros(0)


def save_cellularity_model(model: LightGBMCellularity | CNNCellularity, folder: str | Path | None = None) -> Path:
    """Save weights then config (``<name>-v<version>.{txt|safetensors,json}``); returns the JSON path.

    Files are written under temporary names and renamed, so a crash never leaves a half model.
    """
    folder = Path(folder) if folder is not None else user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    if isinstance(model, LightGBMCellularity):
        weights = folder / f"{config.stem}.txt"
        write_bytes_atomic(weights, model.booster.model_to_string().encode("utf-8"))
    else:
        from safetensors.torch import save_file

        weights = folder / f"{config.stem}.safetensors"
        # fp16 on disk (half the size; loading casts back to fp32), as for segmentation models.
        state = {k: v.detach().cpu().half().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
                 for k, v in model.net.state_dict().items()}
        with atomic_path(weights) as tmp:
            save_file(state, str(tmp), metadata={"name": config.name, "version": str(config.version)})
    config.hashes["weights_sha256"] = file_sha256(weights)
    cfg_path = folder / f"{config.stem}.json"
    write_json_atomic(cfg_path, config.to_dict())
    return cfg_path


def regressor_ref_for(segmentation_ref: str, kind: str = "cellularity-lgbm", source: str | None = None) -> str | None:
    """``name@version`` of the newest ``kind`` regressor trained on ``segmentation_ref``'s maps, or None.

    A regressor reads features of one segmentation model's maps; another model's maps (even a newer version
    of the same network) shift them. ``source`` (``"user"`` / ``"shipped"``) restricts where it comes from.
    """
    matches = [e for e in list_models(kind) if e.segmentation_model == segmentation_ref
               and (source is None or e.source == source)]
    if not matches:
        return None
    return max(matches, key=lambda e: e.version).ref


def load_cellularity_model(
    ref: str | None = None, kind: str = "cellularity-lgbm"
) -> LightGBMCellularity | CNNCellularity:
    """Load a registered cellularity regressor (``name``, ``name@version`` or a ``.json`` path).

    Raises
    ------
    ModelNotFoundError
        Nothing of ``kind`` is installed / no such name.
    ModelFileError
        Weights missing, corrupt or not matching the recorded hash.
    FeatureMismatchError
        A LightGBM model whose feature names differ from :data:`FEATURE_NAMES`.
    """
    if kind not in KINDS:
        raise ModelConfigError(f"kind must be one of {KINDS}, got {kind!r}")
    entry = find_model(ref, kind)
    require_hash(entry)
    config = CellularityConfig.from_dict(read_json(entry.config_path))
    suffix = ".txt" if config.kind == "cellularity-lgbm" else ".safetensors"
    weights = entry.config_path.with_suffix(suffix)
    if not weights.exists():
        raise ModelFileError(f"weights file missing for {config.ref}: {weights}")
    expected = config.hashes.get("weights_sha256")
    if expected and file_sha256(weights) != expected:
        raise ModelFileError(f"{weights} does not match its recorded hash (corrupt or replaced); reinstall it")
    return _load_lgbm(weights, config) if config.kind == "cellularity-lgbm" else _load_cnn(weights, config)


def _load_lgbm(weights: Path, config: CellularityConfig) -> LightGBMCellularity:
    import lightgbm

    try:
        text = weights.read_text(encoding="utf-8")
        check_lightgbm_text(text, weights)  # LightGBM aborts the process on some truncated files
        booster = lightgbm.Booster(model_str=text)
    except (lightgbm.basic.LightGBMError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"cannot read LightGBM model {weights}: {exc}") from None
    return LightGBMCellularity(booster, config)


def _load_cnn(weights: Path, config: CellularityConfig) -> CNNCellularity:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"cannot read weights {weights}: {exc}") from None
    net = build_cnn(len(config.class_names))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"weights {weights} do not fit a 4-channel ResNet-34 regressor: {exc}") from None
    return CNNCellularity(net, config)


#: Report note when a cellularity value's scale comes from point-derived labels, not pathologists.
SCALE_FROM_POINTS = ("cellularity scale derived from point annotations (malignant cell area / tissue area), "
                     "not calibrated against pathologists' estimates")


def cellularity_scale_note(model_ref: str | None) -> str:
    """What the cellularity scale of ``model_ref`` rests on, for reports.

    ``"calibrated on pathologist estimates"`` when every training label of the model was a
    pathologist's estimate or it carries a calibration fitted on them, else
    :data:`SCALE_FROM_POINTS` (also for the model-free estimates, and for ``cellularity-lgbm@2``, 90
    of whose 91 labels were derived from points).
    """
    from napari_cellularity.models.registry import ModelNotFoundError

    for kind in KINDS if model_ref else ():
        try:
            config = read_json(find_model(str(model_ref).split(" ")[0], kind).config_path)
        except (ModelNotFoundError, ModelFileError, ModelConfigError, OSError, ValueError, KeyError):
            continue  # not this kind / not installed: the conservative note
        sources = str(config.get("label_source", "")).split("+")
        if all("pathologist" in src for src in sources) or config.get("calibration"):
            return "cellularity calibrated on pathologist estimates"
    return SCALE_FROM_POINTS
