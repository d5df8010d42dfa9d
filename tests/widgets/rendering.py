"""Shared by the tests that need a real (virtual) display: the skip marker and the drawn area's box.

Skipped where nothing renders (``QT_QPA_PLATFORM=offscreen``, no ``DISPLAY``): run them with
``scripts/test.sh`` on a machine with Xvfb (it uses ``xvfb-run`` when present).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

needs_display = pytest.mark.skipif(
    os.environ.get("QT_QPA_PLATFORM") == "offscreen" or not os.environ.get("DISPLAY"),
    reason="needs a display (run under Xvfb: scripts/test.sh)",
)


def drawn_bbox(rgba: np.ndarray) -> np.ndarray:
    """[[top, left], [bottom, right]] of the screenshot's non-black pixels."""
    rows, cols = np.nonzero(rgba[..., :3].astype(int).sum(-1) > 40)
    return np.array([[rows.min(), cols.min()], [rows.max(), cols.max()]])
