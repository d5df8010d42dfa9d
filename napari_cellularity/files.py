"""The one home for where files go and how they are written.

* :func:`user_data_dir` — the per-user data folder (models, annotation fallbacks, caches).
* :func:`atomic_path` — write any file crash-safely: a fresh temporary name created with
  ``O_EXCL`` in the target folder (never follows a planted symlink), fsync, ``os.replace``.
* :func:`write_text_atomic` / :func:`write_bytes_atomic` — the common cases, with an
  optional ``.bak`` of the previous version.
* :func:`safe_filename` — a file or folder name made from untrusted text (input stems).
* :func:`exclusive_lock` — one writer per output: a lock file that another process cannot share.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import unicodedata
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


#: Names Windows reserves (also refused on shares mounted from Windows).
_RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
#: Longest name :func:`safe_filename` returns (bytes of UTF-8; file systems allow 255).
MAX_NAME_BYTES = 120


def safe_filename(text: str, default: str = "image") -> str:
    """A name for one file or folder made from untrusted ``text`` (e.g. an input file's stem).

    Path separators, control characters and characters Windows refuses become ``_``; leading
    dots and spaces are dropped (no hidden names, never ``.`` or ``..``), as are trailing dots
    and spaces; Windows device names get a ``_`` suffix; the result is at most
    :data:`MAX_NAME_BYTES` bytes of UTF-8. An empty result becomes ``default``.

    Examples
    --------
    >>> safe_filename("..")
    'image'
    >>> safe_filename("a/b\\c")
    'a_b_c'
    """
    name = _UNSAFE_CHARS.sub("_", unicodedata.normalize("NFC", str(text)))
    name = name.lstrip(". ").rstrip(". ")
    encoded = name.encode("utf-8")[:MAX_NAME_BYTES]
    name = encoded.decode("utf-8", errors="ignore").rstrip(". ")
    if not name:
        return default
    if name.split(".")[0].lower() in _RESERVED_NAMES:
        name += "_"
    return name


class LockBusyError(OSError):
    """Another process holds the lock: it is writing the same output right now."""


@contextmanager
def exclusive_lock(path: str | Path, what: str = "this output") -> Iterator[Path]:
    """Hold the lock file ``path`` for the duration of the ``with`` block, or fail at once.

    The file is created with ``O_CREAT | O_NOFOLLOW`` and locked with ``flock`` (released by
    the kernel when the process dies, so a killed run leaves no stale lock); the holder
    removes it on exit. A second process asking for the same lock gets
    :class:`LockBusyError` immediately. Where ``flock`` is missing (Windows) the lock is the
    ``O_EXCL`` creation of the file itself.

    Raises
    ------
    LockBusyError
        Another process holds the lock (``what`` names the output in the message).
    """
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    while True:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_EXCL if fcntl is None else 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise LockBusyError(errno.EBUSY, f"another run is writing {what} (lock {path})") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LockBusyError(errno.ELOOP, f"lock file {path} is a symbolic link; remove it") from None
            raise
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise LockBusyError(errno.EBUSY, f"another napari-cellularity run is writing {what} "
                                f"(lock {path}); wait for it to finish or choose another output folder") from None
        if _same_file(fd, path):  # not unlinked by the previous holder between open and flock
            break
        os.close(fd)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
