"""One warned yes / no question (tests replace :func:`ask`; a modal dialog would block them)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QMessageBox


def ask(parent: Any, title: str, text: str) -> bool:
    """Show a warning with Yes / No (No is the default button); True when the user said Yes."""
    answer = QMessageBox.warning(parent, title, text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


def confirm_candidate(parent: Any, ref: str, reason: str, action: str) -> bool:
    """Ask before ``action`` (e.g. "select it for analysis") with the candidate model ``ref``."""
    return ask(parent, "Model worse than its base",
               f"{ref} is a candidate: {reason}.\n\nIts results on your slides may be worse than the model "
               f"it was made from. Do you really want to {action}?")
