"""A stopped benchmark run keeps its finished episodes and resumes from them."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from agents.rollout import EpisodeResult
from benchmarks.result_log import ResultLog, fingerprint, set_aside_unlogged

CONF = str(Path(__file__).resolve().parents[2] / "conf")
RUN = {"agent": {"_target_": "agents.random_agent.RandomAgent", "seed": 0}, "max_steps": 4}


def _result(env_id: str, seed: int, success: bool = True) -> EpisodeResult:
    return EpisodeResult(
        env_id, seed, "g", success, 1.0, 2, True, False, None, 0, [5.0, 6.0], [1.0, 1.0], 3.0,
        actions=[{"action": "CLICK", "element": 1}],
    )  # fmt: skip


def test_results_come_back_as_they_were_written(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultLog(path, RUN, resume=False)
    assert log.resumed == 0 and log.done == {}
    first, second = _result("a", 0), _result("a", 1, success=False)
    log.append(first)
    log.append(second)
    again = ResultLog(path, RUN, resume=True)
    assert again.resumed == 2
    assert again.done == {("a", 0): first, ("a", 1): second}
    # the resumed file holds the same episodes, and appends go after them
    again.append(_result("b", 0))
    assert ResultLog(path, RUN, resume=True).resumed == 3


def test_a_stop_raised_while_the_line_is_fsynced_finds_the_result_counted(tmp_path, monkeypatch):
    """SIGTERM's ``SystemExit`` raised during the fsync (the line already in the
    file, where the fresh-clone test saw it and sent the signal) left ``done``
    without it, so the run stopped saying nothing of what it kept."""
    import benchmarks.result_log

    log = ResultLog(tmp_path / "results.jsonl", RUN, resume=False)

    def stopped(fd):
        raise SystemExit(143)

    monkeypatch.setattr(benchmarks.result_log.os, "fsync", stopped)
    with pytest.raises(SystemExit):
        log.append(_result("a", 0))
    assert set(log.done) == {("a", 0)}
    monkeypatch.undo()
    assert set(ResultLog(tmp_path / "results.jsonl", RUN, resume=True).done) == {("a", 0)}


def test_a_fresh_run_starts_the_file_again_but_never_over_a_stopped_run(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultLog(path, RUN, resume=False).append(_result("a", 0))
    with pytest.raises(ValueError, match="holds 1 episodes of a stopped run: resume=true"):
        ResultLog(path, RUN, resume=False)  # a forgotten resume=true wipes nothing
    finished = ResultLog(path, RUN, resume=True)
    finished.finish()
    assert ResultLog(path, RUN, resume=False).resumed == 0  # a complete run's log may go
    assert ResultLog(path, RUN, resume=True).resumed == 0
    assert len(path.read_text().splitlines()) == 1  # the header alone


def test_errored_episodes_play_again_on_resume(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultLog(path, RUN, resume=False)
    log.append(_result("a", 0))
    crashed = _result("a", 1, success=False)
    crashed.status, crashed.error = "error", "TargetClosedError: the browser got the Ctrl-C too"
    log.append(crashed)
    timed_out = _result("a", 2, success=False)
    timed_out.status = "timeout"  # an outcome under the run's own limit: kept
    log.append(timed_out)
    assert set(ResultLog(path, RUN, resume=True).done) == {("a", 0), ("a", 2)}


def test_resume_with_nothing_there_starts_fresh(tmp_path):
    log = ResultLog(tmp_path / "new" / "results.jsonl", RUN, resume=True)
    assert log.resumed == 0 and log.path.exists()


def test_a_line_cut_by_a_crash_is_dropped_a_bad_line_elsewhere_is_an_error(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultLog(path, RUN, resume=False)
    log.append(_result("a", 0))
    log.append(_result("a", 1))
    whole = path.read_text()
    path.write_text(whole[:-20])  # the last write was cut short
    assert set(ResultLog(path, RUN, resume=True).done) == {("a", 0)}
    lines = whole.splitlines()
    path.write_text("\n".join([lines[0], "{not json", lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:2 is not a JSON line"):
        ResultLog(path, RUN, resume=True)
    path.write_text(json.dumps({"episode": {}}) + "\n")
    with pytest.raises(ValueError, match="no run header"):
        ResultLog(path, RUN, resume=True)


def test_resuming_other_settings_is_refused_naming_what_differs(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultLog(path, RUN, resume=False).append(_result("a", 0))
    with pytest.raises(ValueError, match=r"max_steps: 4 there, 5 now"):
        ResultLog(path, {**RUN, "max_steps": 5}, resume=True)
    other_agent = {**RUN, "agent": {**RUN["agent"], "seed": 1}}
    with pytest.raises(ValueError, match=r"\(agent\.seed: 0 there, 1 now\)"):
        ResultLog(path, other_agent, resume=True)  # the leaf that differs, not the whole agent
    assert ResultLog(path, RUN, resume=True).resumed == 1  # the refusal changed nothing


def test_how_a_run_plays_is_not_part_of_what_it_plays():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("benchmark", ["agent=random"])
        other = compose(
            "benchmark",
            ["agent=random", "runner=ray", "workers=4", "episodes=50", "progress=false"]
            + ["ship_episodes=true"],
        )
        different = compose("benchmark", ["agent=random", "max_steps=3"])
        tiny = compose("benchmark", ["agent=tiny"])
        faster = compose("benchmark", ["agent=tiny", "agent.backend.prefix_cache=0"])
        elsewhere = compose("benchmark", ["agent=tiny", "agent.backend.device=cuda"])
        api = ["agent=llm", "backend=openai", "model=m"]
        llm = compose("benchmark", api)
        patient = compose("benchmark", [*api, "backend.timeout=5", "backend.max_retries=9"])
        other_model = compose("benchmark", [*api[:2], "model=n"])
    from omegaconf import OmegaConf

    def fp(c):
        return fingerprint(OmegaConf.to_container(c, resolve=True))

    assert fp(cfg) == fp(other) != fp(different)
    assert "agent" in fp(cfg) and "suite" in fp(cfg) and "runner" not in fp(cfg)
    # a setting that changes only speed is not part of it; one that changes numerics is
    assert fp(tiny) == fp(faster) != fp(elsewhere)
    assert fp(llm) == fp(patient) != fp(other_model)  # backend= reaches the agent through ${}
    assert "prefix_cache" not in fp(tiny)["agent"]["backend"]
    assert fingerprint(fp(tiny)) == fp(tiny)


def test_a_log_whose_header_holds_speed_only_settings_resumes(tmp_path):
    older = {"agent": {"backend": {"device": "cpu", "prefix_cache": 16}}, "max_steps": 4}
    path = tmp_path / "results.jsonl"
    lines = [{"run": older}, {"episode": _result("t", 0).to_dict()}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = ResultLog(path, fingerprint({**older, "runner": "vector"}), resume=True)
    assert list(log.done) == [("t", 0)]
    cuda = {"agent": {"backend": {"device": "cuda"}}, "max_steps": 4}
    with pytest.raises(ValueError, match='agent.backend.device: "cpu" there, "cuda" now'):
        ResultLog(path, fingerprint(cuda), resume=True)


def test_episode_dirs_no_kept_result_names_are_set_aside_not_deleted(tmp_path):
    episodes = tmp_path / "episodes"
    for name in ("a", "b", "c"):
        (episodes / name).mkdir(parents=True)
        (episodes / name / "episode.json").write_text(name)
    (episodes / "notes.txt").write_text("mine")  # not an episode dir: left alone
    (tmp_path / "episodes.stale" / "c").mkdir(parents=True)  # a name taken there already
    kept = [dataclasses.replace(_result("t", 0), episode_dir=str(tmp_path / "old" / "a"))]
    moved = set_aside_unlogged(episodes, [*kept, _result("t", 1)])  # no dir: names nothing
    assert sorted(p.name for p in episodes.iterdir()) == ["a", "notes.txt"]
    assert moved == [tmp_path / "episodes.stale" / "b", tmp_path / "episodes.stale" / "c-1"]
    assert [(p / "episode.json").read_text() for p in moved] == ["b", "c"]
    assert set_aside_unlogged(episodes, kept) == []
    assert set_aside_unlogged(tmp_path / "none", kept) == []


@pytest.mark.browser
def test_a_stopped_benchmark_resumes_to_the_table_of_an_unstopped_one(
    tmp_path, monkeypatch, capsys
):
    from benchmarks.run import run

    def config(out: Path, *extra: str):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            return compose(
                "benchmark",
                [
                    "agent=random",
                    "suite=miniwob_smoke",
                    "suite.tasks=[click-test,click-button]",
                    "episodes=2",
                    "max_steps=3",
                    "progress=false",
                    "wandb=false",
                    "record=true",
                    f"output_dir={out}",
                    *extra,
                ],
            )

    whole = run(config(tmp_path / "whole"))

    stopped = tmp_path / "stopped"
    append = ResultLog.append
    appended: list[tuple[str, int | None]] = []

    def append_then_stop(self, result):
        append(self, result)
        appended.append((result.env_id, result.seed))
        if len(appended) == 3:
            raise KeyboardInterrupt  # Ctrl-C after the third episode

    monkeypatch.setattr(ResultLog, "append", append_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(config(stopped))
    assert not (stopped / "results.json").exists()
    assert "stopped after 3 of 4 episodes" in capsys.readouterr().err
    # an episode that ended while the run stopped, before its result was logged
    first = sorted((stopped / "episodes").iterdir())[0]
    shutil.copytree(first, stopped / "episodes" / "ended-while-stopping")
    played_now: list[tuple[str, int | None]] = []

    def append_and_count(self, result):
        append(self, result)
        played_now.append((result.env_id, result.seed))

    monkeypatch.setattr(ResultLog, "append", append_and_count)

    with pytest.raises(ValueError, match="resume=true needs output_dir"):
        run(config(tmp_path / "x", "resume=true", "output_dir=null"))
    with pytest.raises(ValueError, match="ship_episodes .* runner=ray only"):
        run(config(tmp_path / "x", "ship_episodes=true"))
    with pytest.raises(ValueError, match="max_steps: 3 there, 2 now"):
        run(config(stopped, "resume=true", "max_steps=2"))

    # resumed under another runner: only the missing episode plays
    resumed = run(config(stopped, "resume=true", "runner=vector", "workers=2"))
    out = capsys.readouterr().out
    assert "resuming" in out and "moved 1 episode dirs" in out

    def dirs(path: Path) -> list[str]:
        return sorted(p.name for p in path.iterdir())

    assert dirs(stopped / "episodes") == sorted(
        Path(e["episode_dir"]).name for e in resumed["episodes"]
    )  # the table's episodes, each once
    assert dirs(stopped / "episodes.stale") == ["ended-while-stopping"]
    played = {(e["env_id"], e["seed"]) for e in resumed["episodes"]}
    assert len(played) == 4 and played_now == list(played - set(appended))
    columns = (
        "task",
        "episodes",
        "success_rate",
        "errors",
        "timeouts",
        "mean_steps",
        "mean_reward",
    )
    assert [[t[c] for c in columns] for t in resumed["tasks"]] == [
        [t[c] for c in columns] for t in whole["tasks"]
    ]  # latencies aside: they are measured, not played
    keys = ("env_id", "seed", "success", "steps", "actions")
    assert [[e[k] for k in keys] for e in resumed["episodes"]] == [
        [e[k] for k in keys] for e in whole["episodes"]
    ]
    # a finished run resumed again plays nothing and writes the same table
    again = run(config(stopped, "resume=true"))
    assert again["episodes"] == resumed["episodes"] and len(played_now) == 1
    # a complete run's dir may be played afresh; stopped, it has no table of the old run
    old_table = (stopped / "results.json").read_text()

    def append_then_stop_once(self, result):
        append_and_count(self, result)
        monkeypatch.setattr(ResultLog, "append", append_and_count)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResultLog, "append", append_then_stop_once)
    with pytest.raises(KeyboardInterrupt):
        run(config(stopped))
    assert not (stopped / "results.json").exists() and not (stopped / "success.png").exists()
    assert (stopped / "results.stale.json").read_text() == old_table
    assert (stopped / "success.stale.png").is_file()
    fresh = run(config(stopped, "resume=true"))
    assert len(played_now) == 1 + 1 + 3 and (stopped / "results.json").is_file()
    assert dirs(stopped / "episodes") == sorted(
        Path(e["episode_dir"]).name for e in fresh["episodes"]
    )
    assert len(dirs(stopped / "episodes.stale")) == 5  # the replaced run's, kept


def _a_long_benchmark_past_its_first_result(tmp_path, *, record: bool):
    """``python -m benchmarks.run`` of 500 random-click episodes into
    ``tmp_path/out``, started in a session of its own (``_commands.start_m``),
    once its first result is in ``results.jsonl``: ``(proc, out)``."""
    import time

    from _commands import start_m

    out = tmp_path / "out"
    proc = start_m(
        "benchmarks.run", "agent=random", "suite=miniwob_smoke", "suite.tasks=[click-test]",
        "episodes=500", "max_steps=3", "progress=false", "wandb=false",
        f"record={str(record).lower()}", f"output_dir={out}", cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    log = out / "results.jsonl"
    while not (log.exists() and '{"episode"' in log.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate()[1])
        time.sleep(0.05)
    return proc, out


@pytest.mark.browser
def test_sigterm_stops_a_benchmark_saying_what_it_kept_and_how_to_resume(tmp_path):
    """A scheduler's SIGTERM stops ``python -m benchmarks.run`` as Ctrl-C does:
    promptly, with the hint to resume on stderr (the default handler ended the
    process without a word)."""
    import signal
    import time

    proc, out = _a_long_benchmark_past_its_first_result(tmp_path, record=False)
    try:
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - sent < 10
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped after " in err and " of 500 episodes" in err, err
    assert f"output_dir={out} resume=true" in err
    # a handler that ran inside a weakref callback: Python prints its SystemExit as
    # "Exception ignored" and goes on; the run then stops at its next episode's end
    err = re.sub(r"Exception ignored in:.*?\nSystemExit: 143\n", "", err, flags=re.DOTALL)
    assert "Traceback" not in err, err
    played = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert 1 <= sum("episode" in line for line in played) < 500


@pytest.mark.browser
def test_ctrl_c_stops_a_benchmark_with_its_resume_line_and_status_130_no_traceback(tmp_path):
    """Ctrl-C in a terminal (SIGINT to the whole process group: the browser and
    its driver get it too) prints what ``results.jsonl`` kept and how to resume,
    and nothing else: no ``KeyboardInterrupt`` traceback; status 130, as a
    shell reports a process that SIGINT ended."""
    import os
    import signal

    proc, out = _a_long_benchmark_past_its_first_result(tmp_path, record=True)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stopped after ") and f"output_dir={out} resume=true" in lines[0]


def test_ctrl_c_is_status_130_unless_hydra_full_error_asks_for_the_traceback(monkeypatch, capsys):
    from browser_env.refusal import exit_on_interrupt

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exited, exit_on_interrupt("stopped by Ctrl-C"):
        raise KeyboardInterrupt
    assert exited.value.code == 130 and exited.value.__suppress_context__
    assert capsys.readouterr().err == "stopped by Ctrl-C\n"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(KeyboardInterrupt), exit_on_interrupt():
        raise KeyboardInterrupt


@pytest.mark.browser
def test_a_sigterm_whose_exit_was_swallowed_stops_the_run_at_the_next_episode(tmp_path):
    """Where Python ignored the handler's ``SystemExit`` (raised inside a weakref
    callback), the flag it set stops the run once the episode under way ends,
    with what was played logged."""
    import benchmarks.run
    from benchmarks.run import run

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="benchmark",
            overrides=[
                "agent=random", "suite=miniwob_smoke", "suite.tasks=[click-test]", "episodes=5",
                "max_steps=2", "progress=false", "wandb=false", "record=false",
                f"output_dir={tmp_path}",
            ],
        )  # fmt: skip
    benchmarks.run._TERMINATED.set()  # as the handler leaves it
    try:
        with pytest.raises(SystemExit) as exited:
            run(cfg)
    finally:
        benchmarks.run._TERMINATED.clear()
    assert exited.value.code == 143
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sum('"episode"' in line for line in lines) == 1


def test_the_sigterm_handler_is_the_runs_only_and_the_main_threads():
    import os
    import signal
    import threading

    from benchmarks.run import _sigterm_stops

    def before(signum, frame):
        raise AssertionError("the previous handler ran")

    previous = signal.signal(signal.SIGTERM, before)
    try:
        with pytest.raises(SystemExit) as raised, _sigterm_stops():
            os.kill(os.getpid(), signal.SIGTERM)
        assert raised.value.code == 143
        assert signal.getsignal(signal.SIGTERM) is before  # put back after the run
        seen = []

        def elsewhere():
            with _sigterm_stops():  # signal.signal would raise outside the main thread
                seen.append(signal.getsignal(signal.SIGTERM))

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        assert seen == [before]
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # e.g. a launcher that ignores it
        with _sigterm_stops():
            os.kill(os.getpid(), signal.SIGTERM)  # stays ignored: no SystemExit
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
