"""Named recipe levers of issue 12, as changes to :class:`TrainSettings` and the model's extra channels.

Row one of every ablation is :data:`PAPER` (Rakhlin et al. 2019: 15-px disks per class, loss eqs. 1-3,
the paper's augmentation, 256² crops). Each lever is added onto the best recipe so far
(``benchmarks/ablation_segmentation.py``); every lever has its command-line flags in
``napari-cellularity train segmentation`` (listed in :data:`LEVER_FLAGS`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .settings import TrainSettings


@dataclass(frozen=True)
class Recipe:
    """Settings overrides + extra output channels (``other``, ``centre``)."""

    name: str
    settings: dict = field(default_factory=dict)
    extra_channels: tuple[str, ...] = ()

    def plus(self, lever: Recipe) -> Recipe:
        """This recipe with ``lever`` added (its settings override; channels appended in canonical order)."""
        channels = tuple(c for c in ("other", "centre") if c in self.extra_channels + lever.extra_channels)
        return Recipe(f"{self.name} + {lever.name}", {**self.settings, **lever.settings}, channels)

    def train_settings(self, base: TrainSettings) -> TrainSettings:
        return dataclasses.replace(base, **self.settings)


PAPER = Recipe("paper")
#: Stain / scanner robustness: HED (between Tellez's light 0.05 and strong 0.2), colour, blur, JPEG, ±20 % scale.
STAIN = Recipe("stain-aug", {"aug_hed_sigma": 0.1, "aug_bcs": 0.2, "aug_blur_p": 0.2, "aug_jpeg_p": 0.2,
                             "aug_scale": 0.2})
#: Stromal (BRCA-M2C class 3) nuclei as their own ``other`` channel instead of background.
OTHER = Recipe("other-class", extra_channels=("other",))
#: Class-agnostic nucleus-centre channel (Gaussian sigma 2 px) for peak finding.
CENTRE = Recipe("centre-channel", extra_channels=("centre",))
#: Context: 512² crops, batch / 4 so a step sees the same pixels.
CONTEXT = Recipe("context-512", {"crop_px": 512})

LEVERS: dict[str, Recipe] = {r.name: r for r in (STAIN, OTHER, CENTRE, CONTEXT)}

LEVER_FLAGS: dict[str, str] = {
    "stain-aug": "--aug-hed 0.1 --aug-bcs 0.2 --aug-blur 0.2 --aug-jpeg 0.2 --aug-scale 0.2",
    "other-class": "--extra-channels other",
    "centre-channel": "--extra-channels centre",
    "context-512": "--crop-px 512 --batch-size B/4",
}


def with_context_batch(recipe: Recipe, base: TrainSettings) -> TrainSettings:
    """Settings of ``recipe`` on ``base``; 512² crops divide the batch by 4 (same pixels per step)."""
    s = recipe.train_settings(base)
    if s.crop_px > base.crop_px:
        s = dataclasses.replace(s, batch_size=max(1, base.batch_size * base.crop_px**2 // s.crop_px**2))
    return s
