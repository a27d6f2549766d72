"""``python -m benchmarks.policy_batching``: recording a rollout's batched calls,
and replaying them three ways with the same greedy tokens."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SYSTEM = {"role": "system", "content": "You control a web browser. Answer with one JSON action."}


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _prompts(tmp_path, calls):
    path = tmp_path / "prompts.json"
    sampling = {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "seed": None, "stop": []}
    path.write_text(json.dumps({"task": "t", "n": 3, "sampling": sampling, "calls": calls}))
    return path


def test_replay_times_three_modes_that_agree(tmp_path, capsys):
    from benchmarks.policy_batching import MODES, main

    calls = [
        [[SYSTEM, _user('Goal: click "OK".\n[e1] button "OK"')], [SYSTEM, _user("Goal: wait.")]],
        [
            [SYSTEM, _user('Goal: click "OK".\n[e1] button "OK"\nHistory: CLICK e1')],
            [SYSTEM, _user("Goal: wait.\nHistory: WAIT")],
            [SYSTEM, _user('Goal: type "a".\n[e2] textbox "Name"')],
        ],
    ]
    out = tmp_path / "result.json"
    result = main(["replay", str(_prompts(tmp_path, calls)), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert (result["calls"], result["decisions"], result["largest_batch"]) == (2, 5, 3)
    assert [row["mode"] for row in result["rows"]] == list(MODES)
    # each mode is what it says: per-row prefill (the prefix cache), padded, alone
    assert [row["prefill"] for row in result["rows"]] == [["per_row"], ["padded"], ["alone"]]
    for row in result["rows"]:
        assert row["decisions_per_s"] > 0 and row["ms_per_call"] > 0
        assert row["agrees_with_one_by_one"] == 5  # float32 greedy: every decision
    printed = capsys.readouterr().out
    assert "| batched-padded |" in printed and "5/5" in printed


def test_replay_refuses_a_file_without_calls(tmp_path):
    from benchmarks.policy_batching import replay

    with pytest.raises(ValueError, match="no recorded calls"):
        replay(_prompts(tmp_path, []))


@pytest.mark.browser
@pytest.mark.slow
def test_record_keeps_every_batched_call(tmp_path):
    from benchmarks.policy_batching import main

    out = tmp_path / "prompts.json"
    data = main(["record", "--out", str(out), "--n", "2", "--episodes", "1"])
    assert json.loads(out.read_text())["calls"] == data["calls"]
    assert data["episodes"] == 2 and data["calls"]
    assert all(1 < len(call) <= 2 for call in data["calls"])
    for call in data["calls"]:
        for messages in call:
            assert messages[-1]["role"] == "user" and "click" in messages[-1]["content"].lower()
    assert data["sampling"]["temperature"] == 0.0 and data["sampling"]["seed"] is None
