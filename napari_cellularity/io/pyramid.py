"""The lazy, micron-aware image pyramid every backend returns: :class:`Slide` and :class:`SlideInfo`.

Everything here is in (row, col) level-0 pixels; OpenSlide's (x, y) is converted inside
``_openslide.py`` only. Pixel data are per-level dask arrays of shape (rows, cols, 3) uint8,
chunked by tiles, so level 0 of a whole slide is never held in memory. Files are opened with
:func:`napari_cellularity.io.slide.open_slide`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .formats import DEFAULT_TILE_PX, FILL_VALUE, MissingResolutionError, check_mpp
from .pixels import as_rgb_uint8, resize_rgb


@dataclass
class SlideInfo:
    """Normalised slide metadata (raw vendor properties kept in ``properties``).

    Parameters
    ----------
    path : str
        File the slide was read from ("<array>" for in-memory slides).
    vendor : str
        Vendor / format name ("aperio", "generic-tiff", "ome-tiff", "tiff", "png", "array", ...).
    level_dimensions : list of (int, int)
        (rows, cols) of each pyramid level, level 0 first.
    level_downsamples : list of float
        Downsample factor of each level relative to level 0.
    mpp : float or None
        Microns per pixel at level 0; None when unknown.
    mpp_source : str
        "file" (read from the file), "override" (given by the caller) or "unknown".
    objective_power : float or None
        Scanner objective magnification, when recorded.
    properties : dict
        Raw metadata as strings.
    backend : str
        "openslide", "tifffile", "pil" or "array".
    """

    path: str
    vendor: str
    level_dimensions: list[tuple[int, int]]
    level_downsamples: list[float]
    mpp: float | None = None
    mpp_source: str = "unknown"
    objective_power: float | None = None
    properties: dict[str, str] = field(default_factory=dict)
    backend: str = "array"

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["level_dimensions"] = [list(d) for d in self.level_dimensions]
        return data


#: Signature of a backend's direct region reader: (level0_rc, size_rc, level) -> (h, w, 3) uint8.
RegionReader = Callable[[tuple[int, int], tuple[int, int], int], np.ndarray]


class Slide:
    """A lazily read image pyramid with micron-aware region access.

    Use :func:`open_slide` to open a file or :meth:`Slide.from_array` for in-memory images.

    Parameters
    ----------
    info : SlideInfo
        Metadata; ``info.level_dimensions`` must match ``levels``.
    levels : list of dask.array.Array
        One (rows, cols, 3) uint8 array per level.
    read_region_fn : callable, optional
        Fast direct reader used by :meth:`read_region`; defaults to slicing ``levels``.
    close_fn : callable, optional
        Releases file handles.
    """

    def __init__(
        self,
        info: SlideInfo,
        levels: list,
        read_region_fn: RegionReader | None = None,
        close_fn: Callable[[], None] | None = None,
    ) -> None:
        self.info = info
        self.levels = levels
        self._read_region_fn = read_region_fn
        self._close_fn = close_fn
        self.closed = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_array(
        cls, rgb_array: np.ndarray, mpp: float | None = None, path: str = "<array>"
    ) -> Slide:
        """Wrap an in-memory RGB image as a one-level slide.

        Parameters
        ----------
        rgb_array : ndarray of shape (H, W, 3) or (H, W)
            uint8 image (grey images are repeated to RGB; RGBA is composited on white).
        mpp : float, optional
            Microns per pixel; None when unknown.
        path : str
            Name recorded in ``info.path``.
        """
        import dask.array as da

        rgb = as_rgb_uint8(np.asarray(rgb_array))
        check_mpp(mpp)
        info = SlideInfo(
            path=path, vendor="array", level_dimensions=[rgb.shape[:2]], level_downsamples=[1.0],
            mpp=mpp, mpp_source="override" if mpp else "unknown", backend="array",
        )
        chunks = (DEFAULT_TILE_PX * 2, DEFAULT_TILE_PX * 2, 3)
        return cls(info, [da.from_array(rgb, chunks=chunks)])

    # ------------------------------------------------------------------ properties
    @property
    def mpp(self) -> float | None:
        return self.info.mpp

    @property
    def dimensions(self) -> tuple[int, int]:
        """(rows, cols) of level 0."""
        return self.info.level_dimensions[0]

    def require_mpp(self) -> float:
        """Return the level-0 mpp or raise :class:`MissingResolutionError`."""
        if self.info.mpp is None:
            raise MissingResolutionError(
                f"{self.info.path}: the pixel size (µm/px) is not recorded in the file; "
                "pass it explicitly (e.g. --mpp 0.5 for a 20x scan)"
            )
        return self.info.mpp

    # ------------------------------------------------------------------ reading
    def best_level_for_downsample(self, downsample: float) -> int:
        """Index of the smallest level whose downsample does not exceed ``downsample``."""
        best = 0
        for index, level_ds in enumerate(self.info.level_downsamples):
            if level_ds <= downsample * (1 + 1e-3):
                best = index
        return best

    def read_region(
        self, level0_rc: tuple[int, int], size_rc: tuple[int, int], level: int = 0
    ) -> np.ndarray:
        """Read a region; areas outside the slide come back white.

        Parameters
        ----------
        level0_rc : (int, int)
            Top-left corner in level-0 pixels (row, col).
        size_rc : (int, int)
            Output size (rows, cols) in pixels of ``level``.
        level : int
            Pyramid level to read from.

        Returns
        -------
        ndarray of shape (size_rc[0], size_rc[1], 3), uint8
        """
        self._check_open()
        if not 0 <= level < self.info.level_count:
            raise ValueError(f"level {level} out of range 0..{self.info.level_count - 1}")
        rows, cols = int(size_rc[0]), int(size_rc[1])
        if rows < 0 or cols < 0:
            raise ValueError(f"region size must be non-negative, got {size_rc}")
        if rows == 0 or cols == 0:
            return np.full((rows, cols, 3), FILL_VALUE, np.uint8)
        r0, c0 = int(level0_rc[0]), int(level0_rc[1])
        if self._read_region_fn is not None:
            return self._read_region_fn((r0, c0), (rows, cols), level)
        return self._read_from_levels((r0, c0), (rows, cols), level)

    def _read_from_levels(
        self, level0_rc: tuple[int, int], size_rc: tuple[int, int], level: int
    ) -> np.ndarray:
        ds = self.info.level_downsamples[level]
        r0 = int(math.floor(level0_rc[0] / ds))
        c0 = int(math.floor(level0_rc[1] / ds))
        out = np.full((size_rc[0], size_rc[1], 3), FILL_VALUE, np.uint8)
        level_rows, level_cols = self.info.level_dimensions[level]
        src_r0, src_c0 = max(r0, 0), max(c0, 0)
        src_r1 = min(r0 + size_rc[0], level_rows)
        src_c1 = min(c0 + size_rc[1], level_cols)
        if src_r1 > src_r0 and src_c1 > src_c0:
            block = np.asarray(self.levels[level][src_r0:src_r1, src_c0:src_c1])
            out[src_r0 - r0 : src_r1 - r0, src_c0 - c0 : src_c1 - c0] = block
        return out

    def read_region_at_mpp(
        self, level0_rc: tuple[int, int], size0_rc: tuple[int, int], target_mpp: float
    ) -> np.ndarray:
        """Read a level-0 region resampled to ``target_mpp`` µm/px.

        Picks the smallest pyramid level that is at least as fine as ``target_mpp``, reads the
        region there and resizes it (Lanczos), so inference gets pixels at the model's mpp.

        Parameters
        ----------
        level0_rc : (int, int)
            Top-left corner in level-0 pixels.
        size0_rc : (int, int)
            Region size in level-0 pixels.
        target_mpp : float
            Output pixel size in µm.

        Returns
        -------
        ndarray of shape (round(size0_rc[0] * mpp / target_mpp), ..., 3), uint8

        Raises
        ------
        MissingResolutionError
            When the slide's mpp is unknown.
        """
        check_mpp(target_mpp)
        mpp = self.require_mpp()
        scale = mpp / target_mpp
        out_rc = (max(1, round(size0_rc[0] * scale)), max(1, round(size0_rc[1] * scale)))
        level = self.best_level_for_downsample(target_mpp / mpp)
        ds = self.info.level_downsamples[level]
        read_rc = (max(1, math.ceil(size0_rc[0] / ds)), max(1, math.ceil(size0_rc[1] / ds)))
        region = self.read_region(level0_rc, read_rc, level)
        if region.shape[:2] == out_rc:
            return region
        return resize_rgb(region, out_rc)

    def thumbnail(self, max_size_px: int = 1024) -> np.ndarray:
        """Whole-slide overview whose longer side is at most ``max_size_px``.

        Reads the smallest level that is still at least ``max_size_px`` on its longer side,
        subsampling chunk by chunk, so memory stays bounded even for one-level slides.
        """
        self._check_open()
        if max_size_px < 1:
            raise ValueError(f"max_size_px must be >= 1, got {max_size_px}")
        rows0, cols0 = self.dimensions
        downsample = max(rows0, cols0) / max_size_px
        level = self.best_level_for_downsample(max(downsample, 1.0))
        rows, cols = self.info.level_dimensions[level]
        step = max(1, int(max(rows, cols) // max_size_px))
        small = np.asarray(self.levels[level][::step, ::step])
        scale = min(1.0, max_size_px / max(rows0, cols0))
        out_rc = (max(1, round(rows0 * scale)), max(1, round(cols0 * scale)))
        return small if small.shape[:2] == out_rc else resize_rgb(small, out_rc)

    # ------------------------------------------------------------------ lifecycle
    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"slide {self.info.path} is closed")

    def close(self) -> None:
        """Release the file handle (idempotent); the dask levels become unusable."""
        if not self.closed and self._close_fn is not None:
            self._close_fn()
        self.closed = True

    def __copy__(self) -> Slide:
        return self

    def __deepcopy__(self, memo: dict) -> Slide:
        # A slide is a read-only file handle: napari may deep-copy layer metadata that holds it.
        return self

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        dims = self.info.level_dimensions
        return f"Slide({self.info.path!r}, levels={dims}, mpp={self.info.mpp}, backend={self.info.backend})"
