"""Procedural H&E-like images with exact ground truth, for tests, sample data and benchmarks.

:mod:`.patches` draws patches (:func:`make_he_patch`) and writes pyramidal slides
(:func:`make_he_slide`); :mod:`.scene` lays out tissue, nests, ducts and cells; :mod:`.writer`
writes the tiled pyramidal TIFF. Compute only: numpy, scipy and scikit-image.
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
from .scene import (
    CODE_TO_CLASS,
    FIBRE_ANGLES,
    FIBROBLAST,
    LYMPHOCYTE,
    MALIGNANT,
    NORMAL,
    Scene,
    build_scene,
)

__all__ = [
    "CODE_TO_CLASS",
    "E_OD",
    "FIBRE_ANGLES",
    "FIBROBLAST",
    "H_OD",
    "LYMPHOCYTE",
    "MALIGNANT",
    "NORMAL",
    "Scene",
    "SyntheticPatch",
    "SyntheticSlideTruth",
    "build_scene",
    "make_he_patch",
    "make_he_slide",
    "render_region",
]
