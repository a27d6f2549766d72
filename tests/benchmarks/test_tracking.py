"""The offline wandb reader against files written by wandb itself."""

from __future__ import annotations

import pytest

from benchmarks.tracking import read_offline_run


def test_offline_run_reads_back_across_block_boundaries(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is in the train extra")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(
        project="t", dir=str(tmp_path), mode="offline", config={"big": "x" * 70_000, "n": 3}
    )
    for i in range(300):
        run.log({"x": i, "s": "y" * (i % 50)}, step=i)
    run.summary["final"] = 7
    run.finish()
    # finish() can return while wandb's service (shared by the whole test process)
    # still writes the run's last records; teardown waits for the service to exit.
    # Seen once in a full run: 282 of the 300 rows read back.
    wandb.teardown()
    logged = read_offline_run(tmp_path)
    rows = [h for h in logged["history"] if "x" in h]
    # a 70 kB record spans three 32 kB blocks (FIRST, MIDDLE, LAST fragments)
    assert logged["config"]["big"] == "x" * 70_000 and logged["config"]["n"] == 3
    assert [r["x"] for r in rows] == list(range(300)) and rows[49]["s"] == "y" * 49
    assert logged["summary"]["final"] == 7 and logged["summary"]["x"] == 299


def test_reader_refuses_what_is_not_one_run(tmp_path):
    with pytest.raises(ValueError, match="found 0"):
        read_offline_run(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run-x.wandb").write_bytes(b"not wandb")
    with pytest.raises(ValueError, match="header"):
        read_offline_run(tmp_path)


def test_reader_waits_for_the_run_to_be_written_to_its_end(tmp_path, monkeypatch):
    """wandb's service can still be writing a run after ``finish()`` returned:
    the reader waits for the exit record (and says so when it never comes)."""
    import shutil
    import threading
    import time

    wandb = pytest.importorskip("wandb", reason="wandb is in the train extra")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="t", dir=str(tmp_path / "w"), mode="offline", config={"n": 3})
    run.log({"x": 1}, step=0)
    run.finish()
    wandb.teardown()
    [written] = (tmp_path / "w").rglob("*.wandb")
    whole = written.read_bytes()
    partial = tmp_path / "p" / "run" / "run-1.wandb"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(whole[:100])  # the header and part of the run record
    with pytest.raises(TimeoutError, match="no exit record"):
        read_offline_run(tmp_path / "p", timeout_s=0.3)

    def finish_writing():
        time.sleep(0.5)
        tmp = partial.with_suffix(".tmp")
        tmp.write_bytes(whole)
        shutil.move(tmp, partial)

    writer = threading.Thread(target=finish_writing)
    writer.start()
    logged = read_offline_run(tmp_path / "p", timeout_s=30)
    writer.join()
    assert logged["config"]["n"] == 3


def test_an_offline_benchmark_run_says_one_line_of_where_it_is(tmp_path, monkeypatch, capfd):
    """Offline, wandb's banner, its sync hints and its Weave suggestion (it takes
    our package ``agents`` for OpenAI's Agents SDK) would follow the results
    table; one line says where the run is and how to upload it."""
    pytest.importorskip("wandb", reason="wandb is in the train extra")
    import agents  # noqa: F401 - what made wandb suggest Weave
    from benchmarks.tracking import log_benchmark

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    monkeypatch.delenv("WANDB_DISABLE_WEAVE", raising=False)
    episode = {"success": True, "steps": 2, "episode_return": 1.0, "agent_ms": [1.0, 2.0]}
    data = {
        "agent": "random",
        "suite": "s",
        "config": {"episodes": 1},
        "episodes": [episode],
        "tasks": [
            {"task": "t", "episodes": 1, "success_rate": 1.0, "mean_steps": 2, "mean_reward": 1.0}
        ],
        "overall": {"success_rate": 1.0, "mean_steps": 2.0, "episodes": 1},
    }
    directory = log_benchmark(data, tmp_path, project="t")
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if "wandb" in line.lower()]
    assert lines == [f"wandb: offline run in {directory} (upload: wandb sync {directory})"], lines
    assert read_offline_run(directory)["summary"]["success_rate"] == 1.0
