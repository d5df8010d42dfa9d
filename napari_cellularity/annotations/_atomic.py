"""Crash-safe text writes: temp file in the same folder, fsync, ``os.replace``, optional ``.bak``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def backup_path(path: str | Path) -> Path:
    """``<path>.bak``: the previous version kept by :func:`write_text_atomic`."""
    path = Path(path)
    return path.with_name(path.name + ".bak")


def write_text_atomic(path: str | Path, text: str, *, keep_backup: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so that a crash leaves either the old or the new file.

    Parameters
    ----------
    path
        Destination; its folder must exist and be writable.
    text
        Full new content.
    keep_backup
        Copy the current file to ``<path>.bak`` (itself atomically) before replacing it.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        When the folder is not writable or the disk is full; the old file is left intact and
        the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_backup and path.exists():
            bak = backup_path(path)
            bak_tmp = bak.with_name(f".{bak.name}.{os.getpid()}.tmp")
            try:
                shutil.copyfile(path, bak_tmp)
                os.replace(bak_tmp, bak)
            finally:
                bak_tmp.unlink(missing_ok=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Flush the directory entry (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
