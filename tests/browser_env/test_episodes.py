"""Episode format v1: writer, loader, validation and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _episode_helpers import FakeBrowserEnv

from browser_env.episodes import (
    SCHEMA_VERSION,
    AgentInfo,
    EpisodeFormatError,
    EpisodeMeta,
    EpisodeWriter,
    Outcome,
    iter_episodes,
    load_episode,
)

REPO = Path(__file__).resolve().parents[2]


def _meta(**kw) -> EpisodeMeta:
    base = dict(
        env_id="browser_env/fake-v0",
        task="fake-click",
        seed=3,
        goal="click OK",
        agent=AgentInfo(name="llm", backend="openai", model="m", prompt_version="v1"),
    )
    base.update(kw)
    return EpisodeMeta(**base)


def _play(root: Path, actions, *, screenshot: bool = True, meta=None) -> Path:
    env = FakeBrowserEnv(screenshot=screenshot)
    obs, info = env.reset(seed=3)
    writer = EpisodeWriter(root, meta or _meta())
    for action in actions:
        next_obs, reward, term, trunc, info = env.step(action)
        writer.write_step(
            obs, info["action"], reward, term, trunc, info, prompt="P", raw_output="R"
        )
        obs = next_obs
        if term or trunc:
            break
    return writer.close(final_observation=obs)


def test_roundtrip_restores_typed_records(tmp_path):
    path = _play(
        tmp_path,
        [
            {"action": "TYPE", "element_id": "e3", "value": "héllo"},
            "not json",
            '{"action":"CLICK","element_id":"e2"}',
        ],
    )
    ep = load_episode(path)
    assert ep.complete and ep.success
    assert ep.meta.env_id == "browser_env/fake-v0" and ep.meta.seed == 3
    assert ep.meta.agent.model == "m" and ep.meta.agent.prompt_version == "v1"
    assert "python" in ep.meta.versions and "gymnasium" in ep.meta.versions
    assert [s.index for s in ep.steps] == [0, 1, 2]
    assert ep.steps[0].action == {"action": "TYPE", "element_id": "e3", "value": "héllo"}
    assert ep.steps[1].action is None and "JSON" in ep.steps[1].error
    assert ep.steps[2].reward == 1.0 and ep.steps[2].success and ep.steps[2].terminated
    assert ep.steps[0].prompt == "P" and ep.steps[0].raw_output == "R"
    assert ep.steps[0].timings == {"action_ms": 1.5, "observation_ms": 2.5}
    assert ep.outcome == Outcome(
        success=True,
        return_=1.0,
        steps=3,
        answer=None,
        terminated=True,
        truncated=False,
        reason="success",
    )
    assert ep.timings["wall_s"] >= 0 and ep.timings["mean_action_ms"] == 1.5
    # observation before step 1 shows the text typed at step 0
    assert ep.steps[1].observation["elements"][2]["value"] == "héllo"
    bbox = ep.steps[0].observation["elements"][0]["bbox"]
    assert bbox == [2.0, 10.5, 20.0, 12.25]
    env_obs = ep.observation(0, screenshot=True)
    assert env_obs["elements"][0]["bbox"].dtype == np.float32
    assert env_obs["screenshot"].shape == (48, 64, 3)
    # the PNG holds exactly the pixels the policy saw
    env = FakeBrowserEnv()
    first, _ = env.reset(seed=3)
    np.testing.assert_array_equal(env_obs["screenshot"], first["screenshot"])
    assert ep.final_observation["screenshot"] == "screenshots/final.png"
    assert ep.observation(3)["url"] == "http://fake/3/3"


def test_episode_json_is_documented_v1(tmp_path):
    path = _play(tmp_path, [{"action": "FINISH", "value": "42"}], screenshot=False)
    data = json.loads((path / "episode.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 1
    for key in (
        "episode_id",
        "env_id",
        "task",
        "seed",
        "goal",
        "source",
        "agent",
        "env_kwargs",
        "reset_options",
        "task_server",
        "created_at",
        "versions",
        "complete",
        "outcome",
        "timings",
        "final_observation",
    ):
        assert key in data, key
        assert f"`{key}`" in (REPO / "docs/episode_format.md").read_text(), key
    assert data["outcome"]["answer"] == "42" and data["outcome"]["return"] == 0.0
    step = json.loads((path / "steps.jsonl").read_text().splitlines()[0])
    for key in step:
        assert f"`{key}`" in (REPO / "docs/episode_format.md").read_text(), key
    assert step["observation"]["screenshot"] is None
    assert not (path / "screenshots").exists()


def test_directory_name_and_no_overwrite(tmp_path):
    w = EpisodeWriter(tmp_path, _meta(episode_id="ep1"))
    assert w.path == tmp_path / "ep1"
    w.close()
    with pytest.raises(FileExistsError):
        EpisodeWriter(tmp_path, _meta(episode_id="ep1"))
    auto = EpisodeWriter(tmp_path, _meta(task="miniwob/click button", seed=None))
    assert auto.path.name.startswith("miniwob-click-button_snone_")
    auto.close()
    assert load_episode(auto.path).outcome.steps == 0


def test_incomplete_until_closed_and_abort(tmp_path):
    env = FakeBrowserEnv(screenshot=False)
    obs, _ = env.reset(seed=1)
    w = EpisodeWriter(tmp_path, _meta())
    nobs, r, te, tr, info = env.step({"action": "WAIT", "value": "1"})
    w.write_step(obs, info["action"], r, te, tr, info)
    ep = load_episode(w.path)
    assert not ep.complete and len(ep.steps) == 1 and ep.outcome is None
    assert list(iter_episodes(tmp_path)) == []
    assert [e.path for e in iter_episodes(tmp_path, include_incomplete=True)] == [w.path]
    with pytest.raises(KeyError), w:
        raise KeyError("boom")
    ep = load_episode(w.path)
    assert (
        not ep.complete and ep.outcome.reason == "interrupted: KeyError" and ep.outcome.steps == 1
    )
    with pytest.raises(RuntimeError, match="closed"):
        w.write_step(obs, None, 0, False, False, {})


def test_no_temp_files_left_behind(tmp_path):
    path = _play(
        tmp_path, [{"action": "CLICK", "element_id": "e1"}, {"action": "CLICK", "element_id": "e2"}]
    )
    names = [p.name for p in path.rglob("*")]
    assert not [n for n in names if n.endswith(".tmp")]
    assert sorted(p.name for p in (path / "screenshots").iterdir()) == [
        "final.png",
        "step_00000.png",
        "step_00001.png",
    ]


def _screenshot_names(path: Path) -> list[str]:
    folder = path / "screenshots"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("background", [False, True])
def test_info_without_success_is_unknown(tmp_path, background):
    # The Task contract does not oblige a task to say "success": then it is unknown.
    env = FakeBrowserEnv()
    obs, _ = env.reset(seed=3)
    writer = EpisodeWriter(tmp_path, _meta(), background=background)
    _, reward, term, trunc, info = env.step({"action": "WAIT", "value": "0"})
    del info["success"]
    assert writer.write_step(obs, info["action"], reward, term, trunc, info).success is None
    episode = load_episode(writer.close())
    assert episode.steps[0].success is None and episode.outcome.success is None
    assert _screenshot_names(episode.path) == ["step_00000.png"]


@pytest.mark.parametrize("background", [False, True])
def test_step_that_cannot_be_written_leaves_no_file(tmp_path, background):
    env = FakeBrowserEnv()
    obs, _ = env.reset(seed=3)
    writer = EpisodeWriter(tmp_path, _meta(), background=background)
    _, reward, term, trunc, info = env.step({"action": "WAIT", "value": "0"})
    with pytest.raises(ValueError, match="could not convert"):
        writer.write_step(obs, info["action"], reward, term, trunc, {**info, "raw_reward": "n/a"})
    writer.flush()
    assert writer.num_steps == 0 and _screenshot_names(writer.path) == []
    writer.write_step(obs, info["action"], reward, term, trunc, info)  # the same step, valid now
    episode = load_episode(writer.close())
    assert len(episode.steps) == 1 and _screenshot_names(episode.path) == ["step_00000.png"]
    assert episode.steps[0].observation["screenshot"] == "screenshots/step_00000.png"


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize(
    ("field", "annotations"),
    [
        ("prompt", {"prompt": [{"role": "user", "content": "half an emoji \ud83d"}]}),
        ("raw_output", {"raw_output": '{"action": "FINISH", "value": "\udc00"}'}),
        ("extras", {"extras": {"note": "\ud800"}}),
    ],
)
def test_a_step_with_a_lone_surrogate_is_written_whole_or_not_at_all(
    tmp_path, background, field, annotations
):
    # The line used to be encoded when written, after the PNG: a lone surrogate
    # then left a screenshot with no step (or, in the background, failed later).
    env = FakeBrowserEnv()
    obs, _ = env.reset(seed=3)
    writer = EpisodeWriter(tmp_path, _meta(), background=background)
    _, reward, term, trunc, info = env.step({"action": "WAIT", "value": "0"})
    with pytest.raises(ValueError, match=f"its '{field}' holds a lone surrogate"):
        writer.write_step(obs, info["action"], reward, term, trunc, info, **annotations)
    writer.flush()
    assert writer.num_steps == 0 and _screenshot_names(writer.path) == []
    writer.write_step(obs, info["action"], reward, term, trunc, info, prompt="ok")
    episode = load_episode(writer.close())
    assert episode.complete and len(episode.steps) == 1
    assert _screenshot_names(episode.path) == ["step_00000.png"]


@pytest.mark.parametrize(
    ("mutate", "where", "message"),
    [
        (lambda lines: lines.__setitem__(1, lines[1][:-5]), "steps.jsonl:2", "Expecting"),
        (
            lambda lines: lines.__setitem__(0, lines[0].replace('"index": 0', '"index": 7')),
            "steps.jsonl:1",
            "out of order",
        ),
        (
            lambda lines: lines.__setitem__(1, lines[1].replace('"CLICK"', '"JUMP"')),
            "steps.jsonl:2",
            "not a valid action",
        ),
        (
            lambda lines: lines.__setitem__(
                0, lines[0].replace('"reward": 0.0', '"reward": "lots"')
            ),
            "steps.jsonl:1",
            "step.reward must be",
        ),
        (
            lambda lines: lines.__setitem__(1, lines[1].replace('"url"', '"uri"')),
            "steps.jsonl:2",
            "lacks required key 'url'",
        ),
    ],
)
def test_corrupt_step_names_file_and_line(tmp_path, mutate, where, message):
    path = _play(
        tmp_path, [{"action": "CLICK", "element_id": "e1"}, {"action": "CLICK", "element_id": "e2"}]
    )
    steps = path / "steps.jsonl"
    lines = steps.read_text().splitlines()
    mutate(lines)
    steps.write_text("\n".join(lines) + "\n")
    with pytest.raises(EpisodeFormatError) as err:
        load_episode(path)
    assert where in str(err.value) and message in str(err.value)
    assert err.value.path == str(steps)


def test_corrupt_episode_json(tmp_path):
    path = _play(tmp_path, [{"action": "CLICK", "element_id": "e2"}], screenshot=False)
    ep_file = path / "episode.json"
    data = json.loads(ep_file.read_text())
    ep_file.write_text(json.dumps({**data, "schema_version": 2}))
    with pytest.raises(
        EpisodeFormatError, match=r"episode\.json: schema_version 2 is not supported"
    ):
        load_episode(path)
    ep_file.write_text(json.dumps({**data, "outcome": {**data["outcome"], "steps": 5}}))
    with pytest.raises(EpisodeFormatError, match="outcome.steps is 5"):
        load_episode(path)
    ep_file.write_text("{")
    with pytest.raises(EpisodeFormatError, match=r"episode\.json"):
        load_episode(path)
    with pytest.raises(EpisodeFormatError, match="not an episode directory"):
        load_episode(tmp_path)


def test_episode_json_too_deep_or_too_large_is_a_format_error(tmp_path):
    """``load_episode`` raises only ``EpisodeFormatError`` for a bad episode.json,
    as for a bad steps.jsonl line: json's RecursionError on a deeply nested
    document and the OverflowError of a number too large for a float included."""
    path = _play(tmp_path, [{"action": "CLICK", "element_id": "e2"}], screenshot=False)
    ep_file = path / "episode.json"
    text = ep_file.read_text()
    ep_file.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EpisodeFormatError, match=r"episode\.json: nested too deeply"):
        load_episode(path)
    data = json.loads(text)
    huge = json.dumps({**data, "outcome": {**data["outcome"], "return": 0.5}})
    ep_file.write_text(huge.replace('"return": 0.5', '"return": 1' + "0" * 400))
    with pytest.raises(EpisodeFormatError, match=r"episode\.json"):
        load_episode(path)


def test_missing_screenshot_is_an_error(tmp_path):
    path = _play(tmp_path, [{"action": "CLICK", "element_id": "e2"}])
    (path / "screenshots/step_00000.png").unlink()
    with pytest.raises(EpisodeFormatError, match="step_00000.png: missing screenshot"):
        load_episode(path)
    assert load_episode(path, check_files=False).steps[0].observation["screenshot"]


def test_torn_last_line_of_incomplete_episode_is_dropped(tmp_path):
    env = FakeBrowserEnv(screenshot=False)
    obs, _ = env.reset(seed=1)
    w = EpisodeWriter(tmp_path, _meta())
    for _ in range(2):
        nobs, r, te, tr, info = env.step({"action": "SCROLL", "value": "down"})
        w.write_step(obs, info["action"], r, te, tr, info)
        obs = nobs
    with open(w.path / "steps.jsonl", "a") as fh:  # a crash in the middle of a write
        fh.write('{"index": 2, "observ')
    assert len(load_episode(w.path).steps) == 2
    w.close()  # once closed, the same torn line is corruption
    with pytest.raises(EpisodeFormatError, match="steps.jsonl:3"):
        load_episode(w.path)


def test_iter_episodes_walks_run_dirs(tmp_path):
    a = _play(tmp_path / "run1", [{"action": "CLICK", "element_id": "e2"}], screenshot=False)
    b = _play(tmp_path / "run2" / "nested", [{"action": "FINISH"}], screenshot=False)
    found = [e.path for e in iter_episodes([tmp_path / "run1", tmp_path / "run2"])]
    assert found == [a, b]
    assert [e.path for e in iter_episodes(a)] == [a]
    with pytest.raises(FileNotFoundError):
        list(iter_episodes(tmp_path / "nope"))
    # episodes set aside by a resumed benchmark are not the run's: read only when asked
    stale = tmp_path / "run1" / "episodes.stale"
    c = _play(stale, [{"action": "FINISH"}], screenshot=False)
    assert [e.path for e in iter_episodes(tmp_path / "run1")] == [a]
    assert [e.path for e in iter_episodes(stale)] == [c]


def test_meta_validation():
    with pytest.raises(ValueError, match="source"):
        _meta(source="robot")
    assert _meta(agent={"name": "random"}).agent == AgentInfo(name="random")


_CRASHER = textwrap.dedent(
    """
    import signal, sys, time
    # Ctrl+C as a user sends it: a shell without job control starts background
    # jobs with SIGINT ignored, and the child would inherit that.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {helpers!r})
    from _episode_helpers import FakeBrowserEnv
    from browser_env.episodes import EpisodeMeta, EpisodeWriter
    env = FakeBrowserEnv()
    obs, _ = env.reset(seed=0)
    w = EpisodeWriter(sys.argv[1], EpisodeMeta(env_id="x", task="t", seed=0, episode_id="ep"))
    for i in range(3):
        nobs, r, te, tr, info = env.step({{"action": "WAIT", "value": "0"}})
        w.write_step(obs, info["action"], r, te, tr, info)
        obs = nobs
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_crash_mid_episode_leaves_earlier_steps(tmp_path, sig):
    script = _CRASHER.format(helpers=str(Path(__file__).parent))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) != 0
    finally:
        proc.kill()
        proc.stdout.close()
    ep = load_episode(tmp_path / "ep")
    assert not ep.complete
    assert [s.action for s in ep.steps] == [{"action": "WAIT", "value": "0"}] * 3
    assert ep.observation(2, screenshot=True)["screenshot"].shape == (48, 64, 3)


def test_find_episode_dirs_expands_home_and_skips_set_aside_and_hidden_dirs(tmp_path, monkeypatch):
    """``learner.episodes=[~/runs]`` (a Hydra list: no shell expands the ``~``)
    finds the episodes under the home directory; below a run dir, ``.``-dirs
    (work in progress) and ``*.stale`` dirs (set aside) are not searched."""
    from browser_env.episodes.format import EPISODE_FILE
    from browser_env.episodes.loader import find_episode_dirs

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("a", "b", ".partial", "c.stale"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / EPISODE_FILE).write_text("{}")
    assert find_episode_dirs("~/runs") == [tmp_path / "runs" / "a", tmp_path / "runs" / "b"]
    assert find_episode_dirs(["~/runs/c.stale"]) == [tmp_path / "runs" / "c.stale"]
