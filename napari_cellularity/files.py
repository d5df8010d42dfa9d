"""The one home for where files go and how they are written.

* :func:`user_data_dir` — the per-user data folder (models, annotation fallbacks, caches).
* :func:`atomic_path` — write any file crash-safely: a fresh temporary name created with
  ``O_EXCL`` in the target folder (never follows a planted symlink), fsync, ``os.replace``.
* :func:`write_text_atomic` / :func:`write_bytes_atomic` — the common cases, with an
  optional ``.bak`` of the previous version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Environment variable that moves the per-user data folder (tests, shared lab installs).
ENV_HOME = "NAPARI_CELLULARITY_HOME"


def user_data_dir() -> Path:
    """Per-user data folder (models, annotation fallbacks, caches); ``$NAPARI_CELLULARITY_HOME`` overrides."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-cellularity", appauthor=False))


def backup_path(path: str | Path) -> Path:
    """``<path>.bak``: the previous version kept by :func:`write_text_atomic`."""
    path = Path(path)
    return path.with_name(path.name + ".bak")


@contextmanager
def atomic_path(path: str | Path, *, keep_backup: bool = False, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file is created with ``mkstemp`` (``O_CREAT | O_EXCL``, mode 0600, a
    random name) in the destination folder, so a symlink planted at a predictable name is
    never followed and the final ``os.replace`` stays on one file system. Write to the
    yielded path with any library (``np.savez``, ``safetensors``, ``tifffile``); ``suffix``
    lets such libraries recognise the format. On an exception the temporary file is
    removed and ``path`` is left as it was.

    Parameters
    ----------
    path
        Destination; its folder must exist and be writable.
    keep_backup
        Copy the current file to ``<path>.bak`` (itself atomically) before replacing it.
    suffix
        Ending of the temporary name (e.g. ``".npz"`` for numpy, which appends one otherwise).

    Raises
    ------
    OSError
        When the folder is not writable or the disk is full.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        if keep_backup and path.is_file():
            with atomic_path(backup_path(path)) as bak_tmp:
                shutil.copyfile(path, bak_tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes, *, keep_backup: bool = False) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    with atomic_path(path, keep_backup=keep_backup) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, *, keep_backup: bool = False) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` so that a crash leaves the old or the new file.

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
    return write_bytes_atomic(path, text.encode("utf-8"), keep_backup=keep_backup)


def write_json_atomic(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically; creates the folder when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Flush the directory entry (POSIX); a no-op where directories cannot be opened."""
    _fsync_file(folder)
