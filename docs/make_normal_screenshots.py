"""Screenshots of teaching a class in the app (issue #13), on real H&E (BRCA-M2C), in a 1366 x 768 window.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_normal_screenshots.py regions
    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_normal_screenshots.py teach

``regions``: a BRCA-M2C validation PNG (≈0.5 µm/px, stated in the widget as a user would), analysed with the
installed default model; in Annotate a polygon around the densest group of epithelial nuclei (from the
dataset's own labels, as a pathologist would circle a duct) is turned into ``normal`` annotations with
"All nuclei in here" and a stroma polygon is recorded as "No Normal epithelial here". Writes
``docs/screenshot_annotate_regions.png``.

``teach``: the before / after of issue #13. No open data separates normal from malignant epithelium, so the
honest stand-in is a class the shipped model never learned as its own: BRCA-M2C *stromal* nuclei, taught as
``normal``. On training images, complete regions around groups of stromal nuclei (every stromal nucleus inside
labelled ``normal``, the dataset's labels being complete) plus the images' malignant and lymphocyte labels as
points go through the Retrain widget's code path (``build_items`` → ``training.finetune.iter_finetune``);
the before / after screenshots show a *different* image. Writes ``docs/screenshot_normal_before.png`` and
``docs/screenshot_normal_after.png`` (and ``screenshot_normal_retrain.png``, the Retrain tab when it finished) and
prints the widget's before / after text, the counts and how the ``normal`` detections on the shown image match
its stromal labels (within 6 µm).

Inputs are read from ``../shared/data/brca_m2c`` (nothing is copied into the repository).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from make_screenshots import (  # docs/ is on sys.path when run
    BRCA_MPP,
    SCREEN,
    analyse_view,
    settle,
    shot,
)

DOCS = Path(__file__).resolve().parent
BRCA = DOCS.parent.parent / "shared" / "data" / "brca_m2c"
REGIONS_IMAGE = "val/images/TCGA-A8-A07E-01Z-00-DX1_55501_92001_1000_1000_0.93.png"
#: ``teach``: the training image (Retrain trains on the image it shows; regions around stromal nuclei, which it
#: has in all three kinds) and the different image (another patient) shown before / after.
TEACH_IMAGE = "train/images/TCGA-A7-A4SD-01Z-00-DX1_62501_26500_1000_1001_0.9872000000000001.png"
SHOW_IMAGE = "val/images/TCGA-A7-A2KD-01Z-00-DX1_91000_26001_1001_1000_0.9824.png"
REGIONS_PER_IMAGE = 4  # complete regions drawn on the training image (113 stromal nuclei in the run reported)
REGION_WINDOW_PX = 140
MATCH_UM = 6.0
#: BRCA-M2C class ids: 1 lymphocyte, 2 tumour / epithelial, 3 stromal.
LYMPHOCYTE, EPITHELIAL, STROMAL = 1, 2, 3


def labels(png: Path) -> np.ndarray:
    """(N, 3) rows of (row, col, class id) of a BRCA-M2C image."""
    txt = png.parent.parent / "labels" / f"{png.stem}_gt_class_coords.txt"
    return np.loadtxt(txt, dtype=int, ndmin=2)


def densest_group(points: np.ndarray, others: np.ndarray, window_px: int, shape: tuple[int, int]) -> np.ndarray:
    """The points of the ``window_px`` window holding most ``points`` and none of ``others`` (may be empty)."""
    best, best_n = np.zeros((0, 2)), 0
    for r in range(0, shape[0] - window_px + 1, window_px // 4):
        for c in range(0, shape[1] - window_px + 1, window_px // 4):
            def inside(p, r=r, c=c):
                return (p[:, 0] >= r) & (p[:, 0] < r + window_px) & (p[:, 1] >= c) & (p[:, 1] < c + window_px)
            sel = inside(points)
            if sel.sum() > best_n and not inside(others).any():
                best, best_n = points[sel], int(sel.sum())
    return best


def hull(points: np.ndarray, margin_px: float) -> np.ndarray:
    """Convex hull of ``points`` pushed ``margin_px`` outwards from its centre (an outline drawn around them)."""
    from scipy.spatial import ConvexHull

    ring = points[ConvexHull(points).vertices].astype(float)
    centre = ring.mean(axis=0)
    away = ring - centre
    return centre + away * (1 + margin_px / np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-6))


def _open(viewer, app, panel, png: Path):
    """Open a PNG as a user does (a copy in a temporary folder: autosave writes beside the image), state its
    resolution, analyse the whole image."""
    import shutil

    png = Path(shutil.copy(png, Path(tempfile.mkdtemp(prefix="nc_png_")) / png.name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (layer,) = viewer.open(str(png), plugin="napari-cellularity")
    panel.show_step(panel.analyze)
    panel.analyze.mpp_spin.setValue(BRCA_MPP)
    panel.analyze.state_resolution()
    viewer.reset_view()
    settle(app)
    print(f"{png.name}: {analyse_view(app, panel)}")
    from napari_cellularity.widgets._layers import HEATMAP_LAYER, prob_layer_name

    for name in [HEATMAP_LAYER] + [prob_layer_name(c) for c in ("malignant", "normal", "lymphocyte")]:
        if name in viewer.layers:
            viewer.layers[name].visible = False  # the rings, annotations and regions are what these show
    return layer


def _viewer():
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.set_geometry(0, 0, *SCREEN)
    _, panel = viewer.window.add_plugin_dock_widget("napari-cellularity", "Cellularity workflow")
    viewer.scale_bar.visible = True
    return viewer, QApplication.instance(), panel


def _frame(viewer, vertices_um: np.ndarray, margin_um: float) -> None:
    """Centre and zoom the camera on the box around ``vertices_um`` (world µm) plus ``margin_um``."""
    from napari_cellularity.widgets._camera import viewer_camera

    lo, hi = vertices_um.min(axis=0) - margin_um, vertices_um.max(axis=0) + margin_um
    height, width = viewer.canvas.size  # pixels
    zoom = min(height / (hi[0] - lo[0]), width / (hi[1] - lo[1]))
    viewer_camera(viewer).center = (lo[0] + height / zoom / 2, (lo[1] + hi[1]) / 2)  # top-aligned: the image fills below
    viewer_camera(viewer).zoom = zoom


def _draw_and_apply(viewer, panel, polygon_rc: np.ndarray, cls: str, kind: str):
    from napari_cellularity.widgets._regions import DRAW_LAYER

    box = panel.annotate.regions_box
    viewer.layers[DRAW_LAYER].add([polygon_rc], shape_type="polygon")
    box.class_combo.setCurrentIndex(box.class_combo.findData(cls))
    action = box.apply(kind)
    print(f"{kind} {cls} region: {panel.annotate.status.text()}")
    return action


def make_regions(out: Path) -> int:
    png = BRCA / REGIONS_IMAGE
    viewer, app, panel = _viewer()
    image = _open(viewer, app, panel, png)
    lab = labels(png)
    shape = tuple(image.data.shape[:2]) if not image.multiscale else tuple(image.data[0].shape[:2])
    epi = densest_group(lab[lab[:, 2] == EPITHELIAL, :2].astype(float), np.zeros((0, 2)), 120, shape)
    stroma = densest_group(lab[lab[:, 2] == STROMAL, :2].astype(float), lab[lab[:, 2] == EPITHELIAL, :2], 110, shape)
    panel.show_step(panel.annotate)
    _draw_and_apply(viewer, panel, hull(epi, 8.0), "normal", "complete")
    _draw_and_apply(viewer, panel, hull(stroma, 8.0), "normal", "negative")
    from napari_cellularity.widgets._regions import REGIONS_LAYER

    regions = viewer.layers[REGIONS_LAYER]
    viewer.layers.selection.active = regions
    _frame(viewer, np.concatenate([np.asarray(d) for d in regions.data]) * float(image.scale[-1]), margin_um=12.0)
    settle(app)
    print("hint:", panel.annotate.regions_box.hint.text().replace("\n", " | "))
    shot(viewer, app, out / "screenshot_annotate_regions.png")
    print("window geometry (left, top, width, height):", viewer.window.geometry())
    viewer.close()
    return 0


def teaching_annotations(png: Path, shape: tuple[int, int]):
    """Complete ``normal`` regions around the densest groups of stromal nuclei, with every labelled nucleus inside
    (stromal → normal, epithelial → malignant, lymphocyte → lymphocyte) as points: what a pathologist would
    produce by circling an area and labelling it completely."""
    from napari_cellularity.annotations.point_images import LabelRegion
    from napari_cellularity.annotations.points import PointAnnotations
    from napari_cellularity.annotations.regions import points_in_polygon

    lab = labels(png)
    names = {STROMAL: "normal", EPITHELIAL: "malignant", LYMPHOCYTE: "lymphocyte"}
    stroma = lab[lab[:, 2] == STROMAL, :2].astype(float)
    ann = PointAnnotations()
    for _ in range(REGIONS_PER_IMAGE):
        group = densest_group(stroma, np.zeros((0, 2)), REGION_WINDOW_PX, shape)
        if len(group) < 4:
            break
        outline = hull(group, 8.0)
        inside = points_in_polygon(lab[:, :2].astype(float), outline)
        ann = ann.concat(PointAnnotations(lab[inside, :2].astype(float), [names[c] for c in lab[inside, 2]]))
        ann = ann.with_regions([*ann.regions, LabelRegion(outline, "normal", "complete")])
        stroma = stroma[~points_in_polygon(stroma, outline)]
    return ann


def stromal_agreement(viewer, png: Path, image) -> str:
    """How the 'Nuclei: Normal epithelial' detections match the image's stromal labels (within MATCH_UM)."""
    from scipy.spatial import cKDTree

    from napari_cellularity.widgets._layers import points_layer_name

    lab = labels(png)
    truth = lab[lab[:, 2] == STROMAL, :2].astype(float)
    layer = viewer.layers[points_layer_name("normal")] if points_layer_name("normal") in viewer.layers else None
    found = np.zeros((0, 2)) if layer is None else np.asarray(layer.data, float)[:, -2:]
    if not len(found):
        return f"0 normal detections; {len(truth)} stromal nuclei labelled"
    radius = MATCH_UM / float(image.scale[-1])
    hit_found = cKDTree(truth).query(found, distance_upper_bound=radius)[0] < np.inf
    hit_truth = cKDTree(found).query(truth, distance_upper_bound=radius)[0] < np.inf
    return (f"{len(found)} normal detections, {hit_found.mean():.0%} of them within {MATCH_UM:g} µm of a labelled "
            f"stromal nucleus; {hit_truth.mean():.0%} of the {len(truth)} stromal nuclei found")


