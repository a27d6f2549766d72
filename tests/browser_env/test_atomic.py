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
