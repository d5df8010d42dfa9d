"""Screenshot of the reader and sample data in napari (needs a display: run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshot_reader.py [OUT_DIR]

Writes OUT_DIR/reader_slide.png (the sample pyramidal slide opened through the plugin's reader, µm
scale bar) and OUT_DIR/sample_patch.png (the synthetic patch with its ground-truth points).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(out_dir: Path) -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cellularity.io.samples import sample_slide_path

    out_dir.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.scale_bar.visible = True
    viewer.open(str(sample_slide_path()), plugin="napari-cellularity")
    viewer.reset_view()
    QApplication.processEvents()
    viewer.screenshot(str(out_dir / "reader_slide.png"), canvas_only=False)
    viewer.layers.clear()
    viewer.open_sample("napari-cellularity", "patch")
    viewer.reset_view()
    QApplication.processEvents()
    viewer.screenshot(str(out_dir / "sample_patch.png"), canvas_only=False)
    viewer.close()
    print(f"screenshots in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out/docs")))
