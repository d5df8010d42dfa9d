"""Fuzz targets and hypothesis strategies for the front end: annotation parsers, CLI arguments, images.

Each ``check_*`` function feeds one generated input to the project and lets only the project's
named errors pass (:data:`NAMED`); anything else propagates and hypothesis reports it. The test
suite runs them briefly (``tests/trust/test_fuzz.py``); ``benchmarks/fuzz_front_end.py`` runs them
for minutes.
"""

from __future__ import annotations

import functools
import io
import json
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from napari_cellularity.annotations.points import AnnotationError
from napari_cellularity.cli import build_parser
from napari_cellularity.cli.checks import MAX_ROI_SIDE_PX, MPP_RANGE, join_negative_values
from napari_cellularity.io.formats import SlideError

#: The errors a hostile input may end in (each carries a message naming the file and the problem).
NAMED = (AnnotationError, SlideError)

# --------------------------------------------------------------------------------- JSON / GeoJSON
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.integers(),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=20)
_names = st.sampled_from(["Tumor", "Lymphocyte", "Normal epithelial", "Stroma", "tumor: positive", "", "x"])
_position = st.one_of(st.lists(st.one_of(st.floats(-1e6, 1e6), st.integers(-10**6, 10**6)), min_size=2,
                               max_size=3), _json)
_geometry = st.one_of(
    st.none(), _json,
    st.fixed_dictionaries({"type": st.just("Point"), "coordinates": _position}),
    st.fixed_dictionaries({"type": st.just("MultiPoint"), "coordinates": st.one_of(st.lists(_position, max_size=4),
                                                                                   _json)}),
    st.fixed_dictionaries({"type": st.sampled_from(["Polygon", "LineString", 3, None]), "coordinates": _json}),
)
_classification = st.one_of(_names, _json, st.fixed_dictionaries({"name": st.one_of(_names, _json)}),
                            st.fixed_dictionaries({"names": st.one_of(st.lists(_names, max_size=3), _json)}))
_properties = st.one_of(_json, st.fixed_dictionaries(
    {"classification": _classification},
    optional={"napari_cellularity": st.one_of(_json, st.fixed_dictionaries({"scores": _json}))}))
_feature = st.one_of(_json, st.fixed_dictionaries(
    {"type": st.just("Feature"), "geometry": _geometry}, optional={"properties": _properties}))
_meta = st.fixed_dictionaries({}, optional={
    "source": st.one_of(st.sampled_from(["manual", "model:x@1", "other"]), _json),
    "slide_path": st.one_of(st.text(max_size=10), _json), "mpp": st.one_of(st.floats(), _json),
    "roi_estimates": st.one_of(_json, st.lists(st.one_of(_json, st.fixed_dictionaries(
        {"roi": st.one_of(st.lists(st.floats(), max_size=5), _json), "cellularity_pct": st.one_of(st.floats(), _json)})),
        max_size=3))})
geojson_documents = st.one_of(
    _json, st.lists(_feature, max_size=4), _feature,
    st.fixed_dictionaries({"type": st.just("FeatureCollection"), "features": st.one_of(st.lists(_feature, max_size=5),
                                                                                       _json)},
                          optional={"napari_cellularity": st.one_of(_meta, _json)}),
)


def check_geojson(doc: object) -> None:
    """Parse a GeoJSON document (serialised as a file, as the readers see it)."""
    from napari_cellularity.annotations.geojson_io import read_geojson_document

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.geojson"
        path.write_text(json.dumps(doc, allow_nan=True), encoding="utf-8")
        _named(read_geojson_document, path)


def check_geojson_text(text: str) -> None:
    from napari_cellularity.annotations.geojson_io import read_geojson_document

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.geojson"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        _named(read_geojson_document, path)


# --------------------------------------------------------------------------------- CSV
_cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                   _names, st.text(max_size=8), st.just(""), st.sampled_from(["nan", "inf", "-1e309", "1e309"]))
_headers = st.lists(st.sampled_from(["x", "y", "class", "score", "Centroid X µm", "Centroid Y µm", "Class", "X",
                                     "row", "col", "label", "other", ""]), min_size=0, max_size=6)
