"""Procedural H&E-like images with exact ground truth, for tests, sample data and benchmarks.

:mod:`.patches` draws patches (:func:`make_he_patch`) and writes pyramidal slides
(:func:`make_he_slide`); :mod:`.scene` lays out tissue, nests, ducts and cells; :mod:`.writer`
writes the tiled pyramidal TIFF (import scene names such as ``MALIGNANT`` from :mod:`.scene`).
Compute only: numpy, scipy and scikit-image.
"""

from .patches import (
    E_OD,
    H_OD,
    SyntheticPatch,
    SyntheticSlideTruth,
    make_he_patch,
    make_he_slide,
    render_region,
)

__all__ = [
    "E_OD",
    "H_OD",
    "SyntheticPatch",
    "SyntheticSlideTruth",
    "make_he_patch",
    "make_he_slide",
    "render_region",
]
