"""Checking an uploaded archive of episode directories before it enters the store.

Why our own unpacking instead of ``tarfile``'s extraction filters: the
filters check names and types, but not a cap on total bytes written while
decompressing, a member-count or depth cap, PNG dimensions, zip archives, or
that the result is a set of valid episodes. Here every member is checked
before a byte of it is written, the bytes are counted as they are copied
(a decompression bomb stops at the cap, whatever the headers claim), files
are created with ``O_EXCL | O_NOFOLLOW`` inside a fresh private staging dir,
and the caller removes that dir on any rejection.

What an archive's own metadata costs is bounded before it is read, too. A tar
is decompressed here and fed to ``tarfile`` as a stream, counting every byte:
past ``max_uncompressed_bytes`` plus a few KiB of headers per member the
upload is refused (413), and the headers of one member (pax records, GNU long
names, sparse maps) may take at most 64 KiB, checked as they are read, so a
header that claims to be huge is never held in memory. A zip's
end-of-central-directory record and its central directory are scanned before
``zipfile`` parses them: more entries than ``max_members`` is refused first.
Episode files are validated one record at a time (``episode.json`` and each
``steps.jsonl`` line at most ``max_record_bytes``, 16 MiB by default), so
validation holds one step in memory, never a whole episode.

Accepted: a tar (plain, gzip, bzip2 or xz) or zip holding episode
directories (each with ``episode.json``) at any depth up to ``max_depth``.
Rejected with :class:`UploadRejected`: links of any kind, devices, FIFOs,
sparse files, zip entries whose mode says symlink or other non-regular types,
encrypted zip entries, absolute names, ``..``, backslashes, names that are not
UTF-8 or hold control characters, names over 1024 bytes or with a component
over 255 bytes, duplicate names, too many members, too deep paths, too many
bytes (413), PNGs larger than ``max_image_side`` or with a bad header,
corrupt data or unsupported compression, screenshot references that leave
their episode, and episodes that do not validate (422). Messages name paths
relative to the upload, never the server's.

Images are checked by content, not by name. What the loader and the learners
read as an image is a file an observation's ``screenshot`` names, whatever its
name (``Episode.screenshot`` hands it to Pillow, which goes by the bytes):
:func:`check_episodes` requires each such file to be a PNG (the format's
screenshots are) no larger than ``max_image_side``, from its header. While
unpacking, a member whose name ends in ``.png`` or whose bytes start with
the PNG signature has its header checked before it is written.
"""

from __future__ import annotations

import bz2
import dataclasses
import errno
import gzip
import json
import lzma
import os
import re
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import IO, Any

__all__ = ["MAX_RECORD_BYTES", "Limits", "UploadRejected", "check_episodes", "unpack"]

