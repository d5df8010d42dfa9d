"""A pathologist's own cellularity estimate for a rectangular region of a slide.

These labelled ROIs are stored in the slide's annotation sidecar and are the training targets
for refitting the cellularity regressor (the BreastPathQ task: percentage of the region's
cellular area that is malignant; Rakhlin et al., section 2).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any

from .points import AnnotationError


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class RoiEstimate:
    """One labelled region.

    Attributes
    ----------
    roi : tuple of float
        ``(row, col, height, width)`` in level-0 pixels.
    cellularity_pct : float
        Tumour cellularity in percent, 0..100.
    note : str
        Free text.
    created : str
        ISO-8601 UTC timestamp.
    """

    roi: tuple[float, float, float, float]
    cellularity_pct: float
    note: str = ""
    created: str = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        try:
            roi = tuple(float(v) for v in self.roi)
        except (TypeError, ValueError):
            raise AnnotationError(f"ROI must be (row, col, height, width) numbers, got {self.roi!r}") from None
        if len(roi) != 4 or not all(math.isfinite(v) for v in roi):
            raise AnnotationError(f"ROI must be 4 finite numbers (row, col, height, width), got {self.roi!r}")
        if roi[2] <= 0 or roi[3] <= 0:
            raise AnnotationError(f"ROI height and width must be positive, got {roi[2]} x {roi[3]}")
        self.roi = roi  # type: ignore[assignment]
        try:
            pct = float(self.cellularity_pct)
        except (TypeError, ValueError):
            raise AnnotationError(f"cellularity must be a number in percent, got {self.cellularity_pct!r}") from None
        if not (0.0 <= pct <= 100.0):
            raise AnnotationError(f"cellularity must be between 0 and 100 %, got {pct}")
        self.cellularity_pct = pct
        self.note = str(self.note)

    def to_dict(self) -> dict[str, Any]:
        return {"roi": list(self.roi), "cellularity_pct": self.cellularity_pct,
                "note": self.note, "created": self.created}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoiEstimate:
        try:
            return cls(data["roi"], data["cellularity_pct"], data.get("note", ""),
                       data.get("created") or _utc_now())
        except (KeyError, TypeError) as exc:
            raise AnnotationError(f"invalid ROI estimate record {data!r}: {exc}") from None


__all__ = ["RoiEstimate"]
