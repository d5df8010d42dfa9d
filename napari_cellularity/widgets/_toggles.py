"""The "Show" toggles of the Analyze widget: one per cell class, the heatmap, its legend, the class map.

A class the selected model has not learned (``models.defaults.untrained_classes``: no annotated
cell of it in the model's recorded training / validation data) is greyed, unticked, and
explained in one line with the way to teach it (Annotate -> Retrain).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QCheckBox, QLabel, QVBoxLayout, QWidget

from ..models.config import CELL_CLASSES, CLASS_LABELS
from . import _layers as L
from ._legend import gradient_legend

GREY = "#8a8a8a"
#: Link colour readable on napari's dark and light themes (Qt's default link blue is not on dark).
LINK_COLOR = "#5fa8ff"


#: ``href`` of the "teach it" link in :func:`untrained_note` (opens the Annotate step).
TEACH_LINK = "teach"


def untrained_note(classes: Sequence[str], *, link: bool = False) -> str:
    """One line: what is not learned and how to teach it (``link``: rich text, Annotate as a link)."""
    if not classes:
        return ""
    names = ", ".join(CLASS_LABELS[c] for c in classes)
    annotate = f"<a href='{TEACH_LINK}' style='color: {LINK_COLOR};'>Annotate</a>" if link else "Annotate"
    return (f"{names}: not learned by this model (no such cells in its training data), so its "
            f"counts mean nothing. Teach it: {annotate} (mark cells) → Retrain.")


class ShowToggles(QWidget):
    """Class, heatmap and class-map checkboxes; call ``on_class(cls, visible)`` / ``on_heatmap(visible)`` /
    ``on_class_map(visible)``."""

    #: The user clicked the "Annotate" link of the not-learned note.
    teach_requested = Signal()

    def __init__(self, on_class: Callable[[str, bool], None], on_heatmap: Callable[[bool], None],
                 on_class_map: Callable[[bool], None] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(QLabel("Show:"))
        self.class_checks: dict[str, QCheckBox] = {}
        self.untrained: tuple[str, ...] = ()
        for cls in CELL_CLASSES:
            check = QCheckBox(CLASS_LABELS[cls])
            check.setChecked(True)
            check.toggled.connect(functools.partial(on_class, cls))
            col.addWidget(check)
            self.class_checks[cls] = check
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.RichText)
        self.note.linkActivated.connect(lambda _href: self.teach_requested.emit())
        self.note.setStyleSheet(f"color: {GREY};")
        self.note.setVisible(False)
        col.addWidget(self.note)
        self.heatmap_check = QCheckBox("Cellularity heatmap")
        self.heatmap_check.setChecked(True)
        self.heatmap_check.toggled.connect(on_heatmap)
        col.addWidget(self.heatmap_check)
        self.legend = gradient_legend(L.HEATMAP_COLORMAP, "0 %", "100 %", "cellularity")
        col.addWidget(self.legend)
        self.class_map_check = QCheckBox("Cell class map")
        self.class_map_check.setToolTip("Each pixel's most likely class, as one layer (made when ticked)")
        if on_class_map is not None:
            self.class_map_check.toggled.connect(on_class_map)
        col.addWidget(self.class_map_check)
        self.set_untrained(())

    def set_untrained(self, classes: Sequence[str]) -> None:
        """Grey out and untick ``classes`` (not learned); restore the others."""
        before, self.untrained = self.untrained, tuple(classes)
        for cls, check in self.class_checks.items():
            learned = cls not in self.untrained
            colour = L.CLASS_COLORS[cls] if learned else GREY
            check.setStyleSheet(f"QCheckBox {{ color: {colour}; font-weight: {'bold' if learned else 'normal'}; }}")
            check.setText(CLASS_LABELS[cls] + ("" if learned else " (not learned)"))
            check.setToolTip("" if learned else untrained_note([cls]))
            if not learned or cls in before:
                check.setChecked(learned)
        self.note.setText(untrained_note(self.untrained, link=True))
        self.note.setVisible(bool(self.untrained))
