"""Recorded episodes sent back from an actor on another Ray node
(agents/runners/shipping.py): packed whole, unpacked all or nothing."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from agents.runners import shipping


def _episode(root, name="ep_s0_x"):
    path = root / name
    (path / "screenshots").mkdir(parents=True)
    (path / "episode.json").write_text('{"format": 1}')
    (path / "steps.jsonl").write_text("{}\n")
    (path / "screenshots" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    return path


def _files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_an_episode_arrives_whole_under_its_own_name(tmp_path):
    episode = _episode(tmp_path / "actor")
    arrived = shipping.unpack(shipping.pack(episode), tmp_path / "driver" / "episodes")
    assert arrived == tmp_path / "driver" / "episodes" / "ep_s0_x"
    assert _files(arrived) == _files(episode)
    assert [p.name for p in arrived.parent.iterdir()] == ["ep_s0_x"]
    assert sorted(p.name for p in (tmp_path / "driver").iterdir()) == ["episodes"]  # no staging
    with pytest.raises(FileExistsError, match="recorded already"):
        shipping.unpack(shipping.pack(episode), arrived.parent)
    with pytest.raises(FileNotFoundError):
        shipping.pack(tmp_path / "none")


def test_an_episode_is_staged_hidden_inside_the_root_it_lands_in(tmp_path, monkeypatch):
    """The rename into place stays on ``root``'s filesystem (a mount point works),
    and the staging dir is one that episode readers skip."""
    import os

    from browser_env.episodes.loader import find_episode_dirs

    root = tmp_path / "episodes"
    _episode(root, "ep_s1_y")  # an episode there already
    renames, replace = [], os.replace

    def seen(src, dst):
        renames.append((Path(src), Path(dst)))
        # mid-unpack: a reader of root finds the whole episode only
        assert find_episode_dirs(root) == [root / "ep_s1_y"]
        return replace(src, dst)

    monkeypatch.setattr(shipping.os, "replace", seen)
    arrived = shipping.unpack(shipping.pack(_episode(tmp_path / "actor")), root)
    [(src, dst)] = renames
    assert dst == arrived and src.parent.parent == root and src.parent.name.startswith(".")
    assert find_episode_dirs(root) == [root / "ep_s0_x", root / "ep_s1_y"]
    assert sorted(p.name for p in root.iterdir()) == ["ep_s0_x", "ep_s1_y"]


def _tar(*members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_a_tar_cut_between_two_members_is_refused_not_landed_short(tmp_path):
    """tarfile reads a tar cut at a member boundary as a shorter whole one: the
    missing end-of-archive marker is what tells them apart."""
    data = shipping.pack(_episode(tmp_path / "actor"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        cuts = [m.offset for m in tar.getmembers()][1:]  # each member's header starts one
    root = tmp_path / "episodes"
    for cut in cuts:
        with pytest.raises(ValueError, match="cut short"):
            shipping.unpack(data[:cut], root)
    assert not root.exists() or list(root.iterdir()) == []
    assert shipping.unpack(data, root).name == "ep_s0_x"  # whole, it lands


def _link(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


@pytest.mark.parametrize(
    "members",
    [
        [_file("a/episode.json"), _file("b/episode.json")],  # two episodes
        [_file("a/episode.json"), _link("a/steps.jsonl", "/etc/passwd")],  # a link
        [_file("../a/episode.json")],  # out of the root
        [],  # nothing
        [_file("ep")],  # a file, not a directory
        [_file("./")],  # no name
    ],
    ids=["two-dirs", "link", "dotdot", "empty", "a-file", "dot"],
)
def test_anything_but_one_directory_of_files_is_refused_and_nothing_lands(tmp_path, members):
    root = tmp_path / "episodes"
    with pytest.raises(ValueError):
        shipping.unpack(_tar(*members), root)
    assert not root.exists() or list(root.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] in ([], ["episodes"])  # no staging left


def test_who_ships():
    assert shipping.ships(None, "node-b", "node-a")  # another node: sent back
    assert not shipping.ships(None, "node-a", "node-a")  # the driver's: written in place
    assert not shipping.ships(None, None, None)  # not in Ray
    assert shipping.ships(True, "node-a", "node-a") and not shipping.ships(False, "b", "a")


@pytest.mark.browser
def test_a_shipping_worker_keeps_nothing_of_its_own(tmp_path):
    from agents.experts.expert import ScriptedExpert
    from agents.runners import Job, RolloutSpec
    from agents.runners.ray_runner import RolloutWorker
    from browser_env.episodes.loader import load_episode

    spec = RolloutSpec(record_dir=str(tmp_path / "driver"), max_steps=3, ship_episodes=True)
    worker = RolloutWorker(ScriptedExpert, spec)  # in-process, as an actor on another node
    try:
        assert worker.ship_root is not None
        [(position, result, packed)] = list(
            worker.stream([Job("browser_env/miniwob.click-test-v0", 0)])
        )
        assert position == 0 and packed is not None and not (tmp_path / "driver").exists()
        assert not any(p.is_dir() for p in Path(worker.ship_root).iterdir())
        episode = load_episode(shipping.unpack(packed, tmp_path / "driver"))
        assert episode.complete and len(episode.steps) == result.steps
        assert episode.steps[0].observation.get("screenshot")  # the PNG came along
    finally:
        worker.close()
    assert not Path(worker.ship_root).exists()


def test_a_recording_that_cannot_travel_costs_that_recording_not_the_run(tmp_path):
    from agents.experts.expert import ScriptedExpert
    from agents.rollout import EpisodeResult
    from agents.runners import Job, RolloutSpec
    from agents.runners.ray_runner import RolloutWorker, _arrived

    result = EpisodeResult(
        "t", 0, "g", True, 1.0, 1, True, False, None, 0, [1.0], [1.0], 1.0,
        episode_dir=str(tmp_path / "gone"),
    )  # fmt: skip

    class Played:  # a runner whose episode's files vanished before they were packed
        def iter_run(self, jobs):
            yield jobs[0], result

        def close(self):
            pass

    spec = RolloutSpec(record_dir=str(tmp_path / "driver"), ship_episodes=True)
    worker = RolloutWorker(ScriptedExpert, spec)
    worker.runner = Played()
    with pytest.warns(UserWarning, match="not sent back"):
        [(position, sent, packed)] = list(worker.stream([Job("t", 0)]))
    assert position == 0 and packed is None and sent.episode_dir is None and sent.success
    worker.close()
    # the driver: bytes that do not unpack are kept as they came, beside record_dir
    kept = tmp_path / "driver.unshipped"
    for name in ("t-0.tar", "t-0-1.tar"):
        with pytest.warns(UserWarning, match=f"seed 0 was not unpacked .*kept: .*{name}"):
            assert _arrived(b"not a tar", str(tmp_path / "driver"), result) is None
        assert (kept / name).read_bytes() == b"not a tar"
    assert sorted(p.name for p in kept.iterdir()) == ["t-0-1.tar", "t-0.tar"]  # no temp left
    assert not (tmp_path / "driver").exists()  # nothing half-unpacked
    (tmp_path / "full.unshipped").write_text("in the way")  # as when the disk is full
    with pytest.warns(UserWarning, match="recording of t seed 0 was lost.*keeping its tar failed"):
        assert _arrived(b"not a tar", str(tmp_path / "full"), result) is None


def test_what_an_actor_could_not_send_is_kept_when_it_closes(tmp_path, monkeypatch):
    import tempfile

    from agents.experts.expert import ScriptedExpert
    from agents.runners import RolloutSpec
    from agents.runners.ray_runner import RolloutWorker

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the node's temp dir
    spec = RolloutSpec(record_dir=str(tmp_path / "driver"), ship_episodes=True)
    worker = RolloutWorker(ScriptedExpert, spec)
    root = Path(worker.ship_root)
    assert root.parent == tmp_path
    _episode(root, "ep_s0_x")  # e.g. opened by a reset that raised: never sent
    (tmp_path / "browser-rl-unsent" / "ep_s0_x").mkdir(parents=True)  # a name taken
    with pytest.warns(UserWarning, match=r"1 recorded episode\(s\) were not sent back"):
        worker.close()
    kept = tmp_path / "browser-rl-unsent" / "ep_s0_x-1"
    assert _files(kept) == _files(_episode(tmp_path / "again", "ep_s0_x"))
    assert not root.exists()
    worker.close()  # safe twice, nothing more to keep
    assert shipping.keep_unsent(tmp_path / "none") == []


def test_an_unshipped_name_is_one_safe_file_name(tmp_path):
    kept = shipping.keep_unshipped(b"x", tmp_path / "eps", "browser_env/miniwob.a-v0-3")
    assert kept == tmp_path / "eps.unshipped" / "browser_env_miniwob.a-v0-3.tar"
    assert shipping.keep_unshipped(b"y", tmp_path / "eps", "../..").parent == kept.parent


def test_a_new_ship_root_removes_the_dirs_of_actors_that_died(tmp_path):
    import os
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(ended.stdout)
    prefix = shipping.PREFIX
    orphan = tmp_path / f"{prefix}{dead}-abc"
    (orphan / "ep_s0_x").mkdir(parents=True)  # a killed actor's unfinished episode
    alive = tmp_path / f"{prefix}{os.getpid()}-abc"
    alive.mkdir()
    other = [tmp_path / f"{prefix}notapid-x", tmp_path / "someone-else-1"]
    for path in other:
        path.mkdir()
    (tmp_path / f"{prefix}{dead}-file").write_text("not a dir")
    assert shipping.orphans(tmp_path) == [orphan]
    root = shipping.ship_root(tmp_path)
    assert not orphan.exists() and alive.is_dir() and all(p.is_dir() for p in other)
    assert root.parent == tmp_path and root.name.startswith(f"{prefix}{os.getpid()}-")
    assert shipping.orphans(tmp_path) == []  # its own and the live one's stay


def test_a_worker_whose_envs_fail_to_close_still_keeps_what_it_did_not_send(tmp_path, monkeypatch):
    """``RolloutWorker.close`` when closing its envs raises (a recording's
    background write failed): the error is raised, and still the agent is
    closed and the episodes not sent back are moved out of the actor's ship
    root, which a later sweep would otherwise delete with them."""
    import tempfile

    from agents.runners import RolloutSpec
    from agents.runners.ray_runner import RolloutWorker

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where keep_unsent keeps them
    closed = []

    class Agent:
        def close(self):
            closed.append(True)

    spec = RolloutSpec(record_dir=str(tmp_path / "driver"), ship_episodes=True)
    worker = RolloutWorker(Agent, spec)
    root = Path(worker.ship_root)
    (root / "unsent").mkdir()
    (root / "unsent" / "episode.json").write_text("{}")

    def close_fails():
        raise OSError("No space left on device")

    worker.runner.close = close_fails
    with (
        pytest.warns(UserWarning, match="1 recorded episode"),
        pytest.raises(OSError, match="space"),
    ):
        worker.close()
    assert closed == [True] and not root.exists()
    assert (tmp_path / "browser-rl-unsent" / "unsent" / "episode.json").read_text() == "{}"
    worker.close()  # safe twice
