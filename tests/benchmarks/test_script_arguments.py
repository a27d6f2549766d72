"""The benchmark scripts refuse a bad path, count or task with argparse's one-line
error (exit code 2), before a browser starts or a model loads; no traceback."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = str(ROOT / "notebooks" / "train_and_evaluate.ipynb")


class _Started(BaseException):
    """Raised by the stubbed measurement: the script went past its checks
    (a BaseException: ``rollout_speed`` records an Exception of a row and goes on)."""


#: (script, argv, what stderr says, the functions that would start the work)
CASES = [
    ("notebooks", ["/nonexistent.ipynb"], "no such notebook: /nonexistent.ipynb", ["execute"]),
    ("notebooks", [NOTEBOOK, "-o", f"{NOTEBOOK}/d/out.ipynb"], "is not a directory", ["execute"]),
    (
        "notebooks",
        [NOTEBOOK, "-p", "EVAL_EPISODES", "1", "-p", "EPISODS", "2"],
        f"{NOTEBOOK}: no parameter EPISODS: the notebook's parameters cell sets TASKS, ",
        ["execute"],
    ),
    (
        "policy_batching",
        ["replay", "/nonexistent"],
        "no such prompts file: /nonexistent",
        ["replay"],
    ),
    (
        "policy_batching",
        ["record", "--out", "p.json", "--task", "nope"],
        "--task: no such",
        ["record"],
    ),
    (
        "policy_batching",
        ["record", "--out", "p.json", "--task", "click-test-v0"],
        "--task: no such MiniWoB++ task: click-test-v0",
        ["record"],
    ),
    (
        "policy_batching",
        ["record", "--out", f"{NOTEBOOK}/d/p.json"],
        f"--out: {NOTEBOOK} is not a directory",
        ["record"],
    ),
    (
        "policy_batching",
        ["replay", NOTEBOOK, "--model", "/no/such/model"],
        "--model='/no/such/model' is no preset",
        ["replay"],
    ),
    (
        "policy_batching",
        ["replay", NOTEBOOK, "--device", "gpu"],
        "--device takes cpu, cuda or cuda:N, got 'gpu'",
        ["replay"],
    ),
    (
        "policy_batching",
        ["replay", NOTEBOOK, "--out", f"{NOTEBOOK}/d/r.json"],
        "is not a directory",
        ["replay"],
    ),
    ("obs_quality", ["--json", f"{NOTEBOOK}/d/q.json"], "is not a directory", ["measure"]),
    ("obs_quality", ["--seeds", "-1"], "--seeds must be >= 1, got -1", ["measure"]),
    ("obs_quality", ["--max-steps", "0"], "--max-steps must be >= 1, got 0", ["measure"]),
    ("obs_quality", ["--first-seed", "-1"], "--first-seed must be >= 0", ["measure"]),
    ("obs_quality", ["--tasks", "nope"], "--tasks: no scripted expert for nope", ["measure"]),
    ("env_speed", ["--tasks", "nope"], "--tasks: no such MiniWoB++ task: nope", ["measure"]),
    ("env_speed", ["--tasks", ","], "--tasks names no task", ["measure"]),
    ("env_speed", ["--json", "."], "--json: is a directory: .", ["measure"]),
    ("soak", ["--json", f"{NOTEBOOK}/d/s.json"], "is not a directory", ["soak"]),
    (
        "browser_kills",
        ["--json", f"{NOTEBOOK}/d/k.json"],
        "is not a directory",
        ["kill_rounds"],
    ),
    ("serve_load", ["--json", f"{NOTEBOOK}/d/l.json"], "is not a directory", ["run"]),
    ("soak", ["--resets", "-5"], "--resets must be more than the warm-up of 10, got -5", ["soak"]),
    ("soak", ["--task", "miniwob.nope"], "--task: no such env: miniwob.nope", ["soak"]),
    # a limit the growth can never be under: the 1000-reset soak ran, then FAILed
    ("soak", ["--max-growth", "nan"], "--max-growth must be a finite number > 0", ["soak"]),
    ("soak", ["--max-growth", "-1"], "--max-growth must be a finite number > 0", ["soak"]),
    ("browser_kills", ["--kills", "0"], "--kills must be >= 1, got 0", ["kill_rounds"]),
    ("browser_kills", ["--driver-every", "-1"], "--driver-every must be >= 0", ["kill_rounds"]),
    ("browser_kills", ["--hang-s", "0"], "--hang-s must be > 0", ["kill_rounds"]),
    ("browser_kills", ["--task", "nope"], "--task: no such env: nope", ["kill_rounds"]),
    ("serve_load", ["--reads", "-1"], "--reads must be >= 0, got -1", ["run"]),
    ("serve_load", ["--submissions", "-2"], "--submissions must be >= 0", ["run"]),
    *(
        ("rollout_speed", argv, message, ["measure_vector", "measure_policy", "measure_runners"])
        for argv, message in [
            (["--steps", "0"], "--steps must be >= 1, got 0"),
            (["--vector-rounds", "0"], "--vector-rounds must be >= 1"),
            (["--episodes", "-1"], "--episodes must be >= 1"),
            (["--runner-episodes", "0"], "--runner-episodes must be >= 1"),
            (["--sizes", "x"], "--sizes must be positive integers, got 'x'"),
            (["--sizes", "2,0"], "--sizes must be positive integers"),
            (["--skip", "nope"], "--skip takes separate, shared"),
            (["--task", "nope"], "--task: no such MiniWoB++ task: nope"),
            (["--task", "click-test-v0"], "--task: no such MiniWoB++ task: click-test-v0"),
            (["--json", f"{NOTEBOOK}/d/r.json"], f"--json: {NOTEBOOK} is not a directory"),
            (["--timeout-scale", "0"], "--timeout-scale must be > 0"),
        ]
    ),
]


@pytest.mark.parametrize(
    ("script", "argv", "message", "work"), CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES]
)
def test_bad_arguments_are_a_one_line_error_before_any_work(
    monkeypatch, capsys, tmp_path, script, argv, message, work
):
    module = importlib.import_module(f"benchmarks.{script}")

    def started(*args, **kwargs):
        raise _Started(script)

    for name in work:
        monkeypatch.setattr(module, name, started)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        module.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.search(r": error: ", last) and message in last, err


@pytest.mark.parametrize(
    "argv",
    [
        ["benchmarks.notebooks", "/nonexistent.ipynb"],
        ["benchmarks.policy_batching", "replay", "/nonexistent"],
        ["benchmarks.obs_quality", "--seeds", "-1"],
        ["benchmarks.env_speed", "--tasks", "nope"],
        ["benchmarks.soak", "--resets", "-5"],
    ],
)
def test_the_command_line_exits_2_with_the_message_alone(argv):
    from _commands import python_m

    proc = python_m(*argv)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and argv[-1] in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=0", "error: warmup_steps and steps must be >= 1"),
        ("model=nope", "error: model='nope' is no preset (tiny-random"),
        ("episodes=/no/such/dir", "error: episodes=/no/such/dir: no such episode"),
    ],
)
def test_learner_speed_refuses_a_bad_setting_with_its_message(tmp_path, override, message):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.learner_speed",
            override,
            "isolate=false",
            f"output_dir={tmp_path / 'out'}",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "disabled",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_output_path_in_directories_yet_to_be_made_is_accepted(tmp_path):
    """The scripts' atomic writes make missing directories, so ``--json
    results/speed.json`` in a fresh directory is no error; a file in the way is."""
    import argparse

    from benchmarks.arguments import refuse_unwritable

    parser = argparse.ArgumentParser()
    refuse_unwritable(parser, tmp_path / "results" / "deeper" / "speed.json", "--json")
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        refuse_unwritable(parser, tmp_path / "file" / "speed.json", "--json")
