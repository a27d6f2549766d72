"""browser_env.atomic: the one atomic writer of episodes, reports and learner records."""

from __future__ import annotations

import json
import os
import stat

import pytest

from browser_env.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic


def test_a_write_replaces_the_file_whole_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "figures.json"  # the directory is made
    assert write_json_atomic(target, {"a": 1, "when": tmp_path}) == target
    assert json.loads(target.read_text()) == {"a": 1, "when": str(tmp_path)}
    write_text_atomic(target, "ünïcode\n")
    assert target.read_bytes() == "ünïcode\n".encode()
    assert [p.name for p in target.parent.iterdir()] == ["figures.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "kept.bin"
    write_bytes_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")  # fails inside the temp file's write
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.bin"]


def test_the_file_is_made_as_open_would_make_it_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "shared.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _synced_paths(monkeypatch):
    """The paths this process fsyncs from now on."""
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_fsync_tree_syncs_every_file_and_directory_but_follows_no_link(tmp_path, monkeypatch):
    from browser_env.atomic import fsync_tree

    (tmp_path / "ckpt" / "sub").mkdir(parents=True)
    (tmp_path / "ckpt" / "a.bin").write_bytes(b"a")
    (tmp_path / "ckpt" / "sub" / "b.bin").write_bytes(b"b")
    (tmp_path / "outside.bin").write_bytes(b"o")
    (tmp_path / "ckpt" / "link").symlink_to(tmp_path / "outside.bin")
    synced = _synced_paths(monkeypatch)
    fsync_tree(tmp_path / "ckpt")
    root = tmp_path / "ckpt"
    assert sorted(synced) == sorted(
        str(p) for p in (root, root / "a.bin", root / "sub", root / "sub" / "b.bin")
    )


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_a_checkpoint_is_on_disk_before_its_rename(tmp_path, monkeypatch):
    """A learner checkpoint's files (written by save_pretrained, torch.save) are
    fsynced in ``<name>.tmp`` before the rename makes it a checkpoint, and the
    rename is made durable; a power cut cannot leave a complete-looking
    checkpoint of empty files."""
    from learners.checkpoint import Checkpoints

    def fill(directory):
        (directory / "adapter_model.safetensors").write_bytes(b"weights")

    synced = _synced_paths(monkeypatch)
    path = Checkpoints(tmp_path).write(3, fill)
    tmp = f"{path}.tmp"
    assert f"{tmp}/adapter_model.safetensors" in synced and f"{tmp}/step.json" in synced
    assert synced[-1] == str(tmp_path / "checkpoints")  # the rename, made durable
