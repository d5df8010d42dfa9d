"""Cellularity patches scored while the network still computes the rows below them.

:class:`StreamingCellularity` is a :mod:`~napari_cellularity.inference.row_listeners` listener for
:func:`~napari_cellularity.inference.predict.predict_region`: each row of patches of the grid
(:func:`~.cellularity_map.plan_grid`) is scored in a worker thread as soon as its rows of the maps are final;
:meth:`StreamingCellularity.result` scores what is left on the final maps and returns the same
:class:`~.cellularity_map.CellularityGrid` as :func:`~.cellularity_map.cellularity_grid` (the same patches,
each scored once by the same function).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from napari_cellularity.inference.row_listeners import BackgroundRows
from napari_cellularity.progress import Progress

from .cellularity_map import CellularityGrid, GridPlan, iter_cellularity_grid


class StreamingCellularity(BackgroundRows):
    """Score finished patch rows beside the network.

    Parameters
    ----------
    plan : GridPlan
        The grid (:func:`~.cellularity_map.plan_grid` of the maps' shape, config, regressor, tissue mask).
    config : SegmentationConfig
        The segmentation model making the maps.
    background : bool
        Score in a worker thread (False: inline, in ``rows_final``).
    batch_size : int
        Patches scored per call.
    """

    def __init__(self, plan: GridPlan, config: Any, background: bool = True, batch_size: int = 16) -> None:
        super().__init__(background, thread_name="cellularity")
        self.plan, self.config, self.batch_size = plan, config, int(batch_size)
        self.scored: dict[tuple, float] = {}
        self.next_box = 0  # index in plan.boxes (row-major) of the first box not yet submitted

    def rows_final(self, probs: Any, rows_done: int) -> None:
        """Submit the patches whose rows are all final."""
        boxes = self.plan.boxes
        end = self.next_box
        while end < len(boxes) and boxes[end][3] <= rows_done:
            end += 1
        for s in range(self.next_box, end, self.batch_size):
            self._submit(self._score, probs, boxes[s:min(end, s + self.batch_size)])
        self.next_box = end

    def _score(self, probs: Any, boxes: list[tuple]) -> dict[tuple, float]:
        return dict(zip(boxes, self.plan.score(probs, boxes, self.config.mpp), strict=True))

    def _collect(self, result: dict[tuple, float]) -> None:
        self.scored.update(result)

    def result(self, probs: Any) -> Generator[Progress, None, CellularityGrid]:
        """The grid: patches scored so far plus the rest of ``probs`` (the final maps)."""
        try:
            self.wait()
            return (yield from iter_cellularity_grid(probs, self.config, plan=self.plan, scored=self.scored,
                                                     batch_size=self.batch_size))
        finally:
            self._shutdown()
