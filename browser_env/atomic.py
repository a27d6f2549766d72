"""Atomic file writes, for every package: a file is the old one or the new one,
never part of one, after a crash or a kill too.

The data goes to a temp file in the target's directory (so that the rename
stays on one file system), is flushed and fsynced, renamed over the target,
and the directory is fsynced, so the rename itself survives a power cut. If
anything fails, the temp file is removed and the target is untouched. The
temp file is made as ``open(path, "w")`` would make the file (0666 less the
umask), not with ``mkstemp``'s 0600: episodes and reports are meant to be
shared. (The training service's state dir is private and keeps its own
writer, :func:`serve.store.write_json`.)
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

__all__ = [
    "fsync_dir",
    "fsync_tree",
    "unwritable_reason",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (module doc); its
    directory is made if missing. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as handle:  # "x": never an existing file
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_bytes_atomic` of ``text`` in UTF-8."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """:func:`write_text_atomic` of ``data`` as indented JSON (anything JSON
    cannot hold written as its ``str``), ending in a newline."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, which makes a rename in it durable; a platform that
    cannot open a directory is let be."""
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


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """fsync every file and directory under ``path`` (and ``path``), before a
    directory written by other code (a checkpoint ``save_pretrained`` filled) is
    renamed into place: the rename is durable once its parent is fsynced, the
    files' data only once they are. Links are not followed."""
    root = Path(path)
    for directory, _, files in os.walk(root):
        for name in files:
            file = Path(directory, name)
            if file.is_symlink():
                continue
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(directory)


def unwritable_reason(directory: str | os.PathLike[str]) -> str | None:
    """Why this process could not write files into ``directory``, making it (and
    its missing parents, as :func:`write_bytes_atomic` does) where needed: the
    nearest of it and its ancestors that exists is no directory, or one it may
    not write in. ``None`` when it could. For checks before long work."""
    existing = Path(directory).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None