MAX_RECORD_BYTES = 16 << 20
"""Largest ``episode.json``, and largest ``steps.jsonl`` line, an upload may hold."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK = 1 << 16
_MAX_NAME_BYTES = 1024  # a member's whole name, UTF-8
_MAX_PART_BYTES = 255  # one component of it: NAME_MAX of common file systems
_MAX_HEADER_BYTES = 64 << 10  # the tar headers of one member, all together
_DECIMAL = re.compile(r"[0-9]{1,20}")  # a pax size as POSIX writes it, at most 20 digits
_TAR_BYTES_PER_MEMBER = 4 << 10  # header block, padding and a long-name record
_ZIP_BYTES_PER_ENTRY = 46 + _MAX_NAME_BYTES + 1024  # fixed part, name, extra and comment
# What a codec or archive reader raises for bytes it cannot decode.
_CORRUPT = (OSError, EOFError, zlib.error, lzma.LZMAError, tarfile.TarError, zipfile.BadZipFile)


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
        for member in _members(archive, limits):
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
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        EOFError,
        zlib.error,
        lzma.LZMAError,
        NotImplementedError,  # zipfile's answer to an unknown compression method
    ) as exc:
        raise UploadRejected(422, f"corrupt archive: {exc}") from None
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ):  # not str(exc): it holds our path
            raise UploadRejected(
                422, f"a member name the file system refuses: {exc.strerror}"
            ) from None
        raise
    return written


def check_episodes(
    root: Path, *, max_record_bytes: int = MAX_RECORD_BYTES, max_image_side: int | None = None
) -> list[str]:
    """Relative paths of the episode dirs under ``root``, each validated as the
    episode loader would (``episode.json``, every ``steps.jsonl`` line, the
    step order and count, the screenshots), streaming, one record in memory at
    a time. UploadRejected (422) for the first bad one; a screenshot reference
    is checked to stay inside its episode before anything looks for it, and
    the file it names, whatever its name, must be a PNG (by its header) with
    sides of at most ``max_image_side`` (None: any)."""
    from browser_env.episodes.format import EPISODE_FILE

    found = sorted(p.parent for p in root.rglob(EPISODE_FILE) if p.is_file())
    if not found:
        raise UploadRejected(422, f"no episode directories (none holds {EPISODE_FILE})")
    for directory in found:
        relative = directory.relative_to(root).as_posix()
        try:
            _check_episode(directory, max_record_bytes, max_image_side)
        except _Outside as exc:
            raise UploadRejected(
                422, f"episode {relative!r} refers to {_shown(exc.shot)} outside it ({exc.where})"
            ) from None
        except (ValueError, OSError) as exc:
            # An OSError's str() holds the server's path; its strerror does not.
            detail = (exc.strerror or type(exc).__name__) if isinstance(exc, OSError) else exc
            raise UploadRejected(422, f"episode {relative!r} is invalid: {detail}") from None
    return [d.relative_to(root).as_posix() for d in found]


# --- episodes ----------------------------------------------------------------


class _Outside(ValueError):
    def __init__(self, shot: str, where: str) -> None:
        super().__init__(shot)
        self.shot, self.where = shot, where


def _check_episode(directory: Path, max_record_bytes: int, max_side: int | None) -> None:
    """The checks of ``browser_env.episodes.loader.load_episode(check_files=True)``,
    one record at a time (the steps through the loader's own
    :func:`~browser_env.episodes.loader.iter_steps`); errors name files
    relative to the episode."""
    from browser_env.episodes.format import (
        EPISODE_FILE,
        STEPS_FILE,
        EpisodeFile,
        EpisodeFormatError,
    )
    from browser_env.episodes.loader import LineTooLongError, iter_steps

    header_path = directory / EPISODE_FILE
    if header_path.stat().st_size > max_record_bytes:
        raise ValueError(f"{EPISODE_FILE} is larger than {max_record_bytes} bytes")
    header = _record(EpisodeFile, header_path.read_bytes(), EPISODE_FILE)
    steps = 0
    steps_path = directory / STEPS_FILE
    if not steps_path.exists():
        if header.complete:
            raise ValueError(f"{STEPS_FILE} is missing")
    elif not steps_path.is_file():
        raise ValueError(f"{STEPS_FILE} is not a file")
    else:
        try:
            for number, record in iter_steps(
                steps_path, complete=header.complete, max_line_bytes=max_record_bytes
            ):
                _check_screenshot(
                    directory, record.observation, f"{STEPS_FILE} line {number}", max_side
                )
                steps += 1
        except LineTooLongError as exc:
            raise ValueError(
                f"{STEPS_FILE} line {exc.line} is longer than {max_record_bytes} bytes"
            ) from None
        except EpisodeFormatError as exc:  # its message holds the server's path
            raise ValueError(f"{STEPS_FILE} line {exc.line}: {exc.reason}") from None
    if header.complete and header.outcome is not None and header.outcome.steps != steps:
        raise ValueError(
            f"{EPISODE_FILE}: outcome.steps is {header.outcome.steps}"
            f" but {STEPS_FILE} holds {steps} steps"
        )
    if header.final_observation is not None:
        _check_screenshot(directory, header.final_observation, "final_observation", max_side)


def _record(cls: Any, data: bytes, where: str) -> Any:
    """``cls.from_json`` of the JSON document ``data``; any error as a ValueError
    that says ``where``."""
    try:
        return cls.from_json(json.loads(data.decode("utf-8")))
    except RecursionError:  # json's answer to a deeply nested document
        raise ValueError(f"{where}: nested too deeply") from None
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_screenshot(
    directory: Path, observation: dict[str, Any], where: str, max_side: int | None
) -> None:
    shot = observation.get("screenshot")
    if not shot:
        return
    # Containment first: whether a path outside the episode exists is no upload's business.
    path = PurePosixPath(shot)
    if "\x00" in shot or "\\" in shot or path.is_absolute() or ".." in path.parts:
        raise _Outside(shot, where)
    target = directory.joinpath(*path.parts)
    if not target.resolve().is_relative_to(directory.resolve()):
        raise _Outside(shot, where)
    if not target.is_file():
        raise ValueError(f"{where}: missing screenshot {_shown(shot)}")
    # Pillow reads it by its bytes, whatever the name: check the bytes.
    with target.open("rb") as f:
        head = f.read(24)
    try:
        _check_png_header(head, shot, max_side)
    except UploadRejected as exc:
        raise ValueError(f"{where}: screenshot {exc.message}") from None


# --- archive readers -------------------------------------------------------


def _members(archive: Path, limits: Limits) -> Iterator[_Member]:
    with archive.open("rb") as f:
        head = f.read(10)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        yield from _zip_members(archive, limits)
    else:
        yield from _tar_members(archive, head, limits)


class _Decoded:
    """The decompressed bytes of a tar upload, as a forward-only stream for
    ``tarfile``: counted (413 past ``limit``), read at most ``_CHUNK`` at a
    time, with the codec's errors as 422. While ``header_end`` is set (tarfile
    parsing one member's headers) reading past it is a 422."""

    def __init__(self, raw: IO[bytes], limit: int, max_uncompressed_bytes: int) -> None:
        self.raw = raw
        self.limit = limit
        self.max_uncompressed_bytes = max_uncompressed_bytes
        self.position = 0
        self.header_end: int | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.raw.read(_CHUNK if size < 0 else min(size, _CHUNK))
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise UploadRejected(422, f"corrupt archive: {exc}") from None
        self.position += len(data)
        if self.header_end is not None and self.position > self.header_end:
            raise UploadRejected(
                422, f"an archive member's headers take more than {_MAX_HEADER_BYTES} bytes"
            )
        if self.position > self.limit:
            raise UploadRejected(
                413, f"upload unpacks to more than {self.max_uncompressed_bytes} bytes"
            )
        return data


