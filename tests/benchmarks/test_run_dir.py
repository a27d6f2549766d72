"""A benchmark run's output dir: one run writes into it at a time, ``resume=true``
needs a log there and never leaves logged episodes out, and ``results.json``
records the config that ran. The episodes are played by a stand-in for the
rollout engine (no browser): what is tested is what ``benchmarks.run`` does
around them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import benchmarks.run
from agents.rollout import EpisodeResult
from benchmarks.run import run
from browser_env.dirlock import hold_dir

CONF = str(Path(__file__).resolve().parents[2] / "conf")
TASKS = ("click-test", "click-button")


def _config(out: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            "benchmark",
            [
                "agent=random",
                "suite=miniwob_smoke",
                f"suite.tasks=[{','.join(TASKS)}]",
                "progress=false",
                "wandb=false",
                f"output_dir={out}",
                *overrides,
            ],
        )


@pytest.fixture
def played(monkeypatch) -> list[tuple[str, int | None]]:
    """Episodes "played" from here on: each an ok result, with an episode dir
    under the spec's ``record_dir`` named as a recorder names one."""
    jobs: list[tuple[str, int | None]] = []

    def rollouts(todo, spec, *, on_result, **kwargs):
        results = []
        for job in todo:
            episode_dir = None
            if spec.record_dir:
                task = job.env_id.split(".", 1)[1].removesuffix("-v0")
                episode_dir = Path(spec.record_dir) / f"{task}_s{job.seed}_{uuid.uuid4().hex[:6]}"
                episode_dir.mkdir(parents=True)
                (episode_dir / "episode.json").write_text("{}")
            result = EpisodeResult(
                job.env_id, job.seed, "g", True, 1.0, 1, True, False, None, 0, [5.0], [1.0], 3.0,
                episode_dir=None if episode_dir is None else str(episode_dir),
            )  # fmt: skip
            on_result(result)
            jobs.append((job.env_id, job.seed))
            results.append(result)
        return results

    monkeypatch.setattr(benchmarks.run, "run_rollouts", rollouts)
    return jobs


def _log(cfg, *episodes: tuple[str, int]) -> None:
    """A ``results.jsonl`` for ``cfg``'s run holding ``episodes`` (env id, seed),
    as a run stopped after them leaves it."""
    from omegaconf import OmegaConf

    from benchmarks.result_log import ResultLog, fingerprint

    config = OmegaConf.to_container(cfg, resolve=True)
    log = ResultLog(Path(cfg.output_dir) / "results.jsonl", fingerprint(config), resume=False)
    for env_id, seed in episodes:
        log.append(
            EpisodeResult(env_id, seed, "g", True, 1.0, 1, True, False, None, 0, [5.0], [1.0], 3.0)
        )


def _dirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def test_a_smaller_episodes_on_resume_is_refused_and_no_logged_episode_is_set_aside(
    tmp_path, played, capsys
):
    """4 episodes a task, resumed with 2, then with 4 again (the audit's 30 -> 10
    -> 30): the smaller resume is refused before it moves anything, so the log,
    the table and ``episodes/`` keep the same 8 episodes."""
    out = tmp_path / "run"
    first = run(_config(out, "episodes=4"))
    names = _dirs(out / "episodes")
    assert len(first["episodes"]) == len(names) == 8
    log_before = (out / "results.jsonl").read_bytes()

    with pytest.raises(ValueError) as refused:
        run(_config(out, "episodes=2", "resume=true"))
    message = str(refused.value)
    assert message.startswith("cannot resume with episodes=2: ")
    assert "holds 4 more episodes" in message and "resume with episodes=4 (or more)" in message
    assert _dirs(out / "episodes") == names and not (out / "episodes.stale").exists()
    assert (out / "results.jsonl").read_bytes() == log_before
    assert "moved" not in capsys.readouterr().out

    again = run(_config(out, "episodes=4", "resume=true"))
    assert len(played) == 8  # nothing played again
    assert again["episodes"] == first["episodes"]
    assert sorted(Path(e["episode_dir"]).name for e in again["episodes"]) == names
    assert all(Path(e["episode_dir"]).is_dir() for e in again["episodes"])
    assert run(_config(out, "episodes=6", "resume=true"))["overall"]["episodes"] == 12  # grows


def test_logged_episode_dirs_set_aside_by_an_earlier_run_come_back(tmp_path, played, capsys):
    """A run dir left as the old shrinking resume left it (logged episodes moved
    into ``episodes.stale/``, beside a really unlogged one) is mended on resume."""
    out = tmp_path / "run"
    run(_config(out, "episodes=2"))
    stale = out / "episodes.stale"
    stale.mkdir()
    moved = _dirs(out / "episodes")[:2]
    for name in moved:
        (out / "episodes" / name).rename(stale / name)
    (stale / "unlogged").mkdir()
    capsys.readouterr()
    resumed = run(_config(out, "episodes=2", "resume=true"))
    assert "moved 2 episode dirs with a logged result back into" in capsys.readouterr().out
    assert all(Path(e["episode_dir"]).is_dir() for e in resumed["episodes"])
    assert _dirs(stale) == ["unlogged"]