csv_tables = st.tuples(_headers, st.lists(st.lists(_cells, max_size=7), max_size=6),
                       st.sampled_from([",", "\t", ";"]), st.one_of(st.none(), st.floats(-1, 5)))


def check_csv(table: tuple) -> None:
    from napari_cellularity.annotations.csv_io import read_points_csv

    header, rows, delimiter, mpp = table
    text = "\n".join(delimiter.join(r) for r in [header, *rows]) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.csv"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        _named(read_points_csv, path, mpp=mpp if mpp is None or mpp > 0 else None)


# --------------------------------------------------------------------------------- CLI arguments
_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**12, 10**12).map(str),
                     st.sampled_from(["nan", "-inf", "1e9", "1e-9", "0", "-0", "0x10", "1_000", " 1", "½", ""]),
                     st.text(max_size=6))
_roi = st.one_of(st.lists(_numbers, min_size=0, max_size=5).map(",".join), _numbers)
cli_arguments = st.lists(st.one_of(
    st.tuples(st.just("--mpp"), _numbers), st.tuples(st.just("--roi"), _roi),
    st.tuples(st.just("--batch-size"), _numbers), st.tuples(st.sampled_from(["--roi=", "--mpp="]), _roi),
), max_size=3)


def check_cli_arguments(options: list[tuple[str, str]]) -> None:
    """Parse ``analyze IN --out OUT <options>``: argparse's exit 2, or values that passed every check."""
    argv = ["analyze", "in.png", "--out", "out"]
    for flag, value in options:
        argv += [flag + value] if flag.endswith("=") else [flag, value]
    parser = _parser()
    with warnings.catch_warnings(), _quiet_stderr():
        try:
            args = parser.parse_args(join_negative_values(argv))
        except SystemExit as exc:
            assert exc.code == 2, exc.code
            return
    if args.mpp is not None:
        assert math.isfinite(args.mpp) and MPP_RANGE[0] <= args.mpp <= MPP_RANGE[1], args.mpp
    if args.roi is not None:
        values = [int(v) for v in args.roi.split(",")]
        assert len(values) == 4 and min(values[:2]) >= 0 and min(values[2:]) >= 1, values
        assert max(values) <= MAX_ROI_SIDE_PX
    assert args.batch_size is None or 1 <= args.batch_size <= 1024  # None: automatic


@functools.lru_cache(maxsize=1)
def _parser():
    return build_parser()


class _quiet_stderr:
    def __enter__(self):
        import contextlib
        import sys

        self._redirect = contextlib.redirect_stderr(io.StringIO())
        self._redirect.__enter__()
        return sys

    def __exit__(self, *exc):
        return self._redirect.__exit__(*exc)


# --------------------------------------------------------------------------------- images
_dtypes = st.sampled_from(["uint8", "uint16", "int16", "float32", "bool", "int32"])
images = st.fixed_dictionaries({
    "rows": st.integers(1, 48), "cols": st.integers(1, 48), "channels": st.sampled_from([0, 1, 2, 3, 4, 5]),
    "dtype": _dtypes, "writer": st.sampled_from(["png", "jpg", "tif", "tif-tiled", "tif-cmyk", "tif-minwhite",
                                                 "tif-pyramid"]),
    "seed": st.integers(0, 2**16), "corrupt": st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
    "truncate": st.one_of(st.none(), st.floats(0, 1)),
})


