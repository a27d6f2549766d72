"""Samples for learners from episode dirs, built with the agents' one prompt builder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.agent import Step
from agents.prompt import DEMO_BEGIN, build_prompt
from browser_env.actions import Action
from browser_env.episodes import AgentInfo, EpisodeMeta, EpisodeWriter
from browser_env.observation import make_element
from learners.samples import episode_samples, iter_samples, select_episodes, to_hf_dataset


def _obs(t: int, value: str = "") -> dict:
    return {
        "goal": "Type NYC and submit",
        "url": f"http://site/{t}",
        "elements": (
            make_element("e1", "input", "textbox", label="City", value=value, bbox=(1, 2, 3, 4)),
            make_element("e2", "button", "button", "Go", bbox=(5, 6, 7, 8)),
        ),
        "text": "City Go",
        "last_action_error": "",
        "screenshot": np.zeros((8, 8, 3), dtype=np.uint8),
    }


def _episode(root, *, task="form", source="agent", success=True, seed=0):
    w = EpisodeWriter(
        root,
        EpisodeMeta(
            env_id=f"browser_env/{task}-v0",
            task=task,
            seed=seed,
            source=source,
            goal="Type NYC and submit",
            agent=AgentInfo(name=source),
        ),
    )
    steps = [
        ({"action": "TYPE", "element_id": "e1", "value": "NYC", "reasoning": "fill"}, "", 0.0),
        (None, "action is not valid JSON", 0.0),  # the policy's garbage: no sample, no history
        ({"action": "CLICK", "element_id": "e9"}, "element e9 is not on the page", 0.0),
        ({"action": "CLICK", "element_id": "e2"}, "", 1.0 if success else 0.0),
    ]
    for t, (action, error, reward) in enumerate(steps):
        info = {"success": success and t == 3, "action_error": error}
        w.write_step(
            _obs(t, "NYC" if t else ""),
            action,
            reward,
            t == 3,
            False,
            info,
            action_input="garbage" if action is None else None,
        )
    return w.close()


def test_samples_use_the_one_prompt_builder(tmp_path):
    from browser_env.episodes import load_episode

    ep = load_episode(_episode(tmp_path))
    samples = list(episode_samples(ep))
    assert [s.step for s in samples] == [0, 2, 3]
    assert [json.loads(s.target) for s in samples] == [
        {"action": "TYPE", "element_id": "e1", "value": "NYC"},
        {"action": "CLICK", "element_id": "e9"},
        {"action": "CLICK", "element_id": "e2"},
    ]
    last = samples[-1]
    # exactly what the agent's build_prompt gives for that observation and history
    history = [
        Step(
            Action.type(
                "e1",
                "NYC",
            ),
            element='[e1] textbox "City"',
        ),
        Step(Action.click("e9"), error="element e9 is not on the page"),
    ]
    expected = build_prompt(ep.observation(3), history, goal="Type NYC and submit")
    assert last.messages == expected.messages
    assert "e9 is not on the page" in last.messages[-1]["content"]
    assert (
        DEMO_BEGIN in last.teacher_messages[-1]["content"]
        and DEMO_BEGIN not in last.messages[-1]["content"]
    )
    assert last.demonstration == last.target
    assert (
        last.reward == 1.0
        and last.episode_return == 1.0
        and last.success
        and last.source == "agent"
    )
    assert last.screenshot.endswith("screenshots/step_00003.png")
    keep = list(episode_samples(ep, keep_reasoning=True))[0]
    assert json.loads(keep.target)["reasoning"] == "fill"
    small = list(episode_samples(ep, prompt={"budget_tokens": 200}))
    assert len(small[0].messages[-1]["content"]) < len(samples[0].messages[-1]["content"])


def test_filters(tmp_path):
    _episode(tmp_path / "a", source="human", seed=1)
    _episode(tmp_path / "a", source="scripted", success=False, seed=2)
    _episode(tmp_path / "b", task="other", source="agent", seed=3)
    assert len(list(select_episodes(tmp_path))) == 3
    assert {e.meta.seed for e in select_episodes(tmp_path, success_only=True)} == {1, 3}
    assert {e.meta.seed for e in select_episodes(tmp_path, sources={"human", "scripted"})} == {1, 2}
    assert {e.meta.seed for e in select_episodes(tmp_path, tasks=["other"])} == {3}
    assert {e.meta.seed for e in select_episodes(tmp_path, where=lambda e: e.meta.seed > 1)} == {
        2,
        3,
    }
    with pytest.raises(ValueError, match="sources"):
        list(select_episodes(tmp_path, sources={"robot"}))
    samples = list(
        iter_samples([tmp_path / "a", tmp_path / "b"], success_only=True, sources={"human"})
    )
    assert len(samples) == 3 and {s.source for s in samples} == {"human"}


def test_hf_dataset_export(tmp_path):
    _episode(tmp_path, source="human", seed=1)
    _episode(tmp_path, source="agent", success=False, seed=2)
    ds = to_hf_dataset(iter_samples(tmp_path))
    assert len(ds) == 6
    for column in (
        "prompt",
        "completion",
        "teacher_prompt",
        "target",
        "demonstration",
        "reward",
        "success",
        "source",
        "task",
        "episode_id",
        "step",
        "prompt_version",
    ):
        assert column in ds.column_names, column
    row = ds[0]
    assert row["prompt"][0]["role"] == "system" and row["completion"] == [
        {"role": "assistant", "content": row["target"]}
    ]
    assert sorted(set(ds["success"])) == [False, True]
    assert len(ds.filter(lambda r: r["source"] == "human")) == 3
    with pytest.raises(ValueError, match="no samples"):
        to_hf_dataset(iter_samples(tmp_path, tasks=["none"]))


def test_no_samples_says_whether_there_were_no_episodes_or_the_filters_kept_none(tmp_path):
    """An empty dir and a misspelt ``learner.tasks`` used to get the same "no
    samples ... with the given filters"; the message now tells them apart, and
    what the filters were shown is enough to see the misspelling."""
    from learners.config import SFTConfig
    from learners.samples import check_episodes
    from learners.samples import load_samples as loaded

    def load_samples(cfg, backend):  # check_episodes, before a model, says the same
        with pytest.raises(ValueError) as checked:
            check_episodes(cfg)
        with pytest.raises(ValueError) as refused:
            loaded(cfg, backend)
        assert str(checked.value) == str(refused.value)
        raise refused.value

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        ValueError, match=rf"no samples: no episodes under learner\.episodes=\['{empty}'\]"
    ):
        load_samples(SFTConfig(episodes=[str(empty)]), None)

    runs = tmp_path / "runs"
    _episode(runs, task="form", seed=1)
    _episode(runs, task="form", success=False, seed=2)
    _episode(runs, task="other", source="human", seed=3)
    with pytest.raises(ValueError) as refused:
        load_samples(SFTConfig(episodes=[str(runs)], tasks=["from"]), None)
    message = str(refused.value)
    assert f"3 complete episodes under learner.episodes=['{runs}']" in message
    assert "none kept by learner.tasks=['from'], learner.success_only=true" in message
    assert "tasks seen: form (2), other (1)" in message
    assert "sources seen: agent (2), human (1)" in message and "successful: 2" in message
    with pytest.raises(ValueError, match=r"learner\.sources=\['scripted'\], learner\.success_only"):
        load_samples(SFTConfig(episodes=[str(runs)], tasks=["form"], sources=["scripted"]), None)

    invalid = tmp_path / "invalid"  # kept, but its one action was invalid JSON
    writer = EpisodeWriter(invalid, EpisodeMeta(env_id="browser_env/form-v0", task="form", seed=0))
    writer.write_step(_obs(0), None, 1.0, True, False, {"success": True}, action_input="garbage")
    writer.close()
    check_episodes(SFTConfig(episodes=[str(invalid)]))  # needs the tokenizer to tell
    with pytest.raises(ValueError, match=r"keep 1 episode under .*none has a step to imitate"):
        loaded(SFTConfig(episodes=[str(invalid)]), None)