def test_a_second_run_into_a_held_output_dir_is_refused_at_once(tmp_path, played):
    """Another run writing into ``output_dir`` (here: this process holds it, as
    a run does) is refused before the log is read: not told that the dir
    "holds episodes of a stopped run" and to resume it, which would play the
    holder's remaining episodes twice."""
    out = tmp_path / "run"
    _log(_config(out, "episodes=2"), ("browser_env/miniwob.click-test-v0", 0))  # part-way
    log_before = (out / "results.jsonl").read_bytes()
    with hold_dir(out):
        for extra in ([], ["resume=true"]):
            with pytest.raises(ValueError, match=rf"^output_dir={out} is in use by another run"):
                run(_config(out, "episodes=2", *extra))
    assert (out / "results.jsonl").read_bytes() == log_before and played == []
    # the holder gone, the stopped run is what it says
    with pytest.raises(ValueError, match="holds 1 episodes of a stopped run: resume=true"):
        run(_config(out, "episodes=2"))
    assert run(_config(out, "episodes=2", "resume=true"))["overall"]["episodes"] == 4
    assert len(played) == 3


def test_the_command_line_refuses_a_held_output_dir_in_one_line(tmp_path):
    """``python -m benchmarks.run ... output_dir=D`` while another run writes
    into D: ``error: output_dir=D is in use ...``, status 2, at once, and the
    first run's ``.hydra/`` files as they were (Hydra wrote the refused run's
    over them: browser_env.hydra_callbacks.RefuseHeldRunDir refuses first)."""
    from _commands import python_m

    out = tmp_path / "run"
    _log(_config(out), ("browser_env/miniwob.click-test-v0", 0))
    (out / ".hydra").mkdir()
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (out / ".hydra" / name).write_text("# the first run's\n")
    with hold_dir(out):
        proc = python_m(
            "benchmarks.run", "agent=random", "suite=miniwob_smoke", "suite.tasks=[click-test]",
            "wandb=false", "progress=false", f"output_dir={out}", cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: output_dir={out} is in use by another run, writing there now: wait for it to "
        "end, or set output_dir to another directory"
    ]
    assert len((out / "results.jsonl").read_text().splitlines()) == 2  # the holder's, as it was
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        assert (out / ".hydra" / name).read_text() == "# the first run's\n"
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "results.jsonl"]  # no log either


def test_the_output_dir_is_held_while_the_episodes_play(tmp_path, monkeypatch):
    from browser_env.dirlock import DirInUse

    out = tmp_path / "run"
    seen = []

    def rollouts(todo, spec, *, on_result, **kwargs):
        with pytest.raises(DirInUse), hold_dir(out):
            pass
        seen.append(True)
        raise KeyboardInterrupt  # stopped: nothing more to check here

    monkeypatch.setattr(benchmarks.run, "run_rollouts", rollouts)
    with pytest.raises(KeyboardInterrupt):
        run(_config(out, "episodes=1"))
    assert seen == [True]
    with hold_dir(out):  # released once the run ended
        pass


def test_resume_with_no_log_there_is_refused_and_leaves_nothing(tmp_path, played):
    """A misspelt or missing ``output_dir`` has nothing to resume: refused
    (before, a fresh run started there, quietly)."""
    missing = tmp_path / "runs" / "a" / "misspelt"  # runs/a made by the run: gone too
    (tmp_path / "runs").mkdir()
    with pytest.raises(ValueError) as refused:
        run(_config(missing, "resume=true"))
    assert str(refused.value).startswith(
        f"resume=true but {missing / 'results.jsonl'} does not exist: nothing to resume"
    )
    assert list((tmp_path / "runs").iterdir()) == [] and played == []


def test_resume_with_no_log_starts_a_sweeps_job_that_never_started(
    tmp_path, played, monkeypatch, capsys
):
    """In a ``--multirun`` sweep resumed with ``resume=true``, a job the stopped
    sweep never reached has no log: it starts, saying so, and the sweep goes on."""
    out = tmp_path / "runs" / "2"
    monkeypatch.setattr(benchmarks.run, "_in_a_sweep", lambda: True)
    # a sweep job's output_dir names ${hydra:job.num}, which only a Hydra job resolves
    monkeypatch.setattr(benchmarks.run, "_output_dir", lambda cfg: out)
    assert run(_config(out, "resume=true", "episodes=1"))["overall"]["episodes"] == 2
    assert len(played) == 2
    assert "does not exist yet (a job the sweep never started): starting it" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("overrides", "model"),
    [
        (["agent=tiny", "model=smollm2-135m"], "smollm2-135m"),
        (["agent=llm", "backend=openai", "model=m", "backend.base_url=http://127.0.0.1:9/v1"], "m"),
    ],
)
def test_results_json_records_the_model_that_ran(tmp_path, played, overrides, model):
    """The top-level ``model=`` is what the agent's backend loads (episode.json
    says so); ``results.json``'s ``config.agent.backend.model`` says the same,
    not the agent config's default (tiny-miniwob) or ``???``. Recorded from a
    resumed run that plays nothing (no model loads here)."""
    out = tmp_path / "run"
    cfg = _config(out, *overrides, "episodes=1", "record=false")
    _log(cfg, *((f"browser_env/miniwob.{task}-v0", 0) for task in TASKS))
    data = run(_config(out, *overrides, "episodes=1", "record=false", "resume=true"))
    assert played == []
    saved = json.loads((out / "results.json").read_text())
    assert data["config"] == saved["config"]
    assert saved["config"]["agent"]["backend"]["model"] == model
    assert saved["config"]["model"] == model
