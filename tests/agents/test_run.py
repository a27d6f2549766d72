"""``agents.run``: the plain ``run(cfg)`` on a small in-process env, the Hydra
entry point, and (marked ``browser``) a real MiniWoB++ page."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from agents.agent import LLMAgent
from agents.run import env_id_of, run
from browser_env.actions import Action, ActionSpace, Verb, coerce_action

CONF = Path(__file__).resolve().parents[2] / "conf"
ROOT = CONF.parent


def compose_run(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="run", overrides=list(overrides))


class ClickOkEnv(gym.Env):
    """Succeeds when e2 ("OK") is clicked; any other element id is an error."""

    def __init__(self, observation) -> None:
        self._make_obs = observation
        self.action_space = ActionSpace()
        self.observation_space = gym.spaces.Dict({})
        self.closed = False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._make_obs(), {"task": "click-ok", "seed": seed}

    def step(self, action: Any):
        action = coerce_action(action)
        error = ""
        if action.element_id is not None and action.element_id not in ("e1", "e2"):
            error = f"no element {action.element_id}"
        success = action == Action.click("e2")
        obs = self._make_obs(error=error)
        done = success or action.action is Verb.FINISH
        return obs, float(success), done, False, {"success": success, "action": action.to_dict()}

    def close(self) -> None:
        self.closed = True


def test_env_id_of():
    assert env_id_of({"env": "miniwob.click-test"}) == "browser_env/miniwob.click-test-v0"
    assert (
        env_id_of({"env": "browser_env/miniwob.click-test-v0"})
        == "browser_env/miniwob.click-test-v0"
    )
    assert env_id_of({"env": "x", "url": "https://example.com"}) == "browser_env/open-v0"
    with pytest.raises(ValueError):
        env_id_of({"env": None})


def test_run_llm_agent_until_success(make_obs, scripted_backend, capsys):
    cfg = compose_run("agent=llm", "record=false", "max_steps=5")
    backend = scripted_backend(["nonsense", '{"action": "CLICK", "element_id": "e9"}', "CLICK e2"])
    env = ClickOkEnv(make_obs)
    summary = run(cfg, env=env, agent=LLMAgent(backend))
    assert summary["steps"] == 3 and summary["return"] == 1.0 and summary["success"] is True
    assert summary["terminated"] and not summary["truncated"]
    assert summary["actions"][-1] == {"action": "CLICK", "element_id": "e2"}
    assert not env.closed  # passed-in objects belong to the caller
    out = capsys.readouterr().out
    assert "goal: Click the OK button" in out
    assert "parse_error=" in out and "guards=unknown_element" in out
    assert "[03] " in out and "done: steps=3" in out


def test_run_stops_at_max_steps(make_obs):
    cfg = compose_run(
        "agent=random",
        "record=false",
        "max_steps=4",
        "agent.weights.CLICK=0",
        "agent.weights.FINISH=0",
    )
    summary = run(cfg, env=ClickOkEnv(make_obs), verbose=False)
    assert summary["steps"] == 4 and summary["truncated"]


def test_run_records_the_episode(make_obs, scripted_backend, tmp_path):
    from browser_env.episodes import load_episode

    cfg = compose_run("agent=llm", f"episodes_dir={tmp_path}", "max_steps=3")
    summary = run(
        cfg,
        env=ClickOkEnv(make_obs),
        agent=LLMAgent(
            scripted_backend(['{"action": "TYPE", "element_id": "e1", "value": "bob"}', "CLICK e2"])
        ),
        verbose=False,
    )
    episode = load_episode(summary["episode_dir"])
    assert len(episode.steps) == 2 and episode.outcome is not None
    first = episode.steps[0]
    assert first.raw_output == '{"action": "TYPE", "element_id": "e1", "value": "bob"}'
    assert first.prompt[0]["role"] == "system"
    assert episode.meta.agent.name == "llm"


def test_hydra_entry_point_help():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    out = subprocess.run(
        [sys.executable, "-m", "agents.run", "agent=llm", "--cfg", "job"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "agents.agent.LLMAgent" in out.stdout and "max_steps: 15" in out.stdout


@pytest.mark.browser
@pytest.mark.skipif(
    shutil.which("chromium") is None and not os.environ.get("BROWSER_ENV_CHROMIUM"),
    reason="needs Chromium",
)
def test_random_agent_on_miniwob(tmp_path):
    cfg = compose_run("agent=random", "max_steps=3", f"episodes_dir={tmp_path}")
    assert cfg.env == "miniwob.click-test"  # the default
    summary = run(cfg, verbose=False)
    assert 1 <= summary["steps"] <= 3
    assert summary["env_id"] == "browser_env/miniwob.click-test-v0"
    assert summary["episode_dir"] is not None and Path(summary["episode_dir"]).is_dir()


def _online_sdft(tmp_path, *overrides):
    """agents.run with the tiny policy on click-collapsible and online SDFT
    (two updates of one step at most), into ``tmp_path``."""
    return compose_run(
        "agent=tiny",
        "env=miniwob.click-collapsible",
        "max_steps=4",
        "seed=1000",
        f"episodes_dir={tmp_path / 'episodes'}",
        "online=sdft",
        f"online.output_dir={tmp_path / 'online'}",
        "online.max_updates=2",
        "online.steps_per_update=1",
        "online.sdft.wandb=false",
        *overrides,
    )


@pytest.mark.browser
@pytest.mark.slow
def test_online_sdft_updates_the_tiny_policy_after_successes(tmp_path, monkeypatch):
    """agents.run online=sdft: each success gives one update within max_updates,
    checkpointed, and the agent acts with the new adapter afterwards."""
    import json

    from agents.run import _load_adapter as load
    from agents.run import run_episodes

    out = tmp_path / "online"
    cfg = _online_sdft(tmp_path, "episodes=3")
    result = run_episodes(cfg, verbose=False)
    successes = sum(bool(s["success"]) for s in result["episodes"])
    assert successes >= 2  # the embedded policy solves click-collapsible
    assert result["updates"] == 2
    assert (out / "updates" / "update-0002" / "adapter_model.safetensors").is_file()
    assert len((out / "online.jsonl").read_text().splitlines()) == 2
    assert result["episodes"][-1]["update"] is None  # budget spent
    # the same command again goes on from that run: its adapter acts from the first
    # episode, and the updates go on numbering (update 1 was overwritten before)
    import agents.run

    loaded = []
    monkeypatch.setattr(
        agents.run, "_load_adapter", lambda path, agent: loaded.append(path) or load(path, agent)
    )
    first = (out / "updates" / "update-0001" / "adapter_model.safetensors").read_bytes()
    again = run_episodes(_online_sdft(tmp_path, "episodes=1", "seed=1001"), verbose=False)
    assert loaded == [str(out)]  # before the episode: local runners load it once
    assert again["episodes"][0]["success"] and again["updates"] == 1
    assert again["episodes"][0]["update"]["update"] == 3
    assert (out / "updates" / "update-0003").is_dir()
    assert (out / "updates" / "update-0001" / "adapter_model.safetensors").read_bytes() == first
    lines = (out / "online.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1, 2, 3]


@pytest.mark.browser
@pytest.mark.slow
def test_online_sdft_through_the_vector_runner_updates_between_rounds(tmp_path):
    """runner=vector workers=2: episodes play two at a time in one browser; each
    success of a round gives an update (within max_updates) before the next
    round, whose forks share the updated backend."""
    import json

    from agents.run import run_episodes

    out = tmp_path / "online"
    cfg = _online_sdft(tmp_path, "episodes=4", "runner=vector", "workers=2")
    result = run_episodes(cfg, verbose=False)
    episodes = result["episodes"]
    assert [s["seed"] for s in episodes] == [1000, 1001, 1002, 1003]
    assert sum(bool(s["success"]) for s in episodes[:2]) == 2  # the tiny policy solves both
    assert result["updates"] == 2
    assert [s["update"]["update"] for s in episodes[:2]] == [1, 2]  # both from round one
    assert all(s["update"] is None for s in episodes[2:])  # budget spent
    logged = [json.loads(line) for line in (out / "online.jsonl").read_text().splitlines()]
    assert [r["episode_dir"] for r in logged] == [s["episode_dir"] for s in episodes[:2]]
    assert (out / "updates" / "update-0002" / "adapter_model.safetensors").is_file()


def test_rollout_stops_at_its_own_step_limit_and_records_why(make_obs, scripted_backend, tmp_path):
    from agents.prompt import PROMPT_VERSION
    from agents.rollout import rollout
    from browser_env.episodes import AgentInfo, load_episode
    from browser_env.wrappers import RecordEpisode

    env = RecordEpisode(ClickOkEnv(make_obs), tmp_path, agent=AgentInfo(name="llm"))
    typing = '{"action": "TYPE", "element_id": "e1", "value": "bob"}'
    result = rollout(env, LLMAgent(scripted_backend([typing] * 5)), 3, max_steps=2)
    assert (result.steps, result.truncated, result.terminated, result.success) == (
        2,
        True,
        False,
        False,
    )
    assert result.actions == [{"action": "TYPE", "element_id": "e1", "value": "bob"}] * 2
    assert len(result.agent_ms) == len(result.env_step_ms) == 2
    episode = load_episode(result.episode_dir)
    assert episode.complete and episode.outcome.reason == "max_steps" and len(episode.steps) == 2
    assert episode.steps[0].extras["prompt_version"] == PROMPT_VERSION
    with pytest.raises(ValueError, match="max_steps"):
        rollout(env, LLMAgent(scripted_backend([typing])), 0, max_steps=0)


def test_recording_info_names_backend_and_prompt_version():
    from agents.prompt import PROMPT_VERSION
    from agents.run import recording_info

    cfg = compose_run("agent=llm", "backend=openai", "model=m")
    info, source = recording_info(cfg, LLMAgent.__new__(LLMAgent))
    assert (info.name, info.backend, info.model, info.prompt_version) == (
        "llm",
        "openai",
        "m",
        PROMPT_VERSION,
    )
    assert source == "agent"
    info, source = recording_info(compose_run("agent=random"), object())
    assert info.prompt_version is None and source == "agent"
    # the model the backend runs when none is given on the command line (was None)
    assert recording_info(compose_run("agent=tiny"))[0].model == "tiny-miniwob"
    other = compose_run("agent=tiny", "model=smollm2-135m")
    assert recording_info(other)[0].model == "smollm2-135m"
    assert other.agent.backend.model.name == "tiny-miniwob"  # the config handed in is as it was


def test_recording_info_without_building_the_agent():
    """A runner=ray driver describes the agent from its config alone (its actors
    build the agents): the same description as from a built agent."""
    from agents.agent_config import agent_name
    from agents.run import build_agent, recording_info

    for choice, name in (("expert", "expert"), ("random", "random"), ("tiny", "llm")):
        cfg = compose_run(f"agent={choice}")
        assert agent_name(cfg) == name
        agent = build_agent(cfg)
        try:
            assert recording_info(cfg) == recording_info(cfg, agent)
        finally:
            if hasattr(agent, "close"):
                agent.close()


@pytest.mark.browser
def test_episodes_through_the_vector_runner_match_local(tmp_path):
    from agents.run import run_episodes

    args = ("agent=expert", "env=miniwob.click-button", "episodes=3", "max_steps=4")
    local = run_episodes(compose_run(*args, "record=false"), verbose=False)
    vector = run_episodes(
        compose_run(*args, "runner=vector", "workers=2", f"episodes_dir={tmp_path}"),
        verbose=False,
    )
    keys = ("seed", "success", "steps", "actions")
    assert [[s[k] for k in keys] for s in vector["episodes"]] == [
        [s[k] for k in keys] for s in local["episodes"]
    ]
    assert len(list(tmp_path.iterdir())) == 3
    with pytest.raises(ValueError, match="record=true"):  # online SDFT learns from records
        run_episodes(
            compose_run(*args, "runner=vector", "online=sdft", "record=false"), verbose=False
        )


@pytest.mark.browser
def test_one_episode_with_a_timeout_is_played_under_the_limit():
    """``episode_timeout_s`` holds for the default single episode too (the
    step-by-step path has no clock: the engine plays it)."""
    from agents.run import _entry

    cfg = compose_run(
        "agent=random", "env=miniwob.click-button", "record=false", "episode_timeout_s=1e-9"
    )
    [episode] = _entry(cfg)["episodes"]
    assert episode["status"] == "timeout" and episode["steps"] == 0


def test_bad_runner_options_fail_before_anything_runs_even_for_one_episode(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cases = [
        (["runner=bogus"], "runner must be one of"),
        (["workers=0"], "workers must be >= 1"),
        # an unknown id is Gymnasium's error, not an `error` episode in a Ray actor
        (["env=miniwob.no-such-task", "runner=ray", "episodes=2"], "doesn't exist"),
        # Ray-only keys are refused for the one step-by-step episode too
        (["startup_timeout_s=5"], "startup_timeout_s is how long a Ray actor"),
    ]
    for overrides, match in cases:
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "agents.run", "agent=random", "env=miniwob.click-button"]
            + [f"hydra.run.dir={tmp_path}", *overrides],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode != 0 and match in out.stderr, (overrides, out.stdout, out.stderr)
        assert "Started a local Ray instance" not in out.stdout + out.stderr
        assert time.perf_counter() - start < 60


def test_an_episode_line_says_why_it_failed(capsys):
    from agents.run import _print_episode

    line = {"seed": 3, "steps": 0, "success": False, "status": "error", "update": None}
    _print_episode({**line, "error": "gymnasium.error.NameNotFound: no such env\nTraceback"})
    _print_episode({**line, "status": "ok", "error": None})
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("error: gymnasium.error.NameNotFound: no such env")
    assert out[1].endswith(" ok")


@pytest.mark.parametrize(
    ("entry", "overrides", "match"),
    [
        # gym.make refuses the env after the agent was built
        ("run", ["+env_kwargs.render_mode=bogus"], "render_mode must be one of"),
        # the rollout spec refuses its limit after the agent was built
        ("run_episodes", ["episodes=2", "episode_timeout_s=-1"], "episode_timeout_s must be"),
    ],
)
def test_an_agent_built_here_is_closed_when_what_follows_fails(
    entry, overrides, match, open_http_clients
):
    """``run``/``run_episodes`` close the agent they built (its backend's HTTP
    client, or a loaded model) also when making the env or the spec fails."""
    import agents.run

    cfg = compose_run(
        "agent=llm",
        "backend=openai",
        "model=m",
        "backend.base_url=http://127.0.0.1:9/v1",  # never contacted
        "record=false",
        *overrides,
    )
    before = open_http_clients()
    with pytest.raises(ValueError, match=match) as raised:
        getattr(agents.run, entry)(cfg, verbose=False)
    # the traceback's frames keep the agent alive: its client must be closed, not collected
    assert raised.traceback
    assert open_http_clients() - before == set()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["episodes=0"], "episodes must be an integer >= 1, got episodes=0"),
        (["seed=-1"], "seed must be an integer >= 0"),
        (["max_steps=0"], "max_steps must be an integer >= 1"),
        (["workers=0"], "workers must be >= 1"),
        (["runner=ray", "cpus_per_worker=nan"], "cpus_per_worker must be a finite number"),
        (["episodes=2", "episode_timeout_s=-1"], "episode_timeout_s must be"),
        (["env=miniwob.no-such-task", "agent=llm"], "doesn't exist"),
    ],
)
def test_bad_options_name_themselves_before_anything_starts(monkeypatch, overrides, match):
    """A value that cannot be played is a one-line error that names the option,
    raised by the entry point before an agent is built or a browser starts."""
    import agents.run

    def no_agent(cfg):
        raise AssertionError("an agent was built")

    monkeypatch.setattr(agents.run, "build_agent", no_agent)
    with pytest.raises(Exception, match=match):
        agents.run._entry(compose_run(*overrides))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("episodes=abc", "episodes"),
        ("max_steps=1.5", "max_steps"),
        ("workers=abc", "workers"),
        ("gpus_per_worker=x", "gpus_per_worker"),
        ("record=maybe", "record"),
        ("env_kwargs=abc", "env_kwargs"),
        ("episode_timeout_s=soon", "episode_timeout_s"),
    ],
)
def test_a_value_of_the_wrong_kind_is_hydras_error_naming_the_key(override, key):
    """``conf/run.yaml`` builds on :class:`RunConfig`: Hydra refuses a value of
    the wrong kind, or a misspelt key, while it composes the config."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as raised:
        compose_run(override)
    assert f"full_key: {key}" in str(raised.value.__cause__)
    with pytest.raises(ConfigCompositionException, match="Could not override 'episdoes'"):
        compose_run("episdoes=3")


