"""Replay: re-run recorded actions and report divergence."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import gymnasium
import pytest
from _episode_helpers import FakeBrowserEnv

from browser_env.episodes import load_episode
from browser_env.replay import main, replay_episode
from browser_env.wrappers import RecordEpisode

REPO = Path(__file__).resolve().parents[2]

ACTIONS = [
    {"action": "TYPE", "element_id": "e3", "value": "abc"},
    "not an action",
    {"action": "CLICK", "element_id": "e2"},
]


def _record(tmp_path):
    env = RecordEpisode(FakeBrowserEnv(screenshot=False), tmp_path)
    env.reset(seed=4)
    for action in ACTIONS:
        env.step(action)
    env.close()
    return env.last_episode_dir


def test_faithful_replay_has_no_divergence(tmp_path):
    path = _record(tmp_path)
    report = replay_episode(path, env=FakeBrowserEnv(screenshot=False))
    assert report.ok, report.summary()
    assert report.steps_replayed == 3 and "no divergence" in report.summary()
    assert report.final_observation["elements"][2]["value"] == "abc"


def _edit_step(path, index, fn):
    steps = path / "steps.jsonl"
    lines = steps.read_text().splitlines()
    record = json.loads(lines[index])
    fn(record)
    lines[index] = json.dumps(record)
    steps.write_text("\n".join(lines) + "\n")


def test_divergence_is_reported_per_step(tmp_path):
    path = _record(tmp_path)
    _edit_step(path, 1, lambda r: r["observation"].update(url="http://elsewhere/"))
    _edit_step(path, 1, lambda r: r.update(error="different error"))
    _edit_step(path, 0, lambda r: r["observation"]["elements"].pop())
    report = replay_episode(path, env=FakeBrowserEnv(screenshot=False))
    found = {(d.step, d.when, d.field) for d in report.divergences}
    assert found == {(0, "before", "element_ids"), (1, "before", "url"), (1, "after", "error")}
    assert (
        "step 1 (before) url: recorded 'http://elsewhere/' != replayed 'http://fake/4/1'"
        in report.summary()
    )
    first = replay_episode(path, env=FakeBrowserEnv(screenshot=False), stop_at_first=True)
    assert len(first.divergences) == 1 and first.steps_replayed == 0


def test_end_state_and_early_end(tmp_path):
    path = _record(tmp_path)
    data = json.loads((path / "episode.json").read_text())
    data["final_observation"]["elements"][2]["value"] = "xyz"
    (path / "episode.json").write_text(json.dumps(data))
    report = replay_episode(path, env=FakeBrowserEnv(screenshot=False))
    assert [(d.step, d.when, d.field, d.recorded, d.replayed) for d in report.divergences] == [
        (3, "final", "values", {"e3": ("xyz", 0)}, {"e3": ("abc", 0)})
    ]
    _edit_step(path, 0, lambda r: r.update(action={"action": "CLICK", "element_id": "e2"}))
    report = replay_episode(path, env=FakeBrowserEnv(screenshot=False))
    fields = [(d.step, d.field) for d in report.divergences]
    assert (
        (0, "reward") in fields and (0, "terminated") in fields and fields[-1] == (0, "ended_early")
    )


def test_cli_rejects_unknown_env(tmp_path, capsys):
    path = _record(tmp_path)
    assert main([str(path)]) == 2
    assert "browser_env/fake-v0" in capsys.readouterr().err


def test_cli_refuses_a_run_dir_naming_some_of_its_episodes(tmp_path, capsys):
    """A run dir (what ``benchmarks.run`` writes, ``browser_env.view`` takes) is
    no episode: the refusal says replay takes one, how many there are, and names
    a few to pick from."""
    run = tmp_path / "run"
    episodes = sorted(_record(run / "episodes") for _ in range(4))
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "holding 4 episodes; replay takes one episode directory, e.g. " in err, err
    assert all(str(e) in err for e in episodes[:3]) and str(episodes[3]) not in err
    assert err.rstrip().endswith("and 1 more"), err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "empty: no episode.json in it nor in any directory below it" in err, err
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope: no such episode or run directory" in capsys.readouterr().err


def _solve_enter_text(env):
    obs, _ = env.reset(seed=3)
    word = re.search(r'"(.+?)"', obs["goal"]).group(1)
    field = next(e for e in obs["elements"] if e["tag"] == "input")
    button = next(e for e in obs["elements"] if e["text"] == "Submit")
    env.step({"action": "TYPE", "element_id": field["element_id"], "value": word})
    env.step({"action": "CLICK", "element_id": "e999"})  # an error the replay must reproduce
    return env.step({"action": "CLICK", "element_id": button["element_id"]})


@pytest.mark.browser
def test_real_env_roundtrip(tmp_path, capsys):
    import browser_env  # noqa: F401

    env = RecordEpisode(gymnasium.make("browser_env/miniwob.enter-text-v0"), tmp_path)
    *_, info = _solve_enter_text(env)
    env.close()
    assert info["success"]
    ep = load_episode(env.last_episode_dir)
    assert (
        ep.outcome.success
        and ep.steps[1].error
        and ep.meta.env_kwargs == {"task": "miniwob.enter-text"}
    )
    assert main([str(ep.path)]) == 0, capsys.readouterr().out
    assert "no divergence" in capsys.readouterr().out
    # a tampered action diverges: typing the wrong word fails the task
    _edit_step(ep.path, 0, lambda r: r["action"].update(value="wrong"))
    assert main([str(ep.path)]) == 1
    out = capsys.readouterr().out
    assert "step 2 (after) reward" in out and "step 2 (after) success" in out


RECORD_CLICK_TEST = """
import sys

