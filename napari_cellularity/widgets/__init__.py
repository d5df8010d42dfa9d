"""widgets subpackage: the napari docks (Analyze, Report, Annotate, Retrain and the one-panel workflow).

Importing it guards against the PySide6 6.12.0 / Python 3.11 ``None`` reference leak that
aborts long sessions (:mod:`._none_guard`).
"""

from ._none_guard import guard_none_refcount

guard_none_refcount()
