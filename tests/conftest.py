"""Shared test configuration: --runslow, offline data paths, per-test user data dir, thread limits."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Widgets run their generators synchronously when this is set (see widgets/_worker.py).
os.environ.setdefault("NAPARI_CELLULARITY_SYNC", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NAPARI_CELLULARITY_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


_SESSION: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus):
    _SESSION["exitstatus"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Skip interpreter finalisation once Qt was loaded.

    PySide6 can abort while the interpreter tears down Qt objects after all tests passed
    ("Fatal Python error: none_dealloc"), which would turn a green run red. Everything is reported
    by now, so leave with pytest's own exit status.
    """
    if "exitstatus" in _SESSION and any(m in sys.modules for m in ("PySide6", "PyQt5", "PyQt6")):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION["exitstatus"])


@pytest.fixture(scope="session", autouse=True)
def _limit_threads():
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("NAPARI_CELLULARITY_TEST_THREADS", min(2, os.cpu_count() or 1))))
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def user_home(tmp_path_factory, monkeypatch, request):
    """Each test gets its own user data dir (models, autosaves) so nothing leaks between tests.

    The shipped models are hidden too (tests register tiny models of their own); tests marked
    ``shipped_models`` see them.
    """
    home = tmp_path_factory.mktemp("nc_home")
    monkeypatch.setenv("NAPARI_CELLULARITY_HOME", str(home))
    if request.node.get_closest_marker("shipped_models") is None:
        monkeypatch.setenv("NAPARI_CELLULARITY_SHIPPED_MODELS", str(tmp_path_factory.mktemp("no_shipped")))
    return home


@pytest.fixture(autouse=True)
def _headless_gl(monkeypatch):
    """Let napari add image/labels layers under ``QT_QPA_PLATFORM=offscreen``.

    Offscreen Qt gives vispy no OpenGL context, so creating an image or labels visual fails while
    querying GL extensions / texture sizes. Tests never draw, so those two queries get fixed
    answers, as napari's own vispy tests do. Under a real display nothing is patched.
    """
    if os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        return
    try:
        import napari._vispy.layers.base as vispy_base
        import napari._vispy.layers.image as vispy_image
        import napari._vispy.layers.labels as vispy_labels
    except ImportError:
        return
    monkeypatch.setattr(vispy_image, "get_gl_extensions", lambda: "texture_float")
    for module in (vispy_base, vispy_image, vispy_labels):
        if hasattr(module, "get_max_texture_sizes"):
            monkeypatch.setattr(module, "get_max_texture_sizes", lambda: (2048, 2048))


#: A small random-init FPN (resnet18 encoder, 32-map decoder): fast tests of the full code path.
TINY_ARCH = {"decoder": "FPN", "encoder_name": "resnet18", "encoder_depth": 5, "decoder_pyramid_channels": 32,
             "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "decoder_dropout": 0.5,
             "in_channels": 3}


@pytest.fixture
def tiny_model(user_home) -> str:
    """Register a tiny random-init segmentation model ``tiny-test@1`` in the test's user registry."""
    import torch

    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    torch.manual_seed(0)
    config = SegmentationConfig(name="tiny-test", architecture=dict(TINY_ARCH), tile_size_px=64)
    save_segmentation_model(build_network(config), config)
    return config.ref


#: µm/px of the coarse tiny model (maps half the size of a 0.5 µm/px image: fast).
COARSE_MODEL_MPP = 1.0


@pytest.fixture(scope="session")
def _coarse_model_dir(tmp_path_factory):
    """A small random-init FPN at 1 µm/px with 128-px tiles, saved once per session."""
    import torch

    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    torch.manual_seed(0)
    config = SegmentationConfig(name="tiny-test", version=1, architecture={**TINY_ARCH, "decoder_dropout": 0.0},
                                mpp=COARSE_MODEL_MPP, tile_size_px=128)
    folder = tmp_path_factory.mktemp("tiny_model")
    save_segmentation_model(build_network(config), config, folder)
    return folder


@pytest.fixture
def coarse_model(_coarse_model_dir, user_home) -> str:
    """Register the 1 µm/px tiny model as ``tiny-test@1`` in the test's user registry."""
    import shutil

    shutil.copytree(_coarse_model_dir, user_home / "models", dirs_exist_ok=True)
    return "tiny-test@1"


def he_like_image(shape=(384, 448)):
    """A pink background with 60 dark-purple 8 x 8 'nuclei' (seeded): tissue for every tile."""
    import numpy as np

    rng = np.random.default_rng(0)
    img = np.full((*shape, 3), (230, 200, 220), np.uint8)
    for r, c in rng.integers(10, min(shape) - 10, size=(60, 2)):
        img[r - 4 : r + 4, c - 4 : c + 4] = (90, 40, 140)
    return img


@pytest.fixture
def small_big_threshold(monkeypatch):
    """Make 192 x 224 maps a 'big' region shown 4x downsampled (64 px long side)."""
    from napari_cellularity.analysis import display

    monkeypatch.setattr(display, "BIG_REGION_MAX_PX", 100)
    monkeypatch.setattr(display, "DISPLAY_MAX_SIDE_PX", 64)
    return 4


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when it is absent (e.g. on a user's machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
