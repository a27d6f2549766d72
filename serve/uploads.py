"""Checking an uploaded archive of episode directories before it enters the store.

Why our own unpacking instead of ``tarfile``'s extraction filters: the
filters check names and types, but not a cap on total bytes written while
decompressing, a member-count or depth cap, PNG dimensions, zip archives, or
that the result is a set of valid episodes. Here every member is checked
before a byte of it is written, the bytes are counted as they are copied
(a decompression bomb stops at the cap, whatever the headers claim), files
are created with ``O_EXCL | O_NOFOLLOW`` inside a fresh private staging dir,
and the caller removes that dir on any rejection.

Accepted: a tar (plain, gzip, bzip2 or xz) or zip holding episode
directories (each with ``episode.json``) at any depth up to ``max_depth``.
Rejected with :class:`UploadRejected`: links of any kind, devices, FIFOs,
zip entries whose mode says symlink or other non-regular types, encrypted
zip entries, absolute names, ``..``, NUL or backslash in names, duplicate
names, too many members, too deep paths, too many bytes (413), PNGs larger
than ``max_image_side`` or with a bad header, screenshot references that
leave their episode, and episodes the loader rejects (422).
"""

from __future__ import annotations

import dataclasses
import lzma
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

__all__ = ["Limits", "UploadRejected", "check_episodes", "unpack"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK = 1 << 16


class UploadRejected(Exception):
    """An upload that must not enter the store; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class Limits:
    max_uncompressed_bytes: int
    max_members: int
    max_depth: int
    max_image_side: int


@dataclasses.dataclass
class _Member:
    name: str
    is_dir: bool
    size: int
    open: Any  # () -> binary file object, for regular files


def unpack(archive: Path, dest: Path, limits: Limits) -> int:
    """Unpack ``archive`` into the empty directory ``dest``, checking every member;
    returns the bytes written. Raises UploadRejected; ``dest`` may then hold a
    partial copy, which the caller removes."""
    written = members = 0
    try:
        for member in _members(archive):
            members += 1
            if members > limits.max_members:
                raise UploadRejected(422, f"more than {limits.max_members} archive members")
            parts = _safe_parts(member.name, limits.max_depth)
            if not parts:  # "./" itself
                continue
            target = dest.joinpath(*parts)
            _make_parents(dest, parts[:-1])
            if member.is_dir:
                try:
                    target.mkdir()
                except FileExistsError:
                    if not target.is_dir() or target.is_symlink():
                        raise UploadRejected(
                            422, f"{member.name!r} is both a file and a dir"
                        ) from None
                continue
            if written + member.size > limits.max_uncompressed_bytes:
                raise UploadRejected(
                    413, f"upload unpacks to more than {limits.max_uncompressed_bytes} bytes"
                )
            budget = limits.max_uncompressed_bytes - written
            with member.open() as source:
                written += _copy(source, target, budget, member.name, limits.max_image_side)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise UploadRejected(422, f"corrupt archive: {exc}") from None
    return written


def check_episodes(root: Path) -> list[str]:
    """Relative paths of the episode dirs under ``root``, each loaded with the
    episode loader's validation; UploadRejected (422) for the first bad one."""
    from browser_env.episodes.format import EPISODE_FILE, EpisodeFormatError
    from browser_env.episodes.loader import load_episode

    found = sorted(p.parent for p in root.rglob(EPISODE_FILE) if p.is_file())
    if not found:
        raise UploadRejected(422, f"no episode directories (none holds {EPISODE_FILE})")
    for directory in found:
        relative = directory.relative_to(root).as_posix()
        try:
            episode = load_episode(directory, check_files=True)
        except (EpisodeFormatError, OSError, ValueError, TypeError, KeyError) as exc:
            raise UploadRejected(422, f"episode {relative!r} is invalid: {exc}") from None
        observations = [s.observation for s in episode.steps] + [episode.final_observation]
        for obs in observations:
            shot = (obs or {}).get("screenshot")
            if shot and not (directory / shot).resolve().is_relative_to(directory.resolve()):
                raise UploadRejected(422, f"episode {relative!r} refers to {shot!r} outside it")
    return [d.relative_to(root).as_posix() for d in found]


# --- archive readers -------------------------------------------------------


def _members(archive: Path) -> Iterator[_Member]:
    with archive.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or head == b"PK\x05\x06":
        yield from _zip_members(archive)
        return
    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by `with tar` below
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UploadRejected(422, f"not a tar, tar.gz or zip archive: {exc}") from None
    with tar:
        try:
            for info in tar:
                if not (info.isreg() or info.isdir()) or info.issparse():
                    raise UploadRejected(422, f"{info.name!r} is not a regular file or directory")
                yield _Member(
                    info.name,
                    info.isdir(),
                    info.size,
                    lambda info=info: tar.extractfile(info),
                )
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise UploadRejected(422, f"corrupt archive: {exc}") from None


def _zip_members(archive: Path) -> Iterator[_Member]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadRejected(422, f"corrupt zip archive: {exc}") from None
    with zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UploadRejected(422, f"{info.filename!r} is not a regular file or directory")
            if info.flag_bits & 0x1:
                raise UploadRejected(422, f"{info.filename!r} is encrypted")
            is_dir = info.filename.endswith("/") or kind == stat.S_IFDIR
            yield _Member(info.filename, is_dir, info.file_size, lambda info=info: zf.open(info))


# --- names and copying -------------------------------------------------------


def _safe_parts(name: str, max_depth: int) -> tuple[str, ...]:
    if not name or "\x00" in name or "\\" in name:
        raise UploadRejected(422, f"bad member name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise UploadRejected(422, f"absolute member name {name!r}")
    parts = tuple(p for p in path.parts if p != ".")
    if ".." in parts:
        raise UploadRejected(422, f"member name {name!r} leaves the archive")
    if len(parts) > max_depth:
        raise UploadRejected(422, f"{name!r} is deeper than {max_depth} levels")
    return parts


def _make_parents(dest: Path, parts: tuple[str, ...]) -> None:
    current = dest
    for part in parts:
        current = current / part
        try:
            current.mkdir()
        except FileExistsError:
            if current.is_symlink() or not current.is_dir():
                raise UploadRejected(
                    422, f"{current.relative_to(dest)} is a file and a dir"
                ) from None


def _copy(source: IO[bytes], target: Path, budget: int, name: str, max_side: int) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:
        raise UploadRejected(422, f"duplicate member {name!r}") from None
    total = 0
    first = True
    with os.fdopen(fd, "wb") as out:
        while True:
            # Never read more than the budget allows (+1 to notice going over).
            chunk = source.read(min(_CHUNK, budget - total + 1))
            if not chunk:
                break
            if first and name.lower().endswith(".png"):
                _check_png_header(chunk, name, max_side)
            first = False
            total += len(chunk)
            if total > budget:
                raise UploadRejected(413, "upload unpacks to more bytes than allowed")
            out.write(chunk)
    if first and name.lower().endswith(".png"):
        raise UploadRejected(422, f"{name!r} is an empty PNG")
    return total


def _check_png_header(chunk: bytes, name: str, max_side: int) -> None:
    if len(chunk) < 24:
        raise UploadRejected(422, f"{name!r} is too short for a PNG header")
    if not chunk.startswith(_PNG_SIGNATURE) or chunk[12:16] != b"IHDR":
        raise UploadRejected(422, f"{name!r} is not a PNG")
    width, height = struct.unpack(">II", chunk[16:24])
    if not (0 < width <= max_side and 0 < height <= max_side):
        raise UploadRejected(
            422, f"{name!r} is {width}x{height} pixels; at most {max_side} per side"
        )
