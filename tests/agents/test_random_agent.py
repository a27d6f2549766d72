from __future__ import annotations

import pytest

from agents.agent import Agent
from agents.random_agent import RandomAgent
from browser_env.actions import ActionSpace, Verb


def test_actions_are_valid_and_use_present_elements(make_obs, make_element):
    obs = make_obs(
        elements=[
            make_element("e3", "textbox"),
            make_element("e8", "button", "OK"),
            make_element("e9", "button", "Hidden", visible=0),
        ]
    )
    agent = RandomAgent(seed=1)
    assert isinstance(agent, Agent)
    agent.reset("goal")
    space = ActionSpace()
    verbs = set()
    for _ in range(300):
        action, info = agent.act(obs)
        assert space.contains(action) and info == {"agent": "random"}
        verbs.add(action.action)
        if action.action in (Verb.CLICK, Verb.TYPE):
            assert action.element_id in {"e3", "e8"}
        if action.action is Verb.TYPE:
            assert action.element_id == "e3"
    assert Verb.NAVIGATE not in verbs and {Verb.CLICK, Verb.TYPE, Verb.PRESS_ENTER} <= verbs


def test_seeded(make_obs):
    obs = make_obs()
    a, b = RandomAgent(seed=7), RandomAgent(seed=7)
    assert [a.act(obs)[0] for _ in range(20)] == [b.act(obs)[0] for _ in range(20)]
    a.reset("g", seed=3)
    b.reset("g", seed=3)
    assert [a.act(obs)[0] for _ in range(20)] == [b.act(obs)[0] for _ in range(20)]


def test_without_elements_and_with_weights():
    agent = RandomAgent(
        seed=0,
        weights={
            "CLICK": 0,
            "TYPE": 0,
            "PRESS_ENTER": 0,
            "SCROLL": 0,
            "WAIT": 0,
            "FINISH": 0,
            "NAVIGATE": 1,
        },
    )
    action, _ = agent.act({"goal": "g"})
    assert action.action is Verb.NAVIGATE
    clicker = RandomAgent(
        seed=0, weights={v.value: 0 for v in Verb} | {"CLICK": 1}, max_element_id=3
    )
    assert {clicker.act({})[0].element_id for _ in range(50)} <= {"e1", "e2", "e3"}


@pytest.mark.parametrize("weights", [{"JUMP": 1}, {"CLICK": -1}, {v.value: 0 for v in Verb}])
def test_bad_weights(weights):
    with pytest.raises(ValueError):
        RandomAgent(weights=weights)


def test_urls_as_one_string_are_refused():
    """``+agent.urls=http://x/`` arrives as a string: each letter became a URL."""
    with pytest.raises(ValueError, match="urls must be a list of URLs, not the string 'http://x/'"):
        RandomAgent(urls="http://x/")
    assert RandomAgent(urls=["http://x/"]).urls == ("http://x/",)