def test_a_null_rollout_option_is_its_default():
    """``workers=null`` (e.g. in a sweep ``workers=null,4``) is the default, as
    :func:`agents.runners.runner_options` documents."""
    from agents.runners import runner_options

    cfg = compose_run("runner=null", "workers=null", "cpus_per_worker=null")
    options = runner_options(cfg)
    assert (options["runner"], options["workers"], options["cpus_per_worker"]) == ("local", 1, 1.0)


def test_check_options_checks_a_config_that_did_not_come_through_hydra():
    """A plain mapping (a notebook's, a test's) is checked against the schema too."""
    from agents.run_config import check_options
    from benchmarks.config import BenchmarkConfig

    check_options({"episodes": 3, "env_kwargs": {"modalities": ["text"]}})
    # what is checked is what runs: values of their fields' kinds, the rest defaults
    checked = check_options({"episodes": "3", "record": "false", "headless": "no"})
    assert (checked.episodes, checked.record, checked.headless) == (3, False, False)
    assert checked.max_steps == 15 and checked.workers == 1
    for bad, match in [
        ({"episodes": "abc"}, r"^episodes: Value 'abc' of type 'str' could not be converted"),
        ({"episdoes": 3}, r"Key 'episdoes' not in 'RunConfig'"),
        ({"record": "maybe"}, r"^record: "),
        ({"env_kwargs": "abc"}, r"^env_kwargs: "),
        ({"seed": -1}, r"seed must be an integer >= 0, got seed=-1"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_options(bad)
    check_options({"modalities": ["elements", "text"], "progress": False}, BenchmarkConfig)
    with pytest.raises(ValueError, match="modalities must be a list of"):
        check_options({"modalities": ["nope"]}, BenchmarkConfig)
    with pytest.raises(ValueError, match="Key 'progress' not in 'RunConfig'"):
        check_options({"progress": False})  # a benchmark key is not agents.run's


def test_an_unknown_backend_is_a_config_error():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="backend/nope"):
        compose_run("agent=llm", "backend=nope")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["agent=llm"], "backend.model has no value: set it on the command line, e.g. model="),
        (["runner=vectr"], "runner must be one of ('local', 'vector', 'ray'), got 'vectr'"),
        (["env=nope"], "Environment `nope` doesn't exist in namespace browser_env"),
        # a goal without its page used to be ignored (the task's own goal played)
        (["goal=x"], "goal= belongs to a url=... task; env=miniwob.click-test has its own"),
        (["env=open"], "env=open needs url=... and goal=..."),  # it played about:blank
        (["url=http://127.0.0.1:9/"], "url=http://127.0.0.1:9/ needs goal=..."),
        # the page does not open, or the URL policy refuses it: was a traceback, exit 1
        (
            ["agent=random", "url=http://127.0.0.1:65531/", "goal=x"],
            "http://127.0.0.1:65531/ could not be opened: net::ERR_CONNECTION_REFUSED",
        ),
        (["agent=random", "url=file:///etc/passwd", "goal=x"], "refused to load 'file:///etc"),
    ],
)
def test_a_refused_command_line_is_one_error_line_and_exit_status_2(tmp_path, overrides, message):
    """An ordinary mistake on the command line is ``error: <why>``, not a
    Hydra-wrapped traceback (:mod:`browser_env.refusal`), and leaves no
    ``outputs/<date>/<time>`` run dir behind."""
    out = _agents_run(tmp_path, *overrides)
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, out.stderr
    assert "Traceback" not in out.stderr and "HYDRA_FULL_ERROR" not in out.stderr
    assert list((tmp_path / "outputs").rglob("*")) == []


