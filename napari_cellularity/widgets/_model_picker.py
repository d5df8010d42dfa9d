"""The segmentation-model picker of the Analyze widget: explicit default, candidates, restore.

The list shows every registered version; the default (``models/defaults.py``, chosen with
"Set as default", never "the newest") is selected on start and marked ``default``; a candidate
(a fine-tuned version worse than its base) is marked and can be selected or made the default
only after a warned confirmation (:func:`._confirm.confirm_candidate`).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from . import _confirm


class ModelPicker(QWidget):
    """Combo of registered segmentation models + info line + Set as default / Restore shipped default."""

    #: Emitted when the selection changed (read it with current_ref / current_config).
    model_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo, self.info = QComboBox(), QLabel()
        self.info.setWordWrap(True)
        self._accepted_ref: str | None = None
        refresh = QPushButton("Refresh")
        refresh.setToolTip("Re-scan the installed and user models")
        refresh.clicked.connect(self.refresh)
        self.default_button = QPushButton("Set as default")
        self.default_button.setToolTip("Use this model by default in every session (Analyze and Retrain)")
        self.default_button.clicked.connect(self.set_as_default)
        self.restore_button = QPushButton("Restore shipped default")
        self.restore_button.clicked.connect(self.restore_default)
        top, bottom = QHBoxLayout(), QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        bottom.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.combo, 1)
        top.addWidget(refresh)
        bottom.addWidget(self.default_button)
        bottom.addWidget(self.restore_button)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.addLayout(top)
        col.addLayout(bottom)
        col.addWidget(self.info)
        self.combo.currentIndexChanged.connect(self._on_index)

    # ------------------------------------------------------------------ list
    def refresh(self, *_: Any) -> None:
        """Re-scan the registry; keep the current choice, else select the default model."""
        from ..models.defaults import candidate_reason
        from ..models.registry import ModelNotFoundError, find_model, list_models

        current = self._accepted_ref
        entries = list(reversed(list_models("segmentation")))
        try:
            default_ref = find_model(None, "segmentation").ref
        except ModelNotFoundError:
            default_ref = None
        self.combo.blockSignals(True)
        self.combo.clear()
        for entry in entries:  # short entries (the panel is narrow); the source is in the info line
            marks = (["default"] if entry.ref == default_ref else []) + (
                ["candidate"] if candidate_reason(entry.config_path) else [])
            self.combo.addItem(f"{entry.ref} ({', '.join(marks)})" if marks else entry.ref, entry)
            self.combo.setItemData(self.combo.count() - 1, f"{entry.ref}: {entry.source} model"
                                   + "".join(f", {m}" for m in marks), Qt.ToolTipRole)
        refs = [e.ref for e in entries]
        want = current if current in refs else default_ref
        self.combo.setCurrentIndex(refs.index(want) if want in refs else (0 if refs else -1))
        self.combo.blockSignals(False)
        self._accepted_ref = self.current_ref()
        self._show_info()
        self.model_changed.emit()

    def current_ref(self) -> str | None:
        entry = self.combo.currentData()
        return None if entry is None else entry.ref

    def current_config(self) -> Any:
        """The selected model's :class:`SegmentationConfig` (None when nothing is installed)."""
        from ..models.config import SegmentationConfig

        entry = self.combo.currentData()
        return None if entry is None else SegmentationConfig.load(entry.config_path)

    def select(self, ref: str, *, confirmed_candidate: bool = False) -> None:
        """Select ``name@version`` (re-scanning first); a candidate asks unless ``confirmed_candidate``."""
        self.refresh()
        for i in range(self.combo.count()):
            if self.combo.itemData(i).ref == ref:
                if confirmed_candidate:
                    self._accepted_ref = ref
                self.combo.setCurrentIndex(i)
                return
        raise LookupError(f"model {ref!r} is not in the registry")

    # ------------------------------------------------------------------ choices
    def _on_index(self, *_: Any) -> None:
        from ..models.defaults import candidate_reason

        entry = self.combo.currentData()
        if entry is not None and entry.ref != self._accepted_ref:
            reason = candidate_reason(entry.config_path)
            if reason and not _confirm.confirm_candidate(self, entry.ref, reason, "select it for analysis"):
                self._select_silently(self._accepted_ref)
                return
            self._accepted_ref = entry.ref
        self._show_info()
        self.model_changed.emit()

    def _select_silently(self, ref: str | None) -> None:
        self.combo.blockSignals(True)
        for i in range(self.combo.count()):
            if self.combo.itemData(i).ref == ref:
                self.combo.setCurrentIndex(i)
        self.combo.blockSignals(False)

    def set_as_default(self) -> str | None:
        """Make the selected model the default of every later session (warned for a candidate)."""
        from ..models.defaults import candidate_reason, set_default

        entry = self.combo.currentData()
        if entry is None:
            return None
        reason = candidate_reason(entry.config_path)
        if reason and not _confirm.confirm_candidate(self, entry.ref, reason, "make it the default model"):
            return None
        ref = set_default(entry, confirmed_candidate=bool(reason))
        self.refresh()
        self.info.setText(f"{ref} is now the default model. " + self.info.text())
        return ref

    def restore_default(self) -> str | None:
        """Forget the user's default: the shipped model is the default (and selected) again."""
        from ..models.defaults import restore_shipped_default
        from ..models.registry import ModelNotFoundError, find_model

        restore_shipped_default()
        try:
            ref = find_model(None, "segmentation").ref
        except ModelNotFoundError:
            return None
        self._accepted_ref = ref
        self.refresh()
        return ref

    def _show_info(self) -> None:
        from ..models.defaults import candidate_reason

        try:
            cfg = self.current_config()
        except ValueError as exc:
            self.info.setText(f"unreadable config: {exc}")
            return
        if cfg is None:
            self.info.setText("no segmentation model installed: train one (Retrain) or install the default")
            return
        entry = self.combo.currentData()
        reason = candidate_reason(entry.config_path)
        self.info.setText(f"{cfg.mpp:g} µm/px, {entry.source} model" + (f"; CANDIDATE, {reason}" if reason else ""))