import gymnasium

import browser_env  # noqa: F401
from browser_env.wrappers import RecordEpisode

env = RecordEpisode(gymnasium.make("browser_env/miniwob.click-test-v0"), sys.argv[1])
obs, _ = env.reset(seed=0)
if sys.argv[2:] == ["navigate"]:  # to the task page again, on this run's server
    *_, info = env.step({"action": "NAVIGATE", "value": obs["url"]})
    assert not info["action_error"], info
else:
    button = next(e for e in obs["elements"] if e["tag"] == "button")
    *_, info = env.step({"action": "CLICK", "element_id": button["element_id"]})
    assert info["success"], info
env.close()
"""


def _record_in_another_run(root, *args):
    """The episode that another process recorded (its task server had another port)."""
    from browser_env.tasks.miniwob import miniwob_html_dir
    from browser_env.tasks.server import serve_directory

    server = serve_directory(miniwob_html_dir())  # listening here: the recording run gets another
    subprocess.run(
        [sys.executable, "-c", RECORD_CLICK_TEST, str(root), *args],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    (path,) = root.iterdir()
    return path, server


def _edit_final_url(path, url):
    data = json.loads((path / "episode.json").read_text())
    data["final_observation"]["url"] = url
    (path / "episode.json").write_text(json.dumps(data))


@pytest.mark.browser
def test_task_server_port_of_another_run_is_no_divergence(tmp_path, capsys):
    """An episode recorded by another process saw the bundled MiniWoB++ server on
    another port: the same pages are no divergence; another page or host is."""
    path, server = _record_in_another_run(tmp_path)
    page = load_episode(path).steps[0].observation["url"]
    recorded = page.removesuffix("miniwob/click-test.html")
    assert page.endswith("/miniwob/click-test.html") and recorded != server
    assert main([str(path)]) == 0, capsys.readouterr().out
    assert "no divergence" in capsys.readouterr().out

    _edit_final_url(path, recorded + "miniwob/click-button.html")  # another page, same server
    report = replay_episode(path)
    assert [(d.when, d.field, d.replayed) for d in report.divergences] == [
        ("final", "url", server + "miniwob/click-test.html")
    ]
    elsewhere = page.replace("127.0.0.1", "localhost")  # another host, same port
    _edit_final_url(path, elsewhere)
    assert [(d.when, d.field, d.recorded) for d in replay_episode(path).divergences] == [
        ("final", "url", elsewhere)
    ]
    _edit_step(path, 0, lambda r: r["observation"].update(url=elsewhere))  # from the start
    _edit_final_url(path, page)
    # the recorded base still ties the servers: only the first page diverges
    assert [(d.step, d.field) for d in replay_episode(path).divergences] == [(0, "url")]


def _drop_task_server(path):
    """``path`` as an episode written before ``task_server`` was recorded."""
    data = json.loads((path / "episode.json").read_text())
    del data["task_server"]
    (path / "episode.json").write_text(json.dumps(data))


@pytest.mark.browser
@pytest.mark.exhaustive  # ~15 s; an episode of another run: test_task_server_port_of_another_run...
def test_the_recorded_task_server_ties_the_runs_when_first_pages_differ(tmp_path):
    """``episode.json`` records the recording run's task server; replay maps
    URLs under it even when the first pages differ. An episode without it
    falls back to the first-page rule, which cannot."""
    path, server = _record_in_another_run(tmp_path)
    page = load_episode(path).steps[0].observation["url"]
    recorded = page.removesuffix("miniwob/click-test.html")
    assert load_episode(path).meta.task_server == recorded != server
    other_page = recorded + "miniwob/click-button.html"  # the same server, another first page
    _edit_step(path, 0, lambda r: r["observation"].update(url=other_page))
    report = replay_episode(path)
    assert [(d.step, d.when, d.field, d.recorded) for d in report.divergences] == [
        (0, "before", "url", other_page)
    ], report.summary()

    _drop_task_server(path)  # an old episode: today's rule, from the first pages
    assert load_episode(path).meta.task_server is None
    assert [(d.step, d.field) for d in replay_episode(path).divergences] == [(0, "url"), (1, "url")]
    _edit_step(path, 0, lambda r: r["observation"].update(url=page))
    assert replay_episode(path).ok


@pytest.mark.browser
def test_navigate_to_the_task_server_goes_to_this_runs_server(tmp_path):
    path, server = _record_in_another_run(tmp_path, "navigate")
    recorded = load_episode(path).steps[0].action["value"]
    assert not recorded.startswith(server)  # that run's server is gone with it
    report = replay_episode(path)
    assert report.ok, report.summary()
    assert report.final_observation["url"] == server + "miniwob/click-test.html"


@pytest.mark.parametrize("tol", ["nan", "-1", "inf", "x"])
def test_cli_refuses_a_reward_tolerance_that_is_no_finite_number_at_least_0(tmp_path, capsys, tol):
    """``--reward-tol nan`` (or ``-1``) was taken, then every step diverged."""
    path = _record(tmp_path)
    with pytest.raises(SystemExit) as raised:
        main(["--reward-tol", tol, str(path)])
    assert raised.value.code == 2
    assert "argument --reward-tol: " in capsys.readouterr().err


@pytest.mark.parametrize("tol", [float("nan"), -1.0, float("inf")])
def test_replay_episode_refuses_a_reward_tolerance_that_is_no_finite_number_at_least_0(
    tmp_path, tol
):
    """From Python too, before any env is made (the episode's env id is no env)."""
    with pytest.raises(ValueError, match="reward_tol must be a finite number >= 0"):
        replay_episode(_record(tmp_path), reward_tol=tol)


def test_cli_takes_a_reward_tolerance_of_0(tmp_path, capsys):
    path = _record(tmp_path)
    assert main(["--reward-tol", "0", str(path)]) == 2  # past the flags: fake-v0 is no env id
    assert "browser_env/fake-v0" in capsys.readouterr().err


def test_cli_refuses_an_episode_it_cannot_read_in_one_line(tmp_path, capsys):
    path = _record(tmp_path)
    (path / "steps.jsonl").unlink()
    (path / "steps.jsonl").mkdir()
    assert main([str(path)]) == 2  # was IsADirectoryError's traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "steps.jsonl" in err[0], err


def _headed_episode(tmp_path):
    """An episode of open-v0 on about:blank, which a real env can replay."""
    path = _record(tmp_path)
    header = json.loads((path / "episode.json").read_text())
    header.update(env_id="browser_env/open-v0", env_kwargs={"task": "open"})
    (path / "episode.json").write_text(json.dumps(header))
    return path


@pytest.mark.browser
def test_headed_with_no_display_is_refused_in_one_line(tmp_path):
    """``--headed`` where there is no display: Chromium failed to start and the
    command ended in Playwright's TargetClosedError (3.6 kB of launch log), status 1."""
    from _commands import python_m

    out = python_m(
        "browser_env.replay",
        "--headed",
        str(_headed_episode(tmp_path)),
        unset=("DISPLAY", "WAYLAND_DISPLAY"),
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: --headed shows the browser window, and there is no display here ($DISPLAY and "
        "$WAYLAND_DISPLAY are unset): set DISPLAY to a running X server, run under xvfb-run, "
        "or leave out --headed"
    ]