@pytest.mark.parametrize(
    ("run_dir", "before"),
    [
        ("outputs/earlier", {"results.jsonl": "{}\n"}),  # an earlier run's dir
        ("logs", {"nginx.log": "precious\n", "other.log": "keep\n"}),  # a dir of one's own
        # an earlier run that crashed: Hydra's files and a job log with its traceback
        ("outputs/crashed", {".hydra/config.yaml": "a: 1\n", "run.log": "Traceback ...\n"}),
        ("mine", {}),  # made by this run: removed, as outputs/<date>/<time> is
    ],
)
def test_a_refused_run_removes_only_what_hydra_wrote_for_it(tmp_path, run_dir, before):
    """``hydra.run.dir`` pointed at a dir that holds anything but what Hydra
    wrote for the refused run (an earlier run's results or log, a dir of
    one's own): every file in it is kept, and the dir; a dir this run made is
    removed."""
    for name, text in before.items():
        (tmp_path / run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / run_dir / name).write_text(text)
    out = _agents_run(tmp_path, "runner=vectr", f"hydra.run.dir={run_dir}")
    assert out.returncode == 2 and "error: runner must be one of" in out.stderr, out.stderr
    if not before:
        assert not (tmp_path / run_dir).exists()
        return
    for name, text in before.items():
        if not name.startswith(".hydra/"):  # Hydra rewrites its own config files
            assert (tmp_path / run_dir / name).read_text() == text, name
    assert (tmp_path / run_dir / ".hydra" / "overrides.yaml").is_file()


