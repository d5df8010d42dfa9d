"""Status labels that wrap anywhere a path or file name allows, so a long name never widens the panel.

A word-wrapped ``QLabel`` breaks only at spaces; a TCGA file name or an autosave path has none, and the
label's minimum width became the panel's (seen: the dock grew by 80 px after an autosave message).
"""

from __future__ import annotations

import re

from qtpy.QtWidgets import QLabel

ZERO_WIDTH_SPACE = "\u200b"
_BREAK_AFTER = re.compile(r"([/\\_.\-])(?=\S)")
#: Messages longer than this also go to the tooltip (the whole text, copyable).
TOOLTIP_CHARS = 60


def breakable(text: str) -> str:
    """``text`` with an invisible break opportunity after every ``/ \\ _ . -`` inside a word."""
    return _BREAK_AFTER.sub(r"\1" + ZERO_WIDTH_SPACE, text)


class WrapLabel(QLabel):
    """A word-wrapped status label; :meth:`text` returns the text as set (without break marks)."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setWordWrap(True)
        self._plain = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt API
        self._plain = str(text)
        super().setText(breakable(self._plain))
        self.setToolTip(self._plain if len(self._plain) > TOOLTIP_CHARS else "")

    def text(self) -> str:
        return self._plain


__all__ = ["WrapLabel", "breakable"]