def _checked_tarinfo(stream: _Decoded) -> type[tarfile.TarInfo]:
    class CheckedTarInfo(tarfile.TarInfo):
        # tarfile's hook for one header block; for a pax or GNU long-name header
        # it reads the extension and the headers that follow, up to the member.
        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            if self.size < 0:
                raise UploadRejected(422, "an archive header with a negative size")
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise UploadRejected(422, f"{self.name!r} is a sparse file")
            if stream.header_end is not None:  # a header within a member's headers
                return super()._proc_member(tar)
            stream.header_end = stream.position + _MAX_HEADER_BYTES
            try:
                member = super()._proc_member(tar)
            finally:
                stream.header_end = None
            # tarfile turns a pax size it cannot read into 0 and takes a negative
            # one as it is: either would unpack as an empty (or cut) file.
            size = member.pax_headers.get("size")
            if size is not None and not _DECIMAL.fullmatch(size):
                raise UploadRejected(422, f"{member.name!r} has an invalid pax size {size[:40]!r}")
            if sum(len(k) + len(v) for k, v in tar.pax_headers.items()) > _MAX_HEADER_BYTES:
                raise UploadRejected(422, "the archive's global pax headers are too long")
            return member

    return CheckedTarInfo


def _tar_members(archive: Path, head: bytes, limits: Limits) -> Iterator[_Member]:
    with ExitStack() as stack:
        raw: IO[bytes] = stack.enter_context(archive.open("rb"))
        # The magic numbers tarfile's "r|*" looks for.
        if head.startswith(b"\x1f\x8b\x08"):
            raw = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        elif head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
            raw = stack.enter_context(bz2.BZ2File(raw))
        elif head.startswith(b"\xfd7zXZ"):
            raw = stack.enter_context(lzma.LZMAFile(raw))
        limit = (
            limits.max_uncompressed_bytes
            + limits.max_members * _TAR_BYTES_PER_MEMBER
            + _MAX_HEADER_BYTES
            + 2 * tarfile.RECORDSIZE
        )
        stream = _Decoded(raw, limit, limits.max_uncompressed_bytes)
        try:
            tar = tarfile.open(  # noqa: SIM115 - closed by the ExitStack
                fileobj=stream, mode="r|", tarinfo=_checked_tarinfo(stream)
            )
        except (tarfile.TarError, ValueError) as exc:
            raise UploadRejected(422, f"not a tar, tar.gz or zip archive: {exc}") from None
        stack.enter_context(tar)
        try:
            while (info := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every member it read; we need one
                if not (info.isreg() or info.isdir()) or info.issparse():
                    raise UploadRejected(422, f"{info.name!r} is not a regular file or directory")
                yield _Member(
                    info.name, info.isdir(), info.size, lambda info=info: tar.extractfile(info)
                )
        except (tarfile.TarError, ValueError) as exc:  # ValueError: e.g. a pax number
            raise UploadRejected(422, f"corrupt archive: {exc}") from None


def _zip_members(archive: Path, limits: Limits) -> Iterator[_Member]:
    _check_zip_directory(archive, limits.max_members)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, NotImplementedError, UnicodeDecodeError) as exc:
        raise UploadRejected(422, f"corrupt zip archive: {exc}") from None
    with zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            name = info.orig_filename  # zipfile cuts a name at NUL; the check must see it
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UploadRejected(422, f"{name!r} is not a regular file or directory")
            if info.flag_bits & 0x1:
                raise UploadRejected(422, f"{name!r} is encrypted")
            is_dir = name.endswith("/") or kind == stat.S_IFDIR
            yield _Member(name, is_dir, info.file_size, lambda info=info: _open_zip(zf, info))