def _agents_run(cwd, *overrides):
    """``python -m agents.run OVERRIDES`` in ``cwd``: its default run dir under
    ``cwd/outputs``."""
    from _commands import python_m

    return python_m("agents.run", *overrides, cwd=cwd)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        # the hub's OSError about repo ids came from inside the backend, after the setup
        (["agent=llm", "model=/no/such/model"], r"model='/no/such/model' is no preset"),
        (["agent=llm", "model=./no/such", "episodes=2"], r"model='./no/such' is no preset"),
        (["agent=tiny", "agent.backend.model=/no/such"], r"agent\.backend\.model='/no/such'"),
        (["agent=llm", "backend=mlx", "model=/no/such"], r"model='/no/such' is no preset"),
        # with Ray the driver builds no agent: its actors would have failed
        (["agent=llm", "model=/no/such", "runner=ray"], r"model='/no/such' is no preset"),
        (["agent=llm", "backend=openai"], r"backend\.model has no value.*model="),
        (["agent=expert", "env=miniwob.click-pie"], r"no scripted policy for click-pie; suite="),
        (["agent=expert", "env=miniwob.click-pie", "episodes=3"], r"no scripted policy for"),
    ],
)
def test_an_agent_that_could_not_play_is_refused_before_it_is_built(monkeypatch, overrides, match):
    """A model path that does not exist, an unset model, or the scripted expert
    on a task it has no policy for: refused before the agent is built or a
    browser starts."""
    import agents.run
    from browser_env.refusal import Refused

    def no_agent(cfg):
        raise AssertionError("an agent was built")

    monkeypatch.setattr(agents.run, "build_agent", no_agent)
    monkeypatch.setattr(agents.run, "make_env", no_agent)
    with pytest.raises(Refused, match=match):
        agents.run._entry(compose_run(*overrides))


