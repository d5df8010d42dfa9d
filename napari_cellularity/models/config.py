"""Model configurations: one dataclass per model kind, saved as JSON beside the weights.

Class names live here and nowhere else. The segmentation network has the paper's four
sigmoid output channels in the paper's order (Rakhlin et al., BreastPathQ, section 3.1):
normal, lymphocyte, malignant, background.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import write_json_atomic

#: Output channels of the segmentation network, in order.
CLASS_NAMES: tuple[str, ...] = ("normal", "lymphocyte", "malignant", "background")
#: Cell classes a pathologist annotates (background is "no nucleus").
CELL_CLASSES: tuple[str, ...] = ("malignant", "normal", "lymphocyte")
#: Optional extra output channels a model may add after ``CLASS_NAMES`` (never shown as the three classes):
#: ``other`` = other (e.g. stromal) nuclei, trained from ``background`` points; ``centre`` = class-agnostic
#: nucleus-centre map used for peak finding when present.
OTHER_CLASS = "other"
CENTRE_CHANNEL = "centre"
EXTRA_CHANNELS: tuple[str, ...] = (OTHER_CLASS, CENTRE_CHANNEL)
#: Colours of the extra channels (added to a model's ``class_colors`` only when it has them).
EXTRA_COLORS: dict[str, str] = {OTHER_CLASS: "#ffa500", CENTRE_CHANNEL: "#ffffff"}
#: Display colours (RGB hex). Malignant red, normal epithelial green, lymphocyte blue.
CLASS_COLORS: dict[str, str] = {
    "malignant": "#ff0000",
    "normal": "#00c800",
    "lymphocyte": "#0050ff",
    "background": "#808080",
}


def hex_to_rgb(color: str) -> list[int]:
    """``"#ff0000"`` -> ``[255, 0, 0]`` (the one parser of the hex colours above)."""
    c = color.lstrip("#")
    return [int(c[i : i + 2], 16) for i in (0, 2, 4)]

#: Loss weights of eq. (3): malignant 4, the others 1. The ``centre`` channel's focal loss (a sum over its
#: positives, ``training.losses.centre_focal_loss``) is weighted 0.1: at random init its gradient on the
#: encoder was 10x that of the four class channels together (58 vs 5.5 on a batch of 8 BRCA-M2C crops).
CLASS_LOSS_WEIGHTS: dict[str, float] = {
    "normal": 1.0,
    "lymphocyte": 1.0,
    "malignant": 4.0,
    "background": 1.0,
    CENTRE_CHANNEL: 0.1,
}
#: Human-readable labels for the UI.
CLASS_LABELS: dict[str, str] = {
    "malignant": "Malignant epithelial",
    "normal": "Normal epithelial",
    "lymphocyte": "Lymphocyte",
    "background": "Background",
}

#: Compute precision choices for inference and fine-tuning (see ``models.device.resolve_precision``):
#: ``auto`` = mixed precision where the hardware runs it natively, ``fp32`` = full precision everywhere.
PRECISIONS: tuple[str, ...] = ("auto", "fp32")

CONFIG_FORMAT_VERSION = 1


class ModelConfigError(ValueError):
    """A model configuration is missing fields, has invalid values or the wrong format."""


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class SegmentationConfig:
    """Everything needed to rebuild and run a segmentation model.

    Parameters
    ----------
    name, version
        Registry identity; ``version`` is an integer that grows with each retraining.
    mpp
        Microns per pixel the network works at; every input is resampled to it.
    tile_size_px
        Inference tile size (multiple of 32).
    blob_diameter_px
        Diameter of the weak-label disks at ``mpp`` (the paper: 15 px).
    normalisation
        ``"minus1_1"``: uint8 RGB / 127.5 - 1 (the paper's [-1, 1] scaling).
    """

    name: str = "fpn-resnet34"
    version: int = 1
    kind: str = "segmentation"
    architecture: dict[str, Any] = field(
        default_factory=lambda: {
            "decoder": "FPN",
            "encoder_name": "resnet34",
            "encoder_depth": 5,
            "decoder_pyramid_channels": 256,
            "decoder_segmentation_channels": 64,
            "decoder_merge_policy": "cat",
            "decoder_dropout": 0.5,
            "in_channels": 3,
        }
    )
    class_names: tuple[str, ...] = CLASS_NAMES
    class_colors: dict[str, str] = field(default_factory=lambda: dict(CLASS_COLORS))
    mpp: float = 1.0
    tile_size_px: int = 256
    blob_diameter_px: int = 15
    normalisation: str = "minus1_1"
    detection: dict[str, Any] = field(
        default_factory=lambda: {"threshold": 0.3, "min_distance_um": 4.0, "class_gain": {}}
    )
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    created_at: str = field(default_factory=_utc_now)
    weights_sha256: str | None = None
    weights_dtype: str = "float16"
    format_version: int = CONFIG_FORMAT_VERSION

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names)
        if self.kind != "segmentation":
            raise ModelConfigError(f"expected a segmentation config, got kind={self.kind!r}")
        if not self.name or "/" in self.name or "\\" in self.name:
            raise ModelConfigError(f"invalid model name {self.name!r}")
        if int(self.version) < 1:
            raise ModelConfigError(f"version must be >= 1, got {self.version}")
        if not (0.05 <= float(self.mpp) <= 20):
            raise ModelConfigError(f"mpp {self.mpp} outside 0.05..20 µm/px")
        if self.tile_size_px % 32 or self.tile_size_px < 64:
            raise ModelConfigError(f"tile_size_px must be a multiple of 32 >= 64, got {self.tile_size_px}")
        if "background" not in self.class_names:
            raise ModelConfigError("class_names must include 'background'")
        extra = [c for c in self.class_names if c not in CLASS_NAMES]
        if set(extra) - set(EXTRA_CHANNELS) or len(set(self.class_names)) != len(self.class_names):
            raise ModelConfigError(f"class_names {list(self.class_names)}: extra channels must be distinct, "
                                   f"among {list(EXTRA_CHANNELS)}")
        if self.normalisation != "minus1_1":
            raise ModelConfigError(f"unknown normalisation {self.normalisation!r}")
        if self.format_version > CONFIG_FORMAT_VERSION:
            raise ModelConfigError(
                f"config format {self.format_version} is newer than this plugin supports "
                f"({CONFIG_FORMAT_VERSION}); update napari-cellularity"
            )

    def detection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``detect_nuclei`` as tuned for this model."""
        d = self.detection
        return {"threshold": float(d.get("threshold", 0.3)),
                "min_distance_um": float(d.get("min_distance_um", 4.0)),
                "class_gain": dict(d.get("class_gain") or {}),
                "class_names": self.class_names}

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def ref(self) -> str:
        """``name@version``, the registry key."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentationConfig:
        return config_from_dict(cls, data, "config")

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> SegmentationConfig:
        return cls.from_dict(read_json(path))


def config_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from ``data``, refusing unknown fields (a config from elsewhere)."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ModelConfigError(f"unknown {what} fields: {sorted(unknown)}")
    return cls(**data)


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, with a clear error for a missing or malformed file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"model config not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"model config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelConfigError(f"model config {path} must hold a JSON object")
    return data
