"""The main job end to end on a tiny budget, and the report helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from agents.rollout import EpisodeResult
from benchmarks.report import format_table, summarize
from benchmarks.suites import Suite

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def _result(env_id: str, success: bool, steps: int) -> EpisodeResult:
    return EpisodeResult(
        env_id,
        0,
        "g",
        success,
        1.0 if success else -1.0,
        steps,
        True,
        False,
        None,
        0,
        [10.0] * steps,
        [1.0] * steps,
        40.0,
    )


def test_summary_rows_and_table():
    results = [
        _result("browser_env/miniwob.a-v0", True, 1),
        _result("browser_env/miniwob.a-v0", False, 3),
        _result("browser_env/miniwob.b-v0", True, 2),
    ]
    rows, overall = summarize(results)
    assert [r["task"] for r in rows] == ["miniwob.a", "miniwob.b"]
    assert (
        rows[0]["success_rate"] == 0.5
        and rows[0]["mean_steps"] == 2.0
        and rows[0]["mean_reward"] == 0.0
    )
    assert overall["episodes"] == 3 and overall["success_rate"] == pytest.approx(2 / 3)
    table = format_table(rows, overall)
    assert "miniwob.a" in table and "67%" in table and "overall" in table


def test_episodes_not_played_to_their_end_are_counted_and_shown():
    import dataclasses

    ok = _result("browser_env/miniwob.a-v0", True, 1)
    table = format_table(*summarize([ok]))
    assert "errors" not in table  # no column while every episode ended
    results = [
        ok,
        dataclasses.replace(
            _result("browser_env/miniwob.a-v0", False, 0),
            seed=3,
            status="error",
            error="ValueError: bad url",
        ),
        dataclasses.replace(_result("browser_env/miniwob.b-v0", False, 2), status="timeout"),
    ]
    rows, overall = summarize(results)
    assert [(r["errors"], r["timeouts"]) for r in rows] == [(1, 0), (0, 1)]
    assert (overall["errors"], overall["timeouts"]) == (1, 1)
    assert (
        rows[0]["first_error"] == "seed 3: ValueError: bad url" and rows[1]["first_error"] is None
    )
    lines = format_table(rows, overall).splitlines()
    assert lines[0].split()[-2:] == ["errors", "timeouts"]
    assert lines[2].split()[-2:] == ["1", "0"] and lines[-2].split()[-2:] == ["1", "1"]
    assert lines[-1] == "miniwob.a: seed 3: ValueError: bad url"


def test_suite_validation():
    assert Suite("s", ["click-test"]).env_ids == ("browser_env/miniwob.click-test-v0",)
    assert len(Suite("s", "all").env_ids) > 100
    assert Suite("s", ["click-test"], prefix="miniwob.").env_ids == (
        "browser_env/miniwob.click-test-v0",
    )
    with pytest.raises(ValueError, match="no tasks"):
        _ = Suite("s", ["x"], exclude=["x"]).env_ids
    with pytest.raises(ValueError, match="episodes"):
        Suite.seeds(0, 0)


def test_default_suite_starts_at_its_held_out_seeds():
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="benchmark")
        other = compose(config_name="benchmark", overrides=["suite=miniwob_smoke"])
    assert cfg.seed is None and instantiate(cfg.suite).seed == 1000
    assert instantiate(other.suite).seed == 0


@pytest.mark.parametrize(
    ("config", "name"),
    [("benchmark", "benchmarks"), ("compare", "compare"), ("learner_speed", "learner_speed")],
)
def test_output_dir_is_hydras_run_dir_too(config, name, tmp_path):
    import benchmarks.run  # noqa: F401 - registers ${coalesce:...} as the entry points do

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        given = compose(config, [f"output_dir={tmp_path}"], return_hydra_config=True)
        default = compose(config, return_hydra_config=True)
    assert given.hydra.run.dir == str(tmp_path)
    assert default.output_dir is None
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        empty = compose(config, ["output_dir="], return_hydra_config=True)
    assert empty.hydra.run.dir.startswith(f"outputs/{name}/20")  # empty is unset, not the cwd
    assert default.hydra.run.dir.startswith(f"outputs/{name}/20")


def test_the_output_dir_help_says_where_a_sweep_jobs_hydra_files_stay():
    """Under ``--multirun`` a job's ``output_dir`` is not its Hydra run dir
    (``.hydra/`` and the log stay in the sweep dir): ``--help`` says so."""
    import dataclasses

    from benchmarks.config import BenchmarkConfig

    (field,) = (f for f in dataclasses.fields(BenchmarkConfig) if f.name == "output_dir")
    text = field.metadata["help"]
    assert "a single run's Hydra run dir too" in text
    assert "whose .hydra/ and log stay in the sweep dir" in text


def test_one_output_dir_for_a_sweep_is_refused(tmp_path):
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--multirun", "agent=random,expert",
         f"output_dir={tmp_path / 'one'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "wandb=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(CONF).parent)},
    )  # fmt: skip
    assert proc.returncode != 0
    assert "with --multirun would put every job's results in one dir" in proc.stderr
    assert not (tmp_path / "one" / "results.json").exists()


@pytest.mark.browser
@pytest.mark.exhaustive  # ~47 s (two sweeps, 5 jobs); the one-dir refusal and resume: the tests around it
def test_a_sweep_names_one_output_dir_per_job_and_resumes_into_them(tmp_path):
    import json
    import os
    import subprocess
    import sys

    def sweep(agents: str, *extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.run", "--multirun", f"agent={agents}",
             "suite=miniwob_smoke", "suite.tasks=[click-test]", "max_steps=2", "progress=false",
             "wandb=false", "record=false", f"hydra.sweep.dir={tmp_path / 'sweep'}",
             f"output_dir={tmp_path / 'runs'}/${{hydra:job.num}}", *extra],
            capture_output=True, text=True, cwd=tmp_path, timeout=300,
            env={**os.environ, "PYTHONPATH": str(Path(CONF).parent)},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    sweep("random,expert", "episodes=1")
    # the same jobs, numbered alike: each finds its log; a job the first sweep never
    # reached (here: one more) has none, and starts
    out = sweep("random,expert,tiny", "episodes=2", "resume=true")
    assert out.count("1 of 2 episodes already played") == 2
    assert out.count("does not exist yet (a job the sweep never started): starting it") == 1
    agents = [json.loads((tmp_path / "runs" / n / "results.json").read_text()) for n in "012"]
    assert [a["agent"] for a in agents] == ["random", "expert", "llm"]
    assert [a["overall"]["episodes"] for a in agents] == [2, 2, 2]

    from benchmarks.compare import load_runs

    # runs/N holds no .hydra/ (it stays in the sweep dir): results.json records the overrides
    assert not (tmp_path / "runs" / "0" / ".hydra").exists()
    assert "agent=random" in agents[0]["overrides"]
    labels = [r.label for r in load_runs([tmp_path / "runs"])]
    assert labels == ["agent=random", "agent=expert", "agent=tiny"]


@pytest.mark.browser
def test_benchmark_run_writes_results_table_plot_and_episodes(tmp_path, capsys):
    from benchmarks.run import run

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="benchmark",
            overrides=[
                "agent=random",
                "suite.tasks=[click-test,click-button]",
                "episodes=2",
                "progress=false",
                f"output_dir={tmp_path}",
            ],
        )
    data = run(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["schema"] == 1 and saved["agent"] == "random"
    # results are sorted by (env id, seed) whatever the runner, so the order never depends on timing
    assert [t["task"] for t in saved["tasks"]] == ["miniwob.click-button", "miniwob.click-test"]
    assert all(t["episodes"] == 2 for t in saved["tasks"]) and len(saved["episodes"]) == 4
    assert data["overall"]["step_latency_ms"]["median"] > 0
    assert (tmp_path / "success.png").stat().st_size > 1000
    episode_dirs = [p for p in (tmp_path / "episodes").iterdir() if (p / "episode.json").exists()]
    assert len(episode_dirs) == 4
    out = capsys.readouterr().out
    assert "success" in out and "miniwob.click-test" in out


def test_an_agent_built_here_is_closed_when_the_rollout_spec_is_refused(
    tmp_path, monkeypatch, open_http_clients
):
    """``benchmarks.run`` closes the agent it built (here its backend's HTTP
    client) when what comes before the episodes fails."""
    import benchmarks.run
    from benchmarks.run import run

    def refused(**kwargs):  # the options are checked before the agent: refuse after it
        raise ValueError("episode_timeout_s must be refused here")

    monkeypatch.setattr(benchmarks.run, "RolloutSpec", refused)

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="benchmark",
            overrides=[
                "agent=llm",
                "backend=openai",
                "model=m",
                "backend.base_url=http://127.0.0.1:9/v1",  # never contacted
                "progress=false",
                f"output_dir={tmp_path}",
            ],
        )
    before = open_http_clients()
    with pytest.raises(ValueError, match="episode_timeout_s must be") as raised:
        run(cfg)
    # the traceback's frames keep the agent alive: its client must be closed, not collected
    assert raised.traceback
    assert open_http_clients() - before == set()


def test_an_agent_refused_as_it_builds_leaves_the_previous_runs_log_as_it_was(
    tmp_path, monkeypatch
):
    """What only the agent's own constructor refuses (here a backend setting)
    comes before ``results.jsonl`` is rewritten: a finished run's log in that
    ``output_dir`` keeps its episodes."""
    import agents.run
    from agents.rollout import EpisodeResult
    from benchmarks.result_log import ResultLog
    from benchmarks.run import run

    def refused(cfg):
        raise ValueError("device='cuda' but CUDA is not available")

    monkeypatch.setattr(agents.run, "build_agent", refused)
    log = ResultLog(tmp_path / "results.jsonl", {"x": 1}, resume=False)
    log.append(
        EpisodeResult(
            "browser_env/miniwob.click-test-v0",
            1000,
            "g",
            True,
            1.0,
            1,
            True,
            False,
            None,
            0,
            [5.0],
            [1.0],
            3.0,
        )  # fmt: skip
    )
    log.finish()
    before = (tmp_path / "results.jsonl").read_bytes()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="benchmark",
            overrides=["agent=random", "progress=false", f"output_dir={tmp_path}"],
        )
    with pytest.raises(ValueError, match="CUDA is not available"):
        run(cfg)
    assert (tmp_path / "results.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["episodes=0"], "episodes must be an integer >= 1, got episodes=0"),
        (["seed=-3"], "seed must be an integer >= 0"),
        (["max_steps=0"], "max_steps must be an integer >= 1"),
        (["workers=0"], "workers must be >= 1"),
        (["modalities=[nope]"], "modalities must be a list of"),
        (["episode_timeout_s=-1"], "episode_timeout_s must be"),
    ],
)
def test_bad_options_name_themselves_before_a_model_loads(tmp_path, monkeypatch, overrides, match):
    import agents.run
    from benchmarks.run import run

    def no_agent(cfg):
        raise AssertionError("an agent was built")

    monkeypatch.setattr(agents.run, "build_agent", no_agent)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=[f"output_dir={tmp_path}", *overrides])
    with pytest.raises(ValueError, match=match):
        run(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("episodes=abc", "episodes"),
        ("seed=abc", "seed"),
        ("progress=maybe", "progress"),
        ("modalities=abc", "modalities"),
        ("env_kwargs=abc", "env_kwargs"),
        ("cpus_per_worker=lots", "cpus_per_worker"),
    ],
)
def test_a_value_of_the_wrong_kind_is_hydras_error_naming_the_key(override, key):
    """``conf/benchmark.yaml`` builds on :class:`BenchmarkConfig`: Hydra refuses a
    value of the wrong kind while it composes the config, before anything runs."""
    from hydra.errors import ConfigCompositionException

    with (
        initialize_config_dir(config_dir=CONF, version_base="1.3"),
        pytest.raises(ConfigCompositionException) as raised,
    ):
        compose(config_name="benchmark", overrides=[override])
    assert f"full_key: {key}" in str(raised.value.__cause__)


def test_an_unknown_backend_is_a_config_error():
    from hydra.errors import MissingConfigException

    with (
        initialize_config_dir(config_dir=CONF, version_base="1.3"),
        pytest.raises(MissingConfigException, match="backend/nope"),
    ):
        compose(config_name="benchmark", overrides=["agent=llm", "backend=nope"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["agent=llm"], "backend.model has no value: set it on the command line, e.g. model="),
        (["agent=llm", "model=./nonexistent"], "model='./nonexistent' is no preset"),
        (["agent=expert", "suite=miniwob_all"], "suite=miniwob_expert lists the MiniWoB++ tasks"),
    ],
)
def test_a_refused_command_line_is_one_error_line_and_exit_status_2(tmp_path, overrides, message):
    """``error: <why>`` and status 2, before anything is written or a browser
    starts, not a Hydra-wrapped traceback (:mod:`browser_env.refusal`)."""
    from _commands import python_m

    proc = python_m(
        "benchmarks.run",
        *overrides,
        f"output_dir={tmp_path / 'out'}",
        "wandb=false",
        "progress=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_the_expert_on_tasks_it_has_no_policy_for_is_refused_naming_them(tmp_path, monkeypatch):
    """Not ``UnsupportedTaskError`` from inside the first rollout of such a
    task, after the browser started: the first few tasks, how many, and the
    suite the expert plays (which exists, every task of it supported)."""
    from hydra.utils import instantiate

    import agents.run
    from benchmarks.run import run
    from browser_env.refusal import Refused

    def no_agent(cfg):
        raise AssertionError("an agent was built")

    monkeypatch.setattr(agents.run, "build_agent", no_agent)

    def config(*overrides: str):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            return compose(
                "benchmark", ["agent=expert", f"output_dir={tmp_path}", "wandb=false", *overrides]
            )

    with pytest.raises(Refused) as raised:
        run(config("suite=miniwob_all"))
    message = str(raised.value)
    assert message.startswith("agent=expert has no scripted policy for ")
    assert "ascending-numbers, " in message and " more" in message
    assert "suite=miniwob_expert" in message and not (tmp_path / "results.jsonl").exists()
    with pytest.raises(Refused, match=r"for 1 of the 3 tasks: click-pie;"):
        run(config("suite=miniwob_smoke", "suite.tasks=[click-test,click-pie,click-button]"))

    from agents.agent_config import check_agent

    for suite in ("miniwob_expert", "sites_all"):  # what the message suggests plays
        cfg = config(f"suite={suite}")
        check_agent(cfg, instantiate(cfg.suite).env_ids)


def test_the_progress_bar_names_the_task_not_its_id():
    from benchmarks.run import _task_label

    assert _task_label("browser_env/miniwob.click-button-sequence-v0") == "click-button-sequence"
    assert _task_label("browser_env/sites.shop.add-to-cart-v1") == "sites.shop.add-to-cart"
    assert len(_task_label("browser_env/miniwob." + "x" * 50 + "-v0")) == 32


def test_the_plot_names_the_agent_config_chosen_not_only_its_kind():
    """``agent=tiny`` is an ``llm`` agent; the plot's title says both."""
    from hydra.core.hydra_config import HydraConfig

    from benchmarks.run import _agent_label

    assert _agent_label("llm") == "llm"  # no Hydra run: the kind alone
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=["agent=tiny"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        assert _agent_label("llm") == "tiny (llm)"
        assert _agent_label("tiny") == "tiny"
    finally:
        HydraConfig.instance().cfg = None
