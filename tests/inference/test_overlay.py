"""The quick-look overlay shows the three reported classes only, whatever extra channels a model has."""

from __future__ import annotations

import numpy as np

from napari_cellularity.inference.outputs import render_overlay
from napari_cellularity.models.config import CLASS_COLORS, CLASS_NAMES


def test_extra_channels_are_neither_tinted_nor_dotted_and_need_no_colour():
    names = (*CLASS_NAMES, "other", "centre")
    labels = np.full((8, 8), names.index("other"), np.uint8)
    labels[:, :4] = names.index("malignant")
    image = np.full((8, 8, 3), 200, np.uint8)
    out = render_overlay(image, labels, names, dict(CLASS_COLORS),  # no colour for other / centre
                         np.array([[4.0, 6.0]]), np.array(["other"], object), 1.0)
    assert (out[:, 4:] == 200).all()  # the other class's area and its dot left as they were
    assert not (out[:, :4] == 200).all()  # malignant is tinted
