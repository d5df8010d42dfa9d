"""Errors raised by the dataset loaders."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset is missing files, has unreadable or inconsistent annotations, or no mpp.

    The message names the file and says what to change.
    """