def make_teach(out: Path, steps: int | None = None) -> int:
    from napari_cellularity.widgets import _confirm

    viewer, app, panel = _viewer()
    show = BRCA / SHOW_IMAGE
    image = _open(viewer, app, panel, show)
    print("before:", stromal_agreement(viewer, show, image))
    shot(viewer, app, out / "screenshot_normal_before.png")
    viewer.layers.clear()
    png = BRCA / TEACH_IMAGE
    layer = _open(viewer, app, panel, png)
    panel.show_step(panel.annotate)
    settle(app)
    panel.annotate.set_annotations(teaching_annotations(png, tuple(layer.data.shape[:2])))
    print(f"{png.name}: {panel.annotate.regions_box.hint.text()}")
    panel.show_step(panel.retrain)
    if steps:
        panel.retrain.steps_spin.setValue(steps)
    panel.retrain.refresh()
    print("retrain counts:", panel.retrain.counts_label.text().replace("\n", " | "))
    print("steps:", panel.retrain.steps_spin.value(), "base:", panel.retrain.model_combo.currentText())
    panel.retrain.start_retrain()  # synchronous (NAPARI_CELLULARITY_SYNC=1): the widget's own code path
    settle(app)
    result = panel.retrain.result
    print("retrain:", panel.retrain.status.text())
    print("guard:", panel.retrain.metrics_label.text())
    if result is None:
        return 1
    viewer.reset_view()  # the Retrain tab is wider than Annotate's: frame the image again
    settle(app)
    shot(viewer, app, out / "screenshot_normal_retrain.png")
    _confirm.ask = lambda *a: True  # "Use it anyway…": the screenshot shows what it does, candidate or not
    panel.retrain.use_new_model()
    viewer.layers.clear()
    image = _open(viewer, app, panel, show)
    print("after:", stromal_agreement(viewer, show, image))
    shot(viewer, app, out / "screenshot_normal_after.png")
    viewer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["regions", "teach"])
    parser.add_argument("--out", default=str(DOCS), help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="teach: fine-tune steps (default: the widget's)")
    args = parser.parse_args(argv)
    os.environ["NAPARI_CELLULARITY_SYNC"] = "1"  # run each analysis before its screenshot
    os.environ.setdefault("NAPARI_CELLULARITY_HOME", tempfile.mkdtemp(prefix="nc_screens_"))  # no stale state
    if not (BRCA / REGIONS_IMAGE).is_file():
        print(f"missing data: {BRCA / REGIONS_IMAGE}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "regions":
        return make_regions(out)
    return make_teach(out, args.steps)


if __name__ == "__main__":
    sys.exit(main())
