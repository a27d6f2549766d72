"""The background episode writer: same files as the synchronous one, flushed on close and on a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _episode_helpers import FakeBrowserEnv

from browser_env.episodes import EpisodeMeta, EpisodeWriter, load_episode
from browser_env.wrappers import RecordEpisode

REPO = Path(__file__).resolve().parents[2]


def _play(writer: EpisodeWriter, steps: int) -> None:
    env = FakeBrowserEnv(max_steps=50)
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        nobs, r, te, tr, info = env.step({"action": "TYPE", "element_id": "e3", "value": "x"})
        writer.write_step(obs, info["action"], r, te, tr, info, started_at=0.0)
        obs = nobs
    writer.close(final_observation=obs)


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "episode.json"
    }


def test_background_writes_the_same_files_as_synchronous(tmp_path):
    for background in (False, True):
        meta = EpisodeMeta(env_id="x", task="t", seed=0, episode_id=f"ep{int(background)}")
        _play(EpisodeWriter(tmp_path, meta, background=background), steps=6)
    sync, bg = _files(tmp_path / "ep0"), _files(tmp_path / "ep1")
    assert len(sync) == 8 and sync == bg  # steps.jsonl, 6 step PNGs, final.png
    episode = load_episode(tmp_path / "ep1")
    assert episode.complete and len(episode.steps) == 6
    assert not list(tmp_path.rglob("*.tmp"))


def test_record_episode_writes_in_the_background_and_flushes_on_end(tmp_path):
    env = RecordEpisode(FakeBrowserEnv(max_steps=3), tmp_path)
    assert env.background
    env.reset(seed=1)
    writer = env._writer
    for _ in range(3):
        env.step({"action": "WAIT", "value": "0"})
    assert writer.closed and writer._worker._shutdown  # the episode ended: its thread is done
    assert len(load_episode(env.last_episode_dir).steps) == 3
    env.close()


def _complete(path: Path) -> bool:
    return json.loads((path / "episode.json").read_text())["complete"]


def _a_step_whose_screenshot_cannot_be_written(tmp_path):
    """A background writer with one step queued whose screenshot write fails; the
    next step's arguments."""
    meta = EpisodeMeta(env_id="x", task="t", seed=0, episode_id="ep")
    writer = EpisodeWriter(tmp_path, meta, background=True)
    env = FakeBrowserEnv()
    obs, _ = env.reset(seed=0)
    nobs, r, te, tr, info = env.step({"action": "WAIT", "value": "0"})
    (tmp_path / "ep" / "screenshots").write_text("not a directory")
    writer.write_step(obs, info["action"], r, te, tr, info)
    return writer, (nobs, info["action"], r, te, tr, info)


def test_a_failed_background_write_is_raised(tmp_path):
    writer, _ = _a_step_whose_screenshot_cannot_be_written(tmp_path)
    with pytest.raises(OSError):
        writer.close()
    # the episode is not complete (a screenshot is missing), and the writer's
    # thread and steps file are closed
    assert _complete(tmp_path / "ep") is False
    assert writer._worker._shutdown and writer._steps_fh.closed


def test_an_episode_whose_write_failed_is_never_marked_complete(tmp_path):
    # the failure is raised by the next write_step; closing afterwards (as a reset
    # or close of RecordEpisode does) must not write ``complete: true``
    writer, next_step = _a_step_whose_screenshot_cannot_be_written(tmp_path)
    writer._worker.submit(lambda: None).result()  # the failed write is done
    with pytest.raises(OSError):
        writer.write_step(*next_step)
    writer.close()
    assert _complete(tmp_path / "ep") is False


def test_a_failure_found_while_closing_still_finishes_the_episode(tmp_path):
    # the last step's write failed and nobody has seen it yet: close(final_observation=)
    # queues final.png, finds the failure there, and must still finish the files
    writer, (nobs, *_rest) = _a_step_whose_screenshot_cannot_be_written(tmp_path)
    writer._worker.submit(lambda: None).result()  # the failed write is done
    with pytest.raises(OSError):
        writer.close(final_observation=nobs)
    assert _complete(tmp_path / "ep") is False
    assert json.loads((tmp_path / "ep" / "episode.json").read_text())["outcome"] is not None
    assert writer._worker._shutdown and writer._steps_fh.closed
    writer.close()  # safe twice


