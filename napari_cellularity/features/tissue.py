"""Moved to :mod:`napari_cellularity.inference.tissue` (one tissue mask for inference and features).

Re-exported here only until ``training/cellularity_labels.py`` imports the new home; then delete.
"""

from napari_cellularity.inference.tissue import (
    FILL_HOLES_UM2,
    MAX_DARK_VALUE,
    MIN_OBJECT_UM2,
    MIN_SATURATION,
    TissueInputError,
    tissue_mask,
)

__all__ = ["FILL_HOLES_UM2", "MAX_DARK_VALUE", "MIN_OBJECT_UM2", "MIN_SATURATION", "TissueInputError", "tissue_mask"]
