"""Recorded episodes that cross Ray nodes, for ``runner=ray`` on a cluster.

``record_dir`` is a path on the driver's machine. A :class:`RolloutWorker`
actor on another node would write it on that node's disk, where the driver
(and whoever reads the run's ``episodes/`` afterwards) never sees it. So an
actor on another node records into a temp dir of its own, and each finished
episode goes back to the driver with its result (:func:`pack`: one
uncompressed tar, since the screenshots are PNGs already), where
:func:`unpack` puts it into ``record_dir`` under its own name and the
result's ``episode_dir`` is set to that path. An actor on the driver's node
writes ``record_dir`` directly. ``RolloutSpec.ship_episodes`` overrides the
choice (``True``: always, e.g. in tests; ``False``: never, for a
``record_dir`` on a filesystem that every node mounts at the same path).

Why not a shared filesystem: one cannot be assumed on a Ray cluster; the
episode bytes ride back in the result Ray already returns.

Nothing is lost quietly: an actor's temp dir (:func:`ship_root`) names its
process, so the next actor on that node removes the dirs of actors that
were killed before they could (with their unfinished episodes, which the
driver retried or recorded as failed); and an episode the driver cannot
unpack (a full disk, a name taken, a broken tar) is kept as the tar it came
in (:func:`keep_unshipped`), never extracted; and an episode an actor could
not send (its pack failed, or it was opened by a reset that raised) is
moved out of its temp dir when the actor closes (:func:`keep_unsent`).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from browser_env.atomic import write_bytes_atomic
from browser_env.episodes.writer import free_path

__all__ = ["keep_unsent", "keep_unshipped", "pack", "ship_root", "ships", "unpack"]

PREFIX = "browser-rl-episodes-"
"""An actor's temp dir is ``PREFIX<pid>-<random>`` in the node's temp dir."""


def ships(ship_episodes: bool | None, actor_node: str | None, driver_node: str | None) -> bool:
    """Whether an actor on ``actor_node`` sends its episodes back: ``ship_episodes``
    when it is set, else whether the actor runs on another node than the driver."""
    if ship_episodes is not None:
        return ship_episodes
    return driver_node is not None and actor_node != driver_node


def ship_root(temp_dir: str | os.PathLike[str] | None = None) -> Path:
    """A new private dir (``PREFIX<pid>-...``) for this process to record into,
    under ``temp_dir`` (default: the system's temp dir), after removing the
    dirs there that processes no longer alive left behind (:func:`orphans`)."""
    parent = Path(temp_dir if temp_dir is not None else tempfile.gettempdir())
    for orphan in orphans(parent):
        shutil.rmtree(orphan, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))


def orphans(parent: str | os.PathLike[str]) -> list[Path]:
    """The dirs :func:`ship_root` made under ``parent`` whose process has ended
    (this user's only: the others' are not ours to remove, and a pid that a
    live process of another user holds counts as alive)."""
    found = []
    for path in sorted(Path(parent).glob(f"{PREFIX}*-*")):
        pid = path.name[len(PREFIX) :].split("-", 1)[0]
        try:
            mine = path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid()
        except OSError:  # removed meanwhile
            continue
        if mine and pid.isdigit() and not _alive(int(pid)):
            found.append(path)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def keep_unshipped(data: bytes, root: str | os.PathLike[str], name: str) -> Path:
    """Writes the bytes of an episode that :func:`unpack` could not place to
    ``<root>.unshipped/<name>.tar`` (atomically; ``-N`` when taken), beside
    ``root`` so that no reader of ``root`` takes it for an episode; returns
    the path. The tar is not extracted: ``tar -xf`` it once the cause is fixed.

    Raises:
        OSError: it could not be written either (e.g. the disk is full).
    """
    base = Path(root)
    folder = base.with_name(f"{base.name}.unshipped")
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "episode"
    target = free_path(folder, stem, ".tar")  # the driver is this folder's one writer
    write_bytes_atomic(target, data)
    return target


def keep_unsent(
    root: str | os.PathLike[str], keep: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Moves every directory left in an actor's ``root`` (:func:`ship_root`) into
    ``keep`` (default: ``browser-rl-unsent`` in the node's temp dir; ``-N`` when
    a name is taken), removes ``root``, and returns where they went."""
    keep = Path(keep if keep is not None else Path(tempfile.gettempdir()) / "browser-rl-unsent")
    moved = []
    for entry in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            keep.mkdir(parents=True, exist_ok=True)
            target = free_path(keep, entry.name)
            shutil.move(entry, target)
            moved.append(target)
    shutil.rmtree(root, ignore_errors=True)
    return moved


def pack(episode_dir: str | os.PathLike[str]) -> bytes:
    """``episode_dir`` (its files, under its own name) as the bytes of a tar."""
    path = Path(episode_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no episode directory to send")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=path.name)
    return buffer.getvalue()


def unpack(data: bytes, root: str | os.PathLike[str]) -> Path:
    """Puts the episode :func:`pack` made into ``root``; returns its directory.

    All or nothing: the files are extracted into a hidden dir in ``root``
    first (tarfile's ``data`` filter: no links out, no absolute or ``..``
    names, no devices; in ``root``, so that the rename stays on one
    filesystem even when ``root`` is a mount point, and hidden, so that
    :func:`~browser_env.episodes.loader.find_episode_dirs` never finds a
    half-extracted episode), then the episode directory is renamed into
    place.

    Raises:
        ValueError: ``data`` is not a tar of one directory of plain files.
        FileExistsError: ``root`` has a directory of that name already.
    """
    try:
        return _unpack(data, Path(root))
    except tarfile.TarError as exc:  # not a tar, or a member the data filter refuses
        raise ValueError(f"not a shipped episode: {exc}") from None


def _unpack(data: bytes, root: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        # tarfile reads a tar cut between two members as a whole, shorter one:
        # only the end-of-archive marker (two zero blocks) after the last says not
        if data[tar.offset : tar.offset + 2 * tarfile.BLOCKSIZE] != bytes(2 * tarfile.BLOCKSIZE):
            raise ValueError(
                "a shipped episode was cut short: its tar has no end-of-archive marker"
            )
        tops = {(PurePosixPath(m.name).parts or ("",))[0] for m in members}
        if len(tops) != 1 or not all(m.isfile() or m.isdir() for m in members):
            raise ValueError("a shipped episode must be one directory of plain files")
        name = tops.pop()
        if name in ("", ".", "..") or "\\" in name:
            raise ValueError(f"a shipped episode has an unsafe name: {name!r}")
        target = root / name
        if target.exists():
            raise FileExistsError(f"{target} exists: an episode of that id was recorded already")
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
        try:
            tar.extractall(staging, filter="data")
            if not (staging / name).is_dir():
                raise ValueError("a shipped episode must be one directory of plain files")
            os.replace(staging / name, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