def write_image(spec: dict, folder: Path) -> Path | None:
    """Write the image ``spec`` describes (None when the writer refuses the combination)."""
    rng = np.random.default_rng(spec["seed"])
    shape = (spec["rows"], spec["cols"]) + ((spec["channels"],) if spec["channels"] else ())
    dtype = np.dtype(spec["dtype"])
    data = rng.integers(0, 2, shape).astype(bool) if dtype.kind == "b" else (
        rng.random(shape).astype(dtype) if dtype.kind == "f" else
        rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True))
    writer = spec["writer"]
    data = _fit_writer(writer, data)
    path = folder / ("img." + ("png" if writer == "png" else "jpg" if writer == "jpg" else "tif"))
    try:
        _write(writer, path, data)
    except Exception:  # noqa: BLE001 - the writer refused this dtype/shape: nothing to test
        return None
    raw = bytearray(path.read_bytes())
    for where, value in spec["corrupt"]:
        if raw:
            raw[min(len(raw) - 1, int(where * len(raw)))] = value
    if spec["truncate"] is not None:
        raw = raw[: int(spec["truncate"] * len(raw))]
    path.write_bytes(bytes(raw))
    return path


def _fit_writer(writer: str, data: np.ndarray) -> np.ndarray:
    """Bend the generated array into what the writer accepts (so most examples reach the reader)."""
    if writer in ("png", "jpg"):
        keep16 = writer == "png" and data.dtype == np.uint16 and data.ndim == 2
        if not keep16 and data.dtype != np.uint8:
            data = (data.astype(np.float64) % 256).astype(np.uint8)
        if data.ndim == 3 and data.shape[2] not in ((3, 4) if writer == "png" else (3, 4)):
            data = np.repeat(data[..., :1], 3, axis=2)
    elif writer == "tif-cmyk":
        data = data if data.dtype in (np.uint8, np.uint16) else data.astype(np.uint8)
        data = data if data.ndim == 3 and data.shape[2] == 4 else np.repeat(
            (data[..., 0] if data.ndim == 3 else data)[..., None], 4, axis=2)
    return data


def _write(writer: str, path: Path, data: np.ndarray) -> None:
    import tifffile
    from PIL import Image

    if writer in ("png", "jpg"):
        image = Image.fromarray(data)
        if writer == "jpg" and image.mode == "RGBA":
            image = Image.frombytes("CMYK", image.size, image.tobytes())  # a CMYK JPEG
        image.save(path)
    elif writer == "tif":
        tifffile.imwrite(path, data)
    elif writer == "tif-tiled":
        tifffile.imwrite(path, data, tile=(16, 16))
    elif writer == "tif-cmyk":
        tifffile.imwrite(path, data, photometric="separated")
    elif writer == "tif-minwhite":
        tifffile.imwrite(path, data, photometric="miniswhite")
    else:
        with tifffile.TiffWriter(path) as tif:
            tif.write(data, tile=(16, 16), subifds=1)
            tif.write(data[::2, ::2], tile=(16, 16), subfiletype=1)


def check_image(spec: dict) -> None:
    """Open a generated (possibly corrupted) image, read a region and a thumbnail: RGB uint8 or a SlideError."""
    from napari_cellularity.io.slide import open_slide

    with tempfile.TemporaryDirectory() as tmp:
        path = write_image(spec, Path(tmp))
        if path is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with open_slide(path, mpp=0.5) as slide:
                    rows, cols = slide.dimensions
                    region = slide.read_region((rows // 2, cols // 2), (5, 7))
                    thumb = slide.thumbnail(16)
                    level = np.asarray(slide.levels[-1])
            except SlideError:
                return
    assert region.shape == (5, 7, 3) and region.dtype == np.uint8
    assert thumb.dtype == np.uint8 and thumb.ndim == 3 and thumb.shape[2] == 3
    assert level.dtype == np.uint8 and level.shape[2] == 3


def _named(fn, *args, **kwargs) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn(*args, **kwargs)
        except NAMED:
            pass


TARGETS = {
    "geojson": (check_geojson, geojson_documents),
    "geojson-text": (check_geojson_text, st.text(max_size=200)),
    "csv": (check_csv, csv_tables),
    "cli": (check_cli_arguments, cli_arguments),
    "image": (check_image, images),
}

__all__ = ["NAMED", "TARGETS"]