@pytest.mark.parametrize("seed", ["null", "7"])
def test_seed_null_draws_the_first_seed_of_several_episodes(monkeypatch, capsys, seed):
    """``seed=null`` with ``episodes=2`` played seeds 0 and 1, as ``seed=0`` does."""
    from types import SimpleNamespace

    import agents.runners
    from agents.run import run_episodes

    played = []

    class Engine:
        slots = 1

        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def run(self, jobs):
            for job in jobs:
                played.append(job.seed)
                yield SimpleNamespace(
                    **dict.fromkeys(["goal", "actions", "episode_dir", "error"]),
                    env_id=job.env_id,
                    seed=job.seed,
                    steps=1,
                    episode_return=0.0,
                    success=False,
                    terminated=True,
                    truncated=False,
                    status="ok",
                )

    monkeypatch.setattr(agents.runners, "RolloutEngine", Engine)
    for _ in range(2):
        run_episodes(compose_run("agent=random", f"seed={seed}", "episodes=2", "record=false"))
    if seed == "7":
        assert played == [7, 8, 7, 8]
        return
    first, second = played[0::2], played[1::2]
    assert [b - a for a, b in zip(first, second, strict=True)] == [1, 1] and first[0] != first[1]
    assert (
        f"seed=null: seeds {first[0]}..{first[0] + 1}, drawn at random" in capsys.readouterr().out
    )


