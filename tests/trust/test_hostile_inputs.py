"""The hostile-input table (issue 17): one row per case, each run through the command line.

Every row asserts the exit code, that a problem is reported on one line naming the file (or the
argument) and the problem, that no traceback is printed, and that the output folder holds
exactly what it held before plus the result folders the row expects (nothing else written,
removed or overwritten: files are compared by content and modification time).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from napari_cellularity.cli import main
from tests.trust import hostile as h

#: What the output folder holds before every row: an earlier result, a user's file, a user's
#: folder, and a hidden folder named like an old temporary one (which no run made).
PRESET = {"earlier/summary.json": "{}", "earlier/cells.csv": "x,y,class,score\n", "notes.txt": "mine",
          "keep/data.txt": "user data", ".good.old/precious.txt": "not ours", ".good.partial/x.txt": "not ours"}


@dataclass(frozen=True)
class Case:
    """One hostile input: how to build the command, what must come out."""

    build: Callable[[Path, Path], list[str]]  # (input folder, output folder) -> argv
    rc: int
    words: tuple[str, ...] = ()  # all in one stderr line (rc != 0) or anywhere in stderr (rc == 0)
    creates: tuple[str, ...] = ()  # result folders the row adds to the output folder
    isolate: bool = False  # run in a child process (native crash risk)
    hold_lock: str | None = None  # a result name whose lock another "run" holds
    setup: Callable[[Path], None] | None = None  # prepares the user model folder


def _analyze(*inputs: str, extra: tuple[str, ...] = ("--mpp", "0.5")) -> Callable[[Path, Path], list[str]]:
    def build(src: Path, out: Path) -> list[str]:
        return ["analyze", *[str(_make(src, name)) for name in inputs], "--out", str(out), *extra]
    return build


def _info(name: str, *extra: str) -> Callable[[Path, Path], list[str]]:
    def build(src: Path, out: Path) -> list[str]:
        return ["info", str(_make(src, name)), *[e.replace("{out}", str(out)) for e in extra]]
    return build


def _models(src: Path, out: Path) -> list[str]:
    return ["models"]


def _finetune(sidecar: str, text: str) -> Callable[[Path, Path], list[str]]:
    def build(src: Path, out: Path) -> list[str]:
        folder = src / "points"
        folder.mkdir()
        h.good_png(folder, "img1.png")
        (folder / "dataset.json").write_text('{"mpp": 0.5}')
        (folder / sidecar).write_text(text)
        return ["train", "finetune", "--data", f"folder={folder}", "--steps", "1", "--out", str(out / "models")]
    return build


SHARED_SVS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"


def _make(src: Path, name: str) -> Path:
    """Build the input ``name`` (a recipe name, or a file name for a good PNG) in ``src``."""
    recipes = {
        "huge.png": lambda: h.png_header(src, 20_000, 20_000),
        "huge16.png": lambda: h.png_header(src, 60_000, 60_000, "huge16.png", bit_depth=16),
        "huge.tif": lambda: h.tiled_tiff_header(src, 4_000_000_000, 4_000_000_000),
        "lying.tif": lambda: h.tiled_tiff_header(src, 65_535, 65_535, "lying.tif"),
        "big.tif": lambda: h.tiled_tiff_header(src, 65_535, 65_535, "big.tif", every_tile=True),
        "pipe.png": lambda: h.fifo(src),
        "grey16.png": lambda: h.grey16_png(src),
        "cmyk.tif": lambda: h.cmyk_tiff(src),
        "cmyk.jpg": lambda: h.cmyk_jpeg(src),
        "zeroed.svs": lambda: h.svs_with_zeroed_header(src, _real_or_synthetic_svs(src)),
        "truncated.png": lambda: h.truncated(src, h.good_png(src, "whole.png"), 0.4, "truncated.png"),
        "truncated.svs": lambda: h.truncated(src, _real_or_synthetic_svs(src), 0.3, "truncated.svs"),
        "missing.png": lambda: src / "missing.png",
        "folder": lambda: src,
        "a/x.png": lambda: _in_sub(src, "a", "x.png"),
        "b/x.png": lambda: _in_sub(src, "b", "x.png"),
        "binary.png": lambda: _bytes(src, "binary.png", os.urandom(2048)),
        "empty.png": lambda: _bytes(src, "empty.png", b""),
        "text.svs": lambda: _bytes(src, "text.svs", b"hello, not a slide\n" * 40),
        "slide.xyz": lambda: _bytes(src, "slide.xyz", b"data"),
    }
    path = recipes[name]() if name in recipes else src / name
    if name not in recipes and not path.exists():
        h.good_png(src, name)
    return path


def _bytes(src: Path, name: str, data: bytes) -> Path:
    (src / name).write_bytes(data)
    return src / name


def _in_sub(src: Path, sub: str, name: str) -> Path:
    (src / sub).mkdir(exist_ok=True)
    return h.good_png(src / sub, name)


def _real_or_synthetic_svs(src: Path) -> Path:
    """The shared real SVS when present, else a small tiled TIFF written as ``.svs`` (same TIFF structure)."""
    if SHARED_SVS.exists():
        return SHARED_SVS
    import tifffile

    path = src / "synthetic.svs"
    tifffile.imwrite(path, h.he_like_image((256, 256)), tile=(64, 64), photometric="rgb",
                     description="Aperio Image Library v10.0.50\n256x256 |MPP = 0.5")
    return path


# ------------------------------------------------------------------------------------------ user models
def _user_model_file(home: Path, suffix: str = ".json") -> Path:
    return next((home / "models").glob(f"tiny-test*{suffix}"))


def _broken_config(text: str) -> Callable[[Path], None]:
    def setup(home: Path) -> None:
        (home / "models" / "broken.json").write_text(text)
    return setup


def _drop_hash(home: Path) -> None:
    cfg = _user_model_file(home)
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "weights_sha256": None}))


def _nan_weights(home: Path) -> None:
    from safetensors.torch import load_file, save_file

    from napari_cellularity.models.registry import file_sha256

    cfg = _user_model_file(home)
    weights = cfg.with_suffix(".safetensors")
    state = load_file(str(weights))
    key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(weights))
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "weights_sha256": file_sha256(weights)}))


def _truncated_lightgbm(home: Path) -> None:
    import numpy as np

    from napari_cellularity.features.cellularity_features import FEATURE_NAMES
    from napari_cellularity.features.regressors import CellularityConfig, save_cellularity_model
    from training.cellularity_fit import fit_lightgbm

    rng = np.random.default_rng(0)
    model = fit_lightgbm(rng.random((40, len(FEATURE_NAMES))), rng.random(40),
                         CellularityConfig(kind="cellularity-lgbm", name="cut", mpp=1.0), {"num_boost_round": 5})
    path = save_cellularity_model(model)
    txt = path.with_suffix(".txt")
    txt.write_text(txt.read_text()[: len(txt.read_text()) // 2])
    path.write_text(json.dumps({**json.loads(path.read_text()), "hashes": {}}))


GEOJSON_LIST_FEATURE = json.dumps({"type": "FeatureCollection", "features": [[1, 2]]})
CSV_NAN_ROW = "x,y,class\n10,12,tumor\n20,nan,lymphocyte\n"
CSV_TEXT_ROW = "x,y,class\n10,12,tumor\nabc,3,tumor\n"

CASES: dict[str, Case] = {
    # --------------------------------------------------------------- arguments, checked before any work
    "roi inf": Case(_analyze("good.png", extra=("--mpp", "0.5", "--roi", "0,0,inf,512")), 2, ("--roi", "integer")),
    "roi negative": Case(_analyze("good.png", extra=("--roi", "-10,0,512,512")), 2, ("--roi", "X and Y must be >= 0")),
    "roi negative with =": Case(_analyze("good.png", extra=("--roi=-10,0,512,512",)), 2, ("X and Y must be >= 0",)),
    "roi three numbers": Case(_analyze("good.png", extra=("--roi", "1,2,3")), 2, ("--roi", "X,Y,W,H")),
    "roi zero width": Case(_analyze("good.png", extra=("--roi", "0,0,0,5")), 2, ("W and H must be >= 1",)),
    "roi beyond any slide": Case(_analyze("good.png", extra=("--roi", "0,0,99999999999,5")), 2, ("larger than any",)),
    "mpp 1e9": Case(_analyze("good.png", extra=("--mpp", "1e9")), 2, ("--mpp", "plausible range")),
    "mpp 1e-9": Case(_analyze("good.png", extra=("--mpp", "1e-9")), 2, ("--mpp", "plausible range")),
    "mpp nan": Case(_analyze("good.png", extra=("--mpp", "nan")), 2, ("--mpp", "finite")),
    "mpp -inf": Case(_analyze("good.png", extra=("--mpp", "-inf")), 2, ("--mpp", "finite")),
    "mpp negative": Case(_analyze("good.png", extra=("--mpp", "-0.5")), 2, ("--mpp", "plausible range")),
    "mpp text": Case(_analyze("good.png", extra=("--mpp", "half")), 2, ("--mpp", "must be a number")),
    "batch size 0": Case(_analyze("good.png", extra=("--batch-size", "0")), 2, ("--batch-size", "between 1")),
    "batch size text": Case(_analyze("good.png", extra=("--batch-size", "x")), 2, ("--batch-size", "integer")),
    "out is a file": Case(_analyze("good.png", extra=("--mpp", "0.5", "--out", "{notes}")), 2, ("is a file",)),
    "unknown cellularity model": Case(_analyze("good.png", extra=("--mpp", "0.5", "--cellularity-model", "nope")),
                                      2, ("unknown cellularity model", "nope")),
    "unknown segmentation model": Case(_analyze("good.png", extra=("--mpp", "0.5", "--model", "nope@3")),
                                       2, ("nope@3",)),
    "thumbnail is a folder": Case(_info("good.png", "--thumbnail", "{out}/"), 2, ("--thumbnail", "is a folder")),
    "thumbnail unknown extension": Case(_info("good.png", "--thumbnail", "{out}/t.xyz"), 2,
                                        ("unknown image extension", ".xyz")),
    "thumbnail size 0": Case(_info("good.png", "--thumbnail-size", "0"), 2, ("--thumbnail-size",)),
    "info mpp 1e9": Case(_info("good.png", "--mpp", "1e9"), 2, ("--mpp", "plausible range")),
    # --------------------------------------------------------------- image front end (info)
    "tiff header 4e9 px": Case(_info("huge.tif"), 2, ("huge.tif", "claims", "corrupt")),
    "tiff header 65535 px, one tile": Case(_info("lying.tif"), 2, ("lying.tif", "tiles", "corrupt")),
    "png over PIL's limit": Case(_info("huge.png"), 2, ("huge.png", "limit")),
    "16-bit png over the limit": Case(_info("huge16.png"), 2, ("huge16.png", "limit")),
    "fifo named .png": Case(_info("pipe.png"), 2, ("pipe.png", "not a regular file")),
    "svs with zeroed header": Case(_info("zeroed.svs"), 2, ("zeroed.svs", "corrupt"), isolate=True),
    "truncated svs": Case(_info("truncated.svs"), 2, ("truncated.svs",), isolate=True),
    "text file as svs": Case(_info("text.svs"), 2, ("text.svs", "not a TIFF-based slide")),
    "truncated png": Case(_info("truncated.png"), 2, ("truncated.png", "cannot decode")),
    "random bytes as png": Case(_info("binary.png"), 2, ("binary.png", "cannot decode")),
    "empty png": Case(_info("empty.png"), 2, ("empty.png",)),
    "unknown extension": Case(_info("slide.xyz"), 2, ("slide.xyz", "unsupported file type")),
    "folder as slide": Case(_info("folder"), 2, ("is a directory",)),
    "missing file": Case(_info("missing.png"), 2, ("missing.png", "not found")),
    "good: 16-bit grey png": Case(_info("grey16.png"), 0),
    "good: cmyk tiff": Case(_info("cmyk.tif"), 0),
    "good: cmyk jpeg": Case(_info("cmyk.jpg"), 0),
    "good: 65535 px header, every tile": Case(_info("big.tif", "--mpp", "0.5"), 0),
    "good: non-ascii path": Case(_info("ünï cödé 病理.png"), 0),
    # --------------------------------------------------------------- analyze: output safety
    "stem '.' (..png)": Case(_analyze("..png"), 0, ("safe name",), creates=("image",)),
    "stem '..' (...png)": Case(_analyze("...png"), 0, ("safe name",), creates=("image",)),
    "same stem twice in one run": Case(_analyze("a/x.png", "b/x.png"), 0, ("x_2",), creates=("x", "x_2")),
    "output in use by another run": Case(_analyze("good.png"), 1, ("good.png", "another napari-cellularity run"),
                                         hold_lock="good"),
    "name taken by a user's folder": Case(_analyze("keep.png", "good.png"), 1,
                                          ("keep.png", "not a napari-cellularity result"), creates=("good",)),
    "earlier result is replaced": Case(_analyze("earlier.png"), 0, (), creates=("earlier",)),
    # --------------------------------------------------------------- analyze: a bad input fails alone
    "png bomb in a batch": Case(_analyze("huge.png", "good.png"), 1, ("huge.png", "limit"), creates=("good",)),
    "fifo in a batch": Case(_analyze("pipe.png", "good.png"), 1, ("pipe.png", "not a regular file"),
                            creates=("good",)),
    "4e9 px tiff in a batch": Case(_analyze("huge.tif", "good.png"), 1, ("huge.tif", "corrupt"), creates=("good",)),
    "zeroed svs in a batch": Case(_analyze("zeroed.svs", "good.png"), 1, ("zeroed.svs", "corrupt"),
                                  creates=("good",)),
    "missing file in a batch": Case(_analyze("missing.png", "good.png"), 1, ("missing.png", "not found"),
                                    creates=("good",)),
    "good: 16-bit grey png analysed": Case(_analyze("grey16.png"), 0, (), creates=("grey16",)),
    # --------------------------------------------------------------- models
    "user model: invalid JSON": Case(_models, 0, ("broken.json", "not valid JSON"), setup=_broken_config("{x")),
    "user model: a JSON list": Case(_models, 0, ("broken.json", "JSON object"), setup=_broken_config("[1]")),
    "user model: version as text": Case(
        _analyze("good.png"), 0, ("broken.json", "'version' must be an integer"), creates=("good",),
        setup=_broken_config('{"name": "tiny-test", "version": "9", "kind": "segmentation"}')),
    "user model: version nested": Case(
        _models, 0, ("broken.json", "'version' must be an integer"),
        setup=_broken_config('{"name": "x", "version": [1], "kind": "segmentation"}')),
    "user model without a hash": Case(_analyze("good.png"), 2, ("tiny-test", "no weights hash"), setup=_drop_hash),
    "user model with NaN weights": Case(_analyze("good.png"), 2, ("holds NaN",), setup=_nan_weights),
    "truncated LightGBM user model": Case(
        _analyze("good.png", extra=("--mpp", "0.5", "--cellularity-model", "cut")), 2, ("cut", "no weights hash"),
        setup=_truncated_lightgbm),
    # --------------------------------------------------------------- train finetune data
    "finetune: feature not an object": Case(_finetune("img1.geojson", GEOJSON_LIST_FEATURE), 2,
                                            ("img1.geojson", "feature 0")),
    "finetune: NaN row": Case(_finetune("img1.csv", CSV_NAN_ROW), 2, ("img1.csv", "line 3", "finite")),
    "finetune: text in a number column": Case(_finetune("img1.csv", CSV_TEXT_ROW), 2, ("img1.csv", "line 3")),
}


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _run(argv: list[str], isolate: bool, capsys) -> tuple[int, str]:
    if not isolate:
        rc = main(argv)
        return rc, capsys.readouterr().err
    code = "import sys; from napari_cellularity.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NAPARI_CELLULARITY_TEST_THREADS": "1"})
    return done.returncode, done.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, tmp_path, user_home, capsys, request):
    case = CASES[name]
    if case.setup is not None or case.build is _models or "analyze" in case.build.__qualname__:
        request.getfixturevalue("tiny_model")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for rel, text in PRESET.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    if case.setup is not None:
        case.setup(user_home)
    argv = [a.replace("{notes}", str(out / "notes.txt")) for a in case.build(src, out)]
    before = _snapshot(out)
    lock = contextlib.nullcontext()
    if case.hold_lock:
        from napari_cellularity.files import exclusive_lock

        lock = exclusive_lock(out / f".{case.hold_lock}.lock")
    with lock:
        rc, err = _run(argv, case.isolate, capsys)
    assert rc == case.rc, err
    assert "Traceback" not in err and "terminate called" not in err
    lines = err.splitlines()
    if case.rc != 0:
        assert any(all(w in line for w in case.words) for line in lines), err
    else:
        assert all(w in err for w in case.words), err
    after = _snapshot(out)
    replaced = {k for k in before if k.split("/")[0] in case.creates}
    assert {k: v for k, v in after.items() if k in before and k not in replaced} == \
        {k: v for k, v in before.items() if k not in replaced}, "a file the run did not make changed"
    new_tops = {k.split("/")[0] for k in after} - {k.split("/")[0] for k in before}
    assert new_tops == set(case.creates) - {k.split("/")[0] for k in before}, sorted(after)
    for folder in case.creates:
        assert (out / folder / "summary.json").is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".lock") and p.name != f".{case.hold_lock}.lock"]


def test_grey16_and_cmyk_are_read_with_their_real_colours(tmp_path):
    import numpy as np

    from napari_cellularity.io.slide import open_slide

    grey = np.asarray(open_slide(h.grey16_png(tmp_path)).levels[0])
    assert grey.max() < 255 and grey.min() > 0  # not all 255 ("no tissue")
    for path in (h.cmyk_tiff(tmp_path), h.cmyk_jpeg(tmp_path)):
        rgb = np.asarray(open_slide(path).levels[0])
        np.testing.assert_allclose(rgb.reshape(-1, 3).mean(axis=0), (0, 255, 255), atol=3)


def test_two_concurrent_runs_never_share_a_temporary_folder(tmp_path, tiny_model):
    """Two runs at once on the same --out and input: one writes, the other fails clearly; never 0 with gaps.

    Threads stand in for processes: the lock is ``flock`` on a freshly opened file, which two
    opens in one process contend for exactly as two processes do.
    """
    import threading

    from napari_cellularity.analysis.outputs import analyze_image
    from napari_cellularity.files import LockBusyError

    src = h.good_png(tmp_path, "same.png")
    out = tmp_path / "out"
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        try:
            analyze_image(src, out, mpp=0.5)
            outcomes.append("ok")
        except LockBusyError as exc:
            assert "another napari-cellularity run is writing" in str(exc)
            outcomes.append("busy")

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(outcomes) in (["busy", "ok"], ["ok", "ok"])
    summary = json.loads((out / "same" / "summary.json").read_text())
    masks = summary["outputs"]["masks"]
    for rel in ("cells.csv", "labels.tif", "overlay.png", "cellularity.csv", *([masks] if isinstance(masks, str) else masks)):
        assert (out / "same" / rel).exists(), rel
    assert sorted(p.name for p in out.iterdir()) == ["same"]
