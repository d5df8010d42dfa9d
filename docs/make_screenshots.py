"""Render the README screenshots on real H&E, in a 1366 x 768 window with the one-panel workflow.

Run under a virtual display the size of a small laptop screen::

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_screenshots.py

Inputs (``../shared/data``; nothing is copied into the repository):

* the Aperio sample ``wsi/CMU-1-Small-Region.svs`` (0.499 µm/px recorded in the file);
* a BRCA-M2C validation PNG (``brca_m2c/val/images``, ≈0.5 µm/px, *not* recorded in the PNG:
  the widget refuses to analyse it until the resolution is stated).

Writes ``docs/screenshot_aperio_analyze.png``, ``docs/screenshot_aperio_report.png``,
``docs/screenshot_brca_resolution.png`` (the prompt), ``docs/screenshot_brca_analyze.png`` and
``docs/screenshot_retrain.png``, and prints the window geometry (it must fit 1366 x 768). Uses the
installed default segmentation model (``--random-model``: a random network, layout only).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
DATA = DOCS.parent.parent / "shared" / "data"
APERIO = DATA / "wsi" / "CMU-1-Small-Region.svs"
BRCA_DIR = DATA / "brca_m2c" / "val" / "images"
BRCA_MPP = 0.5
SCREEN = (1366, 768)


def _register_random_model(home: Path) -> None:
    import torch

    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    torch.manual_seed(0)
    config = SegmentationConfig(name="random-layout-only", version=1)
    save_segmentation_model(build_network(config), config, home / "models")


def settle(app, rounds: int = 30) -> None:
    for _ in range(rounds):
        app.processEvents()


def _close_toasts(app) -> None:
    """Close napari's notification pop-ups: they cover the scale bar (Qt API, no napari internals)."""
    for widget in app.allWidgets():
        if type(widget).__name__ == "NapariQtNotification" and widget.isVisible():
            widget.close()
    settle(app)


def shot(viewer, app, path: Path) -> None:
    _close_toasts(app)
    viewer.screenshot(str(path), canvas_only=False)


def _show_region(viewer, layer, center_px: tuple[float, float], height_um: float) -> None:
    """Centre the camera on level-0 pixel ``center_px`` showing ``height_um`` µm vertically."""
    from napari_cellularity.widgets._camera import viewer_camera

    scale = float(layer.scale[-1])
    viewer_camera(viewer).center = (center_px[0] * scale, center_px[1] * scale)
    viewer_camera(viewer).zoom = viewer.canvas.size[0] / height_um


def analyse_view(app, panel) -> str:
    analyze = panel.analyze
    analyze.refresh_layers()
    analyze.region_combo.setCurrentText("Current view")
    analyze.device_combo.setCurrentIndex(analyze.device_combo.findData("cpu"))
    analyze.run()
    settle(app)
    return analyze.status.text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brca", default=None, help="BRCA-M2C PNG (default: the first validation image)")
    parser.add_argument("--random-model", action="store_true", help="use a random-init model (layout only)")
    parser.add_argument("--out", default=str(DOCS), help="output folder")
    args = parser.parse_args(argv)
    os.environ["NAPARI_CELLULARITY_SYNC"] = "1"  # run each analysis before its screenshot
    os.environ.setdefault("NAPARI_CELLULARITY_HOME", tempfile.mkdtemp(prefix="nc_screens_"))  # no stale state
    brca = Path(args.brca) if args.brca else sorted(BRCA_DIR.glob("*.png"))[0]
    if not APERIO.is_file() or not brca.is_file():
        print(f"missing data: {APERIO} / {brca}", file=sys.stderr)
        return 2
    if args.random_model:
        _register_random_model(Path(os.environ["NAPARI_CELLULARITY_HOME"]))
    import napari
    from qtpy.QtWidgets import QApplication

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window.set_geometry(0, 0, *SCREEN)
    app = QApplication.instance()
    _, panel = viewer.window.add_plugin_dock_widget("napari-cellularity", "Cellularity workflow")
    viewer.scale_bar.visible = True
    # 1. Aperio slide: mpp from the file; analyse a 1024 x 1024 px view
    (aperio,) = viewer.open(str(APERIO), plugin="napari-cellularity")
    settle(app)
    _show_region(viewer, aperio, (1000, 1150), 1024 * float(aperio.scale[-1]))
    settle(app)
    print("aperio:", analyse_view(app, panel))
    shot(viewer, app, out / "screenshot_aperio_analyze.png")
    panel.show_step(panel.report)
    settle(app)
    shot(viewer, app, out / "screenshot_aperio_report.png")
    print("window geometry (left, top, width, height):", viewer.window.geometry())
    # 2. BRCA-M2C PNG: no resolution in the file -> prompt; state 0.5 µm/px -> analyse
    viewer.layers.clear()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (patch,) = viewer.open(str(brca), plugin="napari-cellularity")
    panel.show_step(panel.analyze)
    viewer.reset_view()
    settle(app)
    print("brca before stating:", panel.analyze.status.text())
    shot(viewer, app, out / "screenshot_brca_resolution.png")
    panel.analyze.mpp_spin.setValue(BRCA_MPP)
    panel.analyze.state_resolution()
    viewer.reset_view()
    settle(app)
    print("brca:", analyse_view(app, panel))
    shot(viewer, app, out / "screenshot_brca_analyze.png")
    panel.show_step(panel.retrain)
    settle(app)
    shot(viewer, app, out / "screenshot_retrain.png")
    print("window geometry (left, top, width, height):", viewer.window.geometry())
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