def test_the_exception_that_ends_a_with_block_is_not_replaced_by_the_aborts(tmp_path):
    # the block fails while an earlier step's write has failed in the background:
    # the abort meets that failure, and the block's own exception must propagate
    writer, _ = _a_step_whose_screenshot_cannot_be_written(tmp_path)
    with pytest.raises(RuntimeError, match="the policy crashed") as raised, writer:
        raise RuntimeError("the policy crashed")
    [note] = raised.value.__notes__
    assert note.startswith(f"and aborting episode {writer.path} failed:")
    assert _complete(tmp_path / "ep") is False
    assert writer._worker._shutdown and writer._steps_fh.closed


_CRASHER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {helpers!r})
    from _episode_helpers import FakeBrowserEnv
    from browser_env.episodes import EpisodeMeta, EpisodeWriter
    env = FakeBrowserEnv(max_steps=100)
    obs, _ = env.reset(seed=0)
    meta = EpisodeMeta(env_id="x", task="t", seed=0, episode_id="ep")
    w = EpisodeWriter(sys.argv[1], meta, background=True)
    for i in range(40):
        nobs, r, te, tr, info = env.step({{"action": "WAIT", "value": "0"}})
        w.write_step(obs, info["action"], r, te, tr, info)
        obs = nobs
    raise RuntimeError("the policy crashed")
    """
)


def test_queued_steps_are_flushed_when_the_process_crashes(tmp_path):
    script = _CRASHER.format(helpers=str(Path(__file__).parent))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert proc.returncode != 0 and b"the policy crashed" in proc.stderr
    episode = load_episode(tmp_path / "ep")
    assert not episode.complete and len(episode.steps) == 40
    assert episode.observation(39, screenshot=True)["screenshot"].shape == (48, 64, 3)


def test_an_interrupt_while_close_awaits_the_writes_leaves_the_outcome_incomplete(
    tmp_path, sigint_raises
):
    # Ctrl+C while close() waited for the queued steps used to leave the first
    # episode.json (no outcome): the steps landed, what they added up to did not.
    import signal
    import threading

    meta = EpisodeMeta(env_id="x", task="t", seed=0, episode_id="ep")
    writer = EpisodeWriter(tmp_path, meta, background=True)
    env = FakeBrowserEnv(max_steps=50)
    obs, _ = env.reset(seed=0)
    release = threading.Event()
    writer._submit(release.wait)  # the writes queue behind this until it is released
    for _ in range(3):
        obs, r, te, tr, info = env.step({"action": "WAIT", "value": "0"})
        writer.write_step(obs, info["action"], r, te, tr, info)
    landed = threading.Event()

    def on_sigint(signum, frame):  # Python's own, noting that it ran (sigint_raises puts it back)
        landed.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    main = threading.main_thread().ident
    interrupt = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT))
    # the writes go on only once the interrupt has landed, however late its timer
    # runs (and after 30 s regardless: a lost interrupt fails the test, not hangs it)
    unblock = threading.Thread(target=lambda: (landed.wait(30), release.set()), daemon=True)
    interrupt.start()
    unblock.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            writer.close(final_observation=obs)
    finally:
        interrupt.cancel()
        interrupt.join()  # a SIGINT it sent lands in this test, not a later one
        release.set()
        landed.set()
        unblock.join()
    episode = load_episode(tmp_path / "ep")
    assert not episode.complete and len(episode.steps) == 3
    assert episode.outcome is not None and episode.outcome.steps == 3
    assert episode.outcome.reason == "interrupted: KeyboardInterrupt"
    assert writer.closed and writer._worker._shutdown


@pytest.mark.parametrize("background", [False, True])
def test_an_interrupt_while_the_writer_opens_leaves_no_directory(tmp_path, monkeypatch, background):
    # Ctrl+C landing between the episode dir's mkdir and its first episode.json
    # (in a vector env's concurrent reset, say) used to leave an empty dir behind.
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(EpisodeWriter, "_write_episode_json", interrupted)
    meta = EpisodeMeta(env_id="x", task="t", seed=0, episode_id="ep")
    with pytest.raises(KeyboardInterrupt):
        EpisodeWriter(tmp_path, meta, background=background)
    assert list(tmp_path.iterdir()) == []
