"""Render documentation screenshots of the Analyze and Cellularity-report widgets.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py

It opens the synthetic sample slide (or ``--image PATH`` with ``--mpp``), docks the Analyze
and Cellularity report widgets, analyses the current view with the newest installed
segmentation model and saves ``docs/screenshot_analyze.png`` and
``docs/screenshot_report.png``. With ``--random-model`` (or when no model is installed) a
random-init network is registered in a temporary folder: the overlays are then noise, which
is fine for checking the layout only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def _register_random_model(home: Path) -> None:
    import torch

    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    torch.manual_seed(0)
    config = SegmentationConfig(name="random-layout-only", version=1)
    save_segmentation_model(build_network(config), config, home / "models")


def _settle(app, viewer, rounds: int = 20) -> None:
    for _ in range(rounds):
        app.processEvents()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="image or slide to show (default: the synthetic sample slide)")
    parser.add_argument("--mpp", type=float, help="µm per pixel of --image when it does not say")
    parser.add_argument("--random-model", action="store_true", help="use a random-init model (layout only)")
    parser.add_argument("--out", default=str(DOCS), help="output folder")
    args = parser.parse_args(argv)
    os.environ["NAPARI_CELLULARITY_SYNC"] = "1"  # run the analysis before the screenshot
    import torch

    torch.set_num_threads(1)
    from napari_cellularity.models.registry import list_models

    if args.random_model or not list_models("segmentation"):
        home = Path(tempfile.mkdtemp(prefix="nc_screens_"))
        os.environ["NAPARI_CELLULARITY_HOME"] = str(home)
        _register_random_model(home)
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    if args.image:
        viewer.open(args.image, plugin="napari-cellularity")
        if args.mpp:
            viewer.layers[-1].scale = (args.mpp, args.mpp)
    else:
        viewer.open_sample("napari-cellularity", "slide")
    _, analyze = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    _, report = viewer.window.add_plugin_dock_widget("napari-cellularity", "Cellularity report")
    app = QApplication.instance()
    viewer.reset_view()
    _settle(app, viewer)
    analyze.refresh_layers()
    analyze.device_combo.setCurrentIndex(analyze.device_combo.findData("cpu"))
    analyze.run()
    _settle(app, viewer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out / "screenshot_analyze.png"), canvas_only=False)
    for cls in ("normal", "lymphocyte"):
        analyze.class_checks[cls].setChecked(False)
    viewer.window._qt_window.raise_()
    _settle(app, viewer)
    viewer.screenshot(str(out / "screenshot_report.png"), canvas_only=False)
    print(analyze.status.text())
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
