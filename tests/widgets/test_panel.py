"""One panel fits 1366 x 768: four steps as tabs in scroll areas; the separate docks still work."""

from __future__ import annotations

import pytest

from napari_cellularity.widgets.panel import PANEL_SIZE_PX, SCROLLBAR_ROOM_PX, CellularityPanel

SCREEN_W, SCREEN_H = 1366, 768
#: napari's menu bar, dock title, tab bar, status bar and window frame take at most this much height.
CHROME_H = 160


@pytest.fixture
def panel(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Cellularity workflow")
    return viewer, dock, widget


def test_panel_size_hint_fits_1366_by_768(panel):
    viewer, dock, widget = panel
    assert isinstance(widget, CellularityPanel)
    assert [widget.tabs.tabText(i) for i in range(4)] == ["1 Analyze", "2 Report", "3 Annotate", "4 Retrain"]
    hint = widget.sizeHint()
    assert (hint.width(), hint.height()) == PANEL_SIZE_PX
    assert hint.width() <= SCREEN_W // 3 and hint.height() + CHROME_H <= SCREEN_H
    assert dock.minimumSizeHint().height() + CHROME_H <= SCREEN_H
    assert dock.minimumSizeHint().width() <= SCREEN_W // 3
    for i in range(widget.tabs.count()):
        step = widget.tabs.widget(i).widget()
        # nothing is cut sideways: every step fits beside the vertical scroll bar
        assert step.minimumSizeHint().width() + SCROLLBAR_ROOM_PX <= PANEL_SIZE_PX[0], widget.tabs.tabText(i)
    assert widget.minimumSizeHint().width() <= PANEL_SIZE_PX[0]


def test_panel_steps_share_the_session(panel):
    viewer, dock, widget = panel
    assert widget.analyze.picker.current_ref() == "tiny-test@1"
    widget.show_step(widget.retrain)
    assert widget.tabs.currentIndex() == 3 and widget.retrain.model_combo.currentText() == "tiny-test@1"


def test_separate_docks_still_open(make_napari_viewer):
    viewer = make_napari_viewer()
    for name in ("Analyze", "Cellularity report", "Annotate", "Retrain"):
        _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", name)
        assert widget is not None


def test_not_learned_notes_link_to_the_annotate_step(panel):
    """The "Annotate" link of a not-learned note (Analyze's toggles, the report) opens the Annotate tab."""
    viewer, dock, widget = panel
    widget.analyze.toggles.set_untrained(("normal",))
    assert "href='teach'" in widget.analyze.toggles.note.text()
    widget.analyze.toggles.note.linkActivated.emit("teach")
    assert widget.tabs.currentWidget().widget() is widget.annotate
    widget.show_step(widget.report)
    widget.report.summary_label.linkActivated.emit("teach")
    assert widget.tabs.currentWidget().widget() is widget.annotate
