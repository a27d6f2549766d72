"""Uploads: good archives land once; every hostile class is refused and leaves nothing behind."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
from _serve_helpers import AUTH, files_under, tar_dir, zip_dir


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def _assert_nothing_written(service):
    root = service.store.root
    assert files_under(root / "datasets") == []
    assert files_under(root / "tmp") == []
    assert service.datasets() == []


def test_good_upload_lands_once_with_a_content_id(api, episodes):
    client, service, _ = api
    body = tar_dir(episodes)
    first = client.put("/v1/datasets", content=body, headers=AUTH)
    assert first.status_code == 201, first.text
    manifest = first.json()
    assert manifest["dataset_id"].startswith("ds-") and manifest["episodes"] == 3
    again = client.put("/v1/datasets", content=body, headers=AUTH)
    assert again.status_code == 200 and again.json()["dataset_id"] == manifest["dataset_id"]
    assert [d["dataset_id"] for d in client.get("/v1/datasets", headers=AUTH).json()] == [
        manifest["dataset_id"]
    ]
    zipped = client.put("/v1/datasets", content=zip_dir(episodes), headers=AUTH)
    assert zipped.status_code == 201 and zipped.json()["episodes"] == 3
    plain = client.put("/v1/datasets", content=tar_dir(episodes, "w"), headers=AUTH)
    assert plain.status_code == 201
    assert len(client.get("/v1/datasets", headers=AUTH).json()) == 3
    assert files_under(service.store.root / "tmp") == []


def _episode_members(episodes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members = []
    for path in sorted(episodes.rglob("*")):
        name = path.relative_to(episodes).as_posix()
        if path.is_dir():
            members.append((_info(name, tarfile.DIRTYPE, mode=0o755), None))
        else:
            members.append((_info(name), path.read_bytes()))
    return members


def _hostile(episodes):
    """(case id, archive bytes, expected status): one per class of issue 10 item 6."""
    good = _episode_members(episodes)
    first_dir = next(i.name for i, d in good if d is None)
    episode_json = next(i.name for i, _ in good if i.name.endswith("episode.json"))
    shot = next(i.name for i, _ in good if i.name.endswith(".png"))
    broken = [(i, b"{not json" if i.name == episode_json else d) for i, d in good]
    big_png = [(i, _png(100_000, 10) if i.name == shot else d) for i, d in good]
    fake_png = [(i, b"GIF89a" + b"\0" * 40 if i.name == shot else d) for i, d in good]
    outside = []
    for info, data in good:
        if info.name == episode_json:
            doc = json.loads(data)
            doc.setdefault("final_observation", {})
            doc["final_observation"] = dict(
                doc["final_observation"] or {}, screenshot="../../x.png"
            )
            data = json.dumps(doc).encode()
        outside.append((info, data))
    outside.append((_info("x.png"), _png(8, 8)))
    symlink_zip = io.BytesIO()
    with zipfile.ZipFile(symlink_zip, "w") as zf:
        link = zipfile.ZipInfo("ep/link")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    fifo_zip = io.BytesIO()
    with zipfile.ZipFile(fifo_zip, "w") as zf:
        node = zipfile.ZipInfo("ep/fifo")
        node.external_attr = 0o010644 << 16
        zf.writestr(node, "")
    deep = "/".join(["d"] * 12) + "/f.txt"
    return [
        (
            "symlink",
            _tar(good + [(_info(f"{first_dir}/l", tarfile.SYMTYPE, linkname="/etc/passwd"), None)]),
            422,
        ),
        (
            "hardlink",
            _tar(good + [(_info(f"{first_dir}/h", tarfile.LNKTYPE, linkname=episode_json), None)]),
            422,
        ),
        (
            "chardev",
            _tar(good + [(_info("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), None)]),
            422,
        ),
        (
            "blockdev",
            _tar(good + [(_info("blk", tarfile.BLKTYPE, devmajor=8, devminor=0), None)]),
            422,
        ),
        ("fifo", _tar(good + [(_info("fifo", tarfile.FIFOTYPE), None)]), 422),
        ("zip-symlink", symlink_zip.getvalue(), 422),
        ("zip-fifo", fifo_zip.getvalue(), 422),
        ("dotdot", _tar(good + [(_info("../escape.txt"), b"x")]), 422),
        ("dotdot-inner", _tar(good + [(_info(f"{first_dir}/../../escape.txt"), b"x")]), 422),
        ("absolute", _tar(good + [(_info("/tmp/abs.txt"), b"x")]), 422),
        ("backslash", _tar(good + [(_info("a\\..\\b.txt"), b"x")]), 422),
        ("too-deep", _tar(good + [(_info(deep), b"x")]), 422),
        ("too-many", _tar(good + [(_info(f"many/{i}.txt"), b"x") for i in range(60)]), 422),
        ("duplicate", _tar(good + [(_info(episode_json), b"{}")]), 422),
        ("bomb", _tar(good + [(_info("zeros.bin"), b"\0" * (3 << 20))], mode="w:gz"), 413),
        ("png-too-large", _tar(big_png), 422),
        ("png-not-png", _tar(fake_png), 422),
        ("episode-invalid", _tar(broken), 422),
        ("screenshot-outside", _tar(outside), 422),
        ("no-episodes", _tar([(_info("readme.txt"), b"hello")]), 422),
        ("not-an-archive", b"just some bytes, not an archive" * 10, 422),
        ("truncated-gzip", tar_dir(episodes)[:200], 422),
    ]


def test_hostile_uploads_are_refused_and_leave_nothing(make_service, episodes):
    from _serve_helpers import TOKEN
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.service import TrainingService

    service, _ = make_service(max_depth=8, max_members=50, max_uncompressed_bytes=2 << 20)
    assert isinstance(service, TrainingService)
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 20))
    for case, body, status in _hostile(episodes):
        response = client.put("/v1/datasets", content=body, headers=AUTH)
        assert response.status_code == status, (case, response.status_code, response.text)
        _assert_nothing_written(service)


def test_the_size_cap_holds_for_chunked_bodies(make_service):
    from _serve_helpers import TOKEN
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, _ = make_service()
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=100_000))

    def chunks():
        for _ in range(50):
            yield b"\0" * 10_000

    response = client.put("/v1/datasets", content=chunks(), headers=AUTH)
    assert response.status_code == 413
    response = client.put(
        "/v1/datasets", content=b"x", headers={**AUTH, "Content-Length": "999999999"}
    )
    assert response.status_code == 413
    _assert_nothing_written(service)


def test_a_bomb_stops_before_the_cap_is_written(tmp_path):
    from serve.uploads import Limits, UploadRejected, _safe_parts, unpack

    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):
            zf.writestr(f"ep/{i}.bin", b"\0" * (400 << 10))  # 400 KiB each, ~0.4 KiB compressed
    assert archive.stat().st_size < 20_000
    dest = tmp_path / "out"
    dest.mkdir()
    cap = 1 << 20
    with pytest.raises(UploadRejected) as caught:
        unpack(archive, dest, Limits(cap, 100, 8, 4096))
    assert caught.value.status == 413
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert 0 < written < cap
    with pytest.raises(UploadRejected):
        _safe_parts("a\x00b", 8)
    shutil.rmtree(dest)


def _screenshot_swapped(episodes, tmp_path, name: str, data: bytes):
    """``episodes`` copied, with the first episode's first screenshot replaced by
    ``data`` under ``name`` (and the step pointing at it): as tar bytes."""
    root = tmp_path / "swapped"
    shutil.copytree(episodes, root)
    episode = sorted(p.parent for p in root.rglob("episode.json"))[0]
    lines = (episode / "steps.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    (episode / record["observation"]["screenshot"]).unlink()
    (episode / "screenshots" / name).write_bytes(data)
    record["observation"]["screenshot"] = f"screenshots/{name}"
    (episode / "steps.jsonl").write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    return tar_dir(root)


def _image(fmt: str, width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "fmt", "side"),
    [
        ("step_00000.bin", "PNG", 5000),  # a PNG by its bytes, another extension
        ("step_00000", "PNG", 5000),  # no extension
        ("step_00000.jpg", "JPEG", 5000),  # not a PNG at all; Pillow reads it all the same
        ("step_00000.gif", "GIF", 64),  # small, but the format's screenshots are PNGs
    ],
)
def test_screenshots_are_checked_by_content_not_by_name(
    make_service, episodes, tmp_path, name, fmt, side
):
    """What the loader reads as an image is the file a step names, by its bytes
    (``Image.open``): that file must be a PNG within ``max_image_side``."""
    from _serve_helpers import TOKEN
    from fastapi.testclient import TestClient

    from browser_env.episodes import load_episode
    from serve.app import create_app

    body = _screenshot_swapped(episodes, tmp_path, name, _image(fmt, side, 8))
    # what would be accepted is what the learners read: the loader opens it
    unpacked = tmp_path / "check"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        tar.extractall(unpacked, filter="data")
    episode = load_episode(sorted(p.parent for p in unpacked.rglob("episode.json"))[0])
    assert episode.observation(0, screenshot=True)["screenshot"].shape == (8, side, 3)

    service, _ = make_service(max_image_side=4096)
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    response = client.put("/v1/datasets", content=body, headers=AUTH)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "step_00000" in detail and ("pixels" in detail or "not a PNG" in detail), detail
    _assert_nothing_written(service)
    # the same episodes with a PNG screenshot of an allowed size, under any name, land
    body = _screenshot_swapped(episodes, tmp_path / "ok", name, _image("PNG", 64, 8))
    assert client.put("/v1/datasets", content=body, headers=AUTH).status_code == 201


def test_a_committed_dataset_and_every_record_are_durable(make_service, episodes, monkeypatch):
    """A power loss cannot leave an empty file under a committed name: what a
    rename (or link) puts in place was fsynced before it, and its directory
    after it. (A power loss cannot be simulated; os.fsync calls are watched.)"""
    from _serve_helpers import TOKEN
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, _ = make_service()
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    events: list[tuple[str, str, str]] = []
    real_fsync, real_rename, real_replace, real_link = os.fsync, os.rename, os.replace, os.link

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), ""))
        return real_fsync(fd)

    def moved(kind, real):
        def move(src, dst, *args, **kwargs):
            result = real(src, dst, *args, **kwargs)
            events.append((kind, os.path.abspath(src), os.path.abspath(dst)))
            return result

        return move

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", moved("rename", real_rename))
    monkeypatch.setattr(os, "replace", moved("replace", real_replace))
    monkeypatch.setattr(os, "link", moved("link", real_link))

    response = client.put("/v1/datasets", content=tar_dir(episodes), headers=AUTH)
    assert response.status_code == 201, response.text
    job = client.post(
        "/v1/jobs",
        json={"learner": "sft", "dataset_ids": [response.json()["dataset_id"]]},
        headers={**AUTH, "Idempotency-Key": "k1"},
    )
    assert job.status_code == 201, job.text

    def synced_before(path: str, index: int) -> bool:
        return any(e[:2] == ("fsync", path) for e in events[:index])

    def synced_after(path: str, index: int) -> bool:
        return any(e[:2] == ("fsync", path) for e in events[index + 1 :])

    moves = [(i, e) for i, e in enumerate(events) if e[0] != "fsync"]
    dataset = [(i, e) for i, e in moves if e[0] == "rename" and "/datasets/" in e[2]]
    assert len(dataset) == 1
    index, (_, staging, target) = dataset[0]
    committed = [p for p in Path(target).rglob("*")]
    assert any(p.name.endswith(".png") for p in committed)
    for path in [Path(target), *committed]:  # every file and dir, as it was staged
        staged = os.path.normpath(os.path.join(staging, path.relative_to(target)))
        assert synced_before(staged, index), path
    assert synced_after(os.path.dirname(target), index)
    replaced = [(i, e) for i, e in moves if e[0] == "replace"]
    assert {Path(e[2]).name for _, e in replaced} >= {"job.json", "spec.json"}
    for index, (_, src, dst) in replaced + [(i, e) for i, e in moves if e[0] == "link"]:
        assert synced_before(src, index), dst
        assert synced_after(os.path.dirname(dst), index), dst


def test_a_new_store_removes_only_abandoned_temp_dirs(tmp_path):
    """During a redeploy the new replica's Store opens the state dir while the old
    one may be mid-upload: its temp dir stays; a crashed process's goes."""
    import os
    import subprocess
    import time

    from serve.store import Store

    old = Store(tmp_path)
    busy = old.temp_dir()  # this (live) process's upload
    (busy / "body").write_bytes(b"x")
    gone = subprocess.Popen(["true"])
    gone.wait()
    crashed = tmp_path / "tmp" / busy.name.replace(f"-{os.getpid()}-", f"-{gone.pid}-")
    crashed.mkdir()
    unnamed = tmp_path / "tmp" / "upload-abc"  # an older release's name: no owner to ask
    unnamed.mkdir()
    foreign = tmp_path / "tmp" / "upload-otherhost-1-x"  # another host's: cannot be asked
    foreign.mkdir()
    stale = tmp_path / "tmp" / "upload-otherhost-2-x"
    stale.mkdir()
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (day_ago, day_ago))
    Store(tmp_path)
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == sorted([busy.name, foreign.name])
    assert (busy / "body").read_bytes() == b"x"


def test_a_new_store_leaves_a_live_key_reservation_alone(tmp_path, monkeypatch):
    """A reservation is written to a temp file under ``tmp/`` and then linked into
    place: a replica starting in between must not sweep that file away."""
    from serve.store import Store

    old = Store(tmp_path)
    link = os.link

    def new_replica_starts_then_link(src, dst, *args, **kwargs):
        Store(tmp_path)
        return link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", new_replica_starts_then_link)
    with old.lock():
        held = old.reserve_key("key-1", "job-00000000000000000001", "sha")
    assert held["job_id"] == "job-00000000000000000001"
    assert list((tmp_path / "tmp").iterdir()) == []  # its temp file removed once linked