@contextlib.contextmanager
def hydra_app(tmp_path, *overrides: str):
    """``compose_run(*overrides)`` as a ``@hydra.main`` app sees it: Hydra's own
    config (the options picked, the run dir ``tmp_path``) set while it is used."""
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        full = compose(config_name="run", overrides=list(overrides), return_hydra_config=True)
    with open_dict(full):
        full.hydra.runtime.output_dir = str(tmp_path)
    cfg = full.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    HydraConfig.instance().set_config(full)
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        # agent=tiny played on the CPU, with the group's device unread
        (
            ["agent=tiny", "backend.device=cuda"],
            r"^agent=tiny builds its own backend \(agent\.backend\): backend\.device is not read; set agent\.backend\.device instead$",
        ),
        (
            ["agent=tiny", "backend=openai"],
            r"^agent=tiny builds its own backend \(agent\.backend\): backend=openai is not read",
        ),
        (
            ["agent=random", "model=/no/such"],
            r"^agent=random has no model: model= is not read; drop it$",
        ),
        (
            ["agent=expert", "adapter=/no/such", "episodes=2"],
            r"^agent=expert has no model: adapter= is not read",
        ),
        # online learning needs a model to train: it failed after the first success
        (
            ["agent=random", "online=sdft"],
            r"^online=\.\.\. trains .*; agent=random has no model: use agent=tiny",
        ),
        (
            ["agent=llm", "backend=openai", "model=m", "online=sdft"],
            r"; agent=llm has the openai backend: ",
        ),
    ],
)
def test_settings_the_agent_would_not_read_are_refused(monkeypatch, tmp_path, overrides, match):
    """Each was accepted and ignored (or, online, failed after an episode)."""
    import agents.run
    from browser_env.refusal import Refused

    def no_agent(cfg):
        raise AssertionError("an agent was built")

    monkeypatch.setattr(agents.run, "build_agent", no_agent)
    monkeypatch.setattr(agents.run, "make_env", no_agent)
    with hydra_app(tmp_path, *overrides) as cfg, pytest.raises(Refused, match=match):
        agents.run._entry(cfg)
    assert list(tmp_path.iterdir()) == []


