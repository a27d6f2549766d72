"""``python -m benchmarks.rollout_speed`` on a tiny plan: the script runs end to end
and its figures are sane (the speed goals themselves live in the script's output)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_vector_rows_and_ratios(tmp_path, capsys):
    from benchmarks.rollout_speed import main

    out = tmp_path / "speed.json"
    result = main(
        ["--sizes", "1,2", "--steps", "4", "--vector-rounds", "1", "--skip", "ray,runners,policy"]
        + ["--json", str(out)]
    )
    rows = {(r["mode"], r["n"]): r for r in result["vector"]}
    assert set(rows) == {
        ("separate", 1),
        ("separate", 2),
        ("shared", 1),
        ("shared", 2),
        ("shared-seq", 2),
    }
    for row in rows.values():
        assert row["steps_per_s"] > 0 and row["cpu_ms_per_step"] > 0 and row["pss_mib"] > 50
    # a second context costs less memory than a second browser
    assert rows[("shared", 2)]["pss_mib"] - rows[("shared", 1)]["pss_mib"] < (
        rows[("separate", 2)]["pss_mib"] - rows[("separate", 1)]["pss_mib"]
    )
    assert json.loads(out.read_text())["vector"] == result["vector"]
    printed = capsys.readouterr().out
    assert "| shared | 2 |" in printed and "shared N=2 vs one env" in printed
    assert result["failures"] == []


def test_reports_are_written_atomically_and_readable_by_others(tmp_path):
    import os
    import stat

    from benchmarks.report import write_json_atomic

    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "sub" / "figures.json", {"a": 1})
    finally:
        os.umask(old)
    assert json.loads(path.read_text()) == {"a": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["figures.json"]  # no temp file left


@pytest.mark.exhaustive  # ~24 s; batched == unbatched actions: tests/agents/test_act_batch.py
def test_policy_rows_play_the_same_episodes(capsys):
    from benchmarks.rollout_speed import main

    skip = "separate,shared,shared-seq,ray,runners"
    result = main(["--sizes", "1,2", "--episodes", "1", "--policy-rounds", "1", "--skip", skip])
    assert result["failures"] == []
    rows = {(r["n"], r["batched"]): r for r in result["policy"]}
    assert set(rows) == {(1, True), (2, True), (2, False)}
    for row in rows.values():
        assert row["episodes"] == 2 and row["rounds"] == 1  # every row: the same 2 episodes
        assert row["episodes_per_s_runs"] == [row["episodes_per_s"]]
        assert row["steps_runs"] == [row["steps"]] and row["steps"] >= 2
        assert row["episodes_per_s"] > 0 and row["model_ms_per_step"] > 0
    # greedy: the same episodes, however the policy is called (each engine's page
    # URL, in the prompt, has its own port: a step apart at most, per episode)
    steps = [row["steps"] for row in rows.values()]
    assert max(steps) - min(steps) <= 2
    assert "tiny policy, batched N=2 vs N=1" in capsys.readouterr().out


def test_report_ratios_are_per_round_where_rows_took_turns():
    from benchmarks.rollout_speed_report import report

    def row(mode, n, cpu_runs):
        cpu = sorted(cpu_runs)[len(cpu_runs) // 2]
        return {"mode": mode, "n": n, "steps_per_s": 10.0 * n, "episodes_per_s": 1.0} | {
            "cpu_ms_per_step": cpu,
            "cpu_ms_per_step_runs": cpu_runs,
            "pss_mib": 500.0 + n,
        }

    policy = [
        {"n": 1, "batched": True, "episodes_per_s": 2.0, "episodes_per_s_runs": [1.0, 2.0, 4.0]},
        {"n": 8, "batched": True, "episodes_per_s": 5.0, "episodes_per_s_runs": [5.0, 3.0, 6.0]},
    ]
    for r in policy:
        r |= {"steps_per_s": 1.0, "model_ms_per_step": 1.0, "startup_s": 1.0}
    text = report(
        [row("shared", 1, [40.0, 30.0, 20.0]), row("shared", 8, [20.0, 30.0, 30.0])], (), policy
    )
    # medians 30 vs 30 (x1.00); round by round 0.50, 1.00, 1.50
    assert "CPU-ms/step x1.00 (target <= 0.8, rounds x0.50-1.50)" in text
    # rounds 5.0, 1.5, 1.5: median 1.5 (the medians' ratio would be 5/2 = 2.5)
    assert "episodes/s x1.50 (median of the rounds' ratios, rounds 1.50-5.00" in text