def _open_zip(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """``zf.open(info)``, whose errors are the archive's (422): it seeks to the
    member's local header (an offset the archive made up: EINVAL), and reads
    and decodes the header's name (not UTF-8 though flagged so)."""
    try:
        return zf.open(info)
    except OSError as exc:  # reading the upload: no path of ours in it
        problem = exc.strerror or type(exc).__name__
    except (zipfile.BadZipFile, EOFError, UnicodeDecodeError, ValueError) as exc:
        problem = str(exc)
    raise UploadRejected(
        422,
        f"corrupt zip archive: the local header of member {_shown(info.orig_filename)} "
        f"cannot be read: {problem}",
    )


def _check_zip_directory(archive: Path, max_members: int) -> None:
    """Refuse a zip whose central directory lists more than ``max_members``
    entries, reading it entry by entry: ``zipfile`` would read the whole
    directory into memory and make an object of every entry first. The
    directory is located as ``zipfile`` locates it."""
    with archive.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        tail_start = max(size - (1 << 16) - 22, 0)
        f.seek(tail_start)
        tail = f.read()
        if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\0\0":
            at = len(tail) - 22  # no archive comment
        else:
            at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            raise UploadRejected(422, "corrupt zip archive: no end of central directory")
        entries, cd_size = struct.unpack_from("<HL", tail, at + 10)
        cd_end = tail_start + at
        if cd_end >= 76:  # a zip64 locator and record right before it, as zipfile reads them
            f.seek(cd_end - 76)
            record, locator = f.read(56), f.read(20)
            if locator[:4] == b"PK\x06\x07" and record[:4] == b"PK\x06\x06":
                entries, cd_size = struct.unpack_from("<QQ", record, 32)
                cd_end -= 76
        if entries > max_members:
            raise UploadRejected(422, f"the zip lists {entries} members; at most {max_members}")
        if cd_size > max_members * _ZIP_BYTES_PER_ENTRY or cd_size > cd_end:
            raise UploadRejected(
                422, f"the zip's central directory of {cd_size} bytes is too large"
            )
        f.seek(cd_end - cd_size)
        counted = read = 0
        while read < cd_size:
            entry = f.read(46)
            if len(entry) != 46 or entry[:4] != b"PK\x01\x02":
                raise UploadRejected(422, "corrupt zip archive: bad central directory")
            counted += 1
            if counted > max_members:
                raise UploadRejected(422, f"more than {max_members} archive members")
            skip = sum(struct.unpack_from("<3H", entry, 28))  # name, extra, comment
            f.seek(skip, os.SEEK_CUR)
            read += 46 + skip


# --- names and copying -------------------------------------------------------


def _shown(text: str) -> str:
    """``text`` for a message: quoted, and cut if long."""
    return repr(text) if len(text) <= 100 else f"{text[:100]!r}..."


def _safe_parts(name: str, max_depth: int) -> tuple[str, ...]:
    shown = _shown(name)
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # tarfile keeps undecodable bytes as surrogates
        raise UploadRejected(422, f"member name {shown} is not UTF-8") from None
    if len(encoded) > _MAX_NAME_BYTES:
        raise UploadRejected(422, f"member name {shown} is longer than {_MAX_NAME_BYTES} bytes")
    if not name or "\\" in name or any(unicodedata.category(c) == "Cc" for c in name):
        raise UploadRejected(422, f"bad member name {shown}")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise UploadRejected(422, f"absolute member name {shown}")
    parts = tuple(p for p in path.parts if p != ".")
    if ".." in parts:
        raise UploadRejected(422, f"member name {shown} leaves the archive")
    if len(parts) > max_depth:
        raise UploadRejected(422, f"{shown} is deeper than {max_depth} levels")
    if any(len(p.encode("utf-8")) > _MAX_PART_BYTES for p in parts):
        raise UploadRejected(
            422, f"member name {shown} has a component longer than {_MAX_PART_BYTES} bytes"
        )
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
            try:
                # Never read more than the budget allows (+1 to notice going over).
                chunk = source.read(min(_CHUNK, budget - total + 1))
            except _CORRUPT as exc:  # the input's errors; the output's stay OSErrors
                raise UploadRejected(422, f"{name!r} is corrupt: {exc}") from None
            if not chunk:
                break
            if first and (name.lower().endswith(".png") or chunk.startswith(_PNG_SIGNATURE)):
                _check_png_header(chunk, name, max_side)
            first = False
            total += len(chunk)
            if total > budget:
                raise UploadRejected(413, "upload unpacks to more bytes than allowed")
            out.write(chunk)
    if first and name.lower().endswith(".png"):
        raise UploadRejected(422, f"{name!r} is an empty PNG")
    return total


def _check_png_header(chunk: bytes, name: str, max_side: int | None) -> None:
    """``chunk`` (a file's first bytes) starts a PNG whose sides are at most
    ``max_side`` (None: any); UploadRejected (422) naming ``name`` otherwise."""
    shown = _shown(name)
    if len(chunk) < 24:
        raise UploadRejected(422, f"{shown} is too short for a PNG header")
    if not chunk.startswith(_PNG_SIGNATURE) or chunk[12:16] != b"IHDR":
        raise UploadRejected(422, f"{shown} is not a PNG")
    width, height = struct.unpack(">II", chunk[16:24])
    if width == 0 or height == 0:
        raise UploadRejected(422, f"{shown} is {width}x{height} pixels")
    if max_side is not None and (width > max_side or height > max_side):
        raise UploadRejected(
            422, f"{shown} is {width}x{height} pixels; at most {max_side} per side"
        )