def test_what_the_agent_check_lets_through(monkeypatch):
    """An OpenAI-compatible server's model is a name only it knows; presets and
    local dirs load; the expert plays the tasks it has policies for, bundled
    sites' among them, and any page of ``url=`` (its task is the page's)."""
    from agents.agent_config import check_agent

    check_agent(compose_run("agent=llm", "backend=openai", "model=meta/llama-3.1-8b-instruct"))
    check_agent(compose_run("agent=llm", "backend=openai", "model=/not/a/path"))
    check_agent(compose_run("agent=llm", "model=tiny-random"))
    check_agent(compose_run("agent=llm", f"model={ROOT}"))
    check_agent(compose_run("agent=tiny"))  # its model is agents.pretrained's
    check_agent(compose_run("agent=tiny", "agent.backend.device=cpu", "model=tiny-random"))
    check_agent(compose_run("agent=llm", "backend.device=cpu", "model=tiny-random"))
    check_agent(compose_run("agent=random"))  # no backend: the group's ??? model is not read
    expert = compose_run("agent=expert")
    check_agent(
        expert,
        [
            "browser_env/miniwob.click-test-v0",
            "browser_env/sites.shop.buy-named-v0",
            "browser_env/open-v0",
        ],
    )
    check_agent(compose_run("agent=expert", "agent.task=click-test"), ["browser_env/miniwob.x-v0"])
    # runner=ray on a cluster: the actors load the model, from their own disks
    remote = compose_run("agent=llm", "model=/shared/models/x", "runner=ray")
    with pytest.raises(ValueError, match="no local path"):
        check_agent(remote)  # embedded Ray: the actors share this machine's disk
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    check_agent(remote)


def test_an_adapter_for_a_backend_that_takes_none_is_refused_by_the_agent_check():
    """``adapter=`` on the OpenAI-compatible backend was refused only when the
    driver built the agent: with ``runner=ray`` (the actors build it) the
    ``ValueError`` came as a traceback after the results log was started."""
    from agents.agent_config import check_agent

    cfg = compose_run("agent=llm", "backend=openai", "model=m", "adapter=/x", "runner=ray")
    with pytest.raises(ValueError, match="takes no adapter; drop adapter=... or pick another"):
        check_agent(cfg)
