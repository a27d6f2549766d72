"""The scripted experts: dispatch and labelling offline, then each listed task
solved in a real browser (2 seeds fast, 50 seeds for the >= 95% claim)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import browser_env  # noqa: F401 - registers the env ids
from agents.agent import Agent
from agents.experts import SUPPORTED_TASKS, ScriptedExpert, UnsupportedTaskError
from agents.experts.base import quoted, task_from_url
from browser_env.actions import Verb
from browser_env.registration import env_id

SUITE = Path(__file__).resolve().parents[2] / "conf" / "suite" / "miniwob_expert.yaml"
MAX_STEPS = yaml.safe_load(SUITE.read_text())["max_episode_steps"]


@pytest.fixture
def miniwob_obs(make_obs):
    def build(task: str, goal: str, elements, text: str = ""):
        obs = make_obs(goal=goal, elements=elements, text=text)
        obs["url"] = f"http://127.0.0.1:8000/miniwob/{task}.html"
        return obs

    return build


def test_task_is_read_from_the_url():
    assert task_from_url("http://127.0.0.1:1/miniwob/click-button.html?x=1") == "click-button"
    assert task_from_url("http://example.com/") == ""
    assert quoted('Enter "a b" and "c"') == ["a b", "c"]


def test_suite_lists_exactly_the_supported_tasks():
    assert sorted(yaml.safe_load(SUITE.read_text())["tasks"]) == list(SUPPORTED_TASKS)
    assert len(SUPPORTED_TASKS) >= 20


def test_action_and_info_are_labelled_scripted(miniwob_obs, make_element):
    agent = ScriptedExpert()
    assert isinstance(agent, Agent) and agent.name == "expert"
    agent.reset('Click on the "okay" button.')
    obs = miniwob_obs(
        "click-button",
        'Click on the "okay" button.',
        [make_element("e1", "button", "no"), make_element("e2", "button", "okay")],
    )
    action, info = agent.act(obs)
    assert action.action is Verb.CLICK and action.element_id == "e2"
    assert info["agent"] == "expert" and info["scripted"] is True
    assert info["task"] == "click-button"
    assert '"okay"' in info["rationale"] and "e2" in info["rationale"]
    assert action.reasoning == info["rationale"]
    json.dumps(info)


def test_form_policy_reads_progress_off_the_page(miniwob_obs, make_element):
    agent = ScriptedExpert()
    goal = 'Enter "Ann" into the text field and press Submit.'
    agent.reset(goal)
    empty = miniwob_obs(
        "enter-text", goal, [make_element("e1", "textbox"), make_element("e2", "button", "Submit")]
    )
    action, _ = agent.act(empty)
    assert (action.action, action.element_id, action.value) == (Verb.TYPE, "e1", "Ann")
    filled = miniwob_obs(
        "enter-text",
        goal,
        [make_element("e1", "textbox", value="Ann"), make_element("e2", "button", "Submit")],
    )
    action, _ = agent.act(filled)
    assert (action.action, action.element_id) == (Verb.CLICK, "e2")


@pytest.mark.parametrize(("label", "expected"), [("x", "e2"), ("OK", "e4"), ("Cancel", "e3")])
def test_dialog_policy_maps_the_x_to_the_close_button(miniwob_obs, make_element, label, expected):
    agent = ScriptedExpert()
    goal = f'Click the button in the dialog box labeled "{label}".'
    agent.reset(goal)
    elements = [
        make_element("e1", "dialog", "Close Lorem ipsum. Cancel OK", tag="div"),
        make_element("e2", "button", "Close", label="Close"),
        make_element("e3", "button", "Cancel"),
        make_element("e4", "button", "OK"),
    ]
    action, info = agent.act(miniwob_obs("click-dialog-2", goal, elements))
    assert (action.action, action.element_id) == (Verb.CLICK, expected)
    assert f'"{label}"' in info["rationale"]


def test_date_policy_reads_the_iso_value_back(miniwob_obs, make_element):
    agent = ScriptedExpert()
    goal = "Enter 05/20/2010 as the date and hit submit."
    agent.reset(goal)

    def page(value: str):
        return miniwob_obs(
            "enter-date",
            goal,
            [make_element("e1", "textbox", value=value), make_element("e2", "button", "Submit")],
        )

    action, _ = agent.act(page(""))
    assert (action.action, action.element_id, action.value) == (Verb.TYPE, "e1", "05/20/2010")
    action, _ = agent.act(page("2010-05-20"))
    assert (action.action, action.element_id) == (Verb.CLICK, "e2")


def test_unknown_task_names_the_supported_ones(miniwob_obs):
    agent = ScriptedExpert()
    agent.reset("Draw a circle.")
    with pytest.raises(UnsupportedTaskError, match="click-button"):
        agent.act(miniwob_obs("draw-circle", "Draw a circle.", []))
    with pytest.raises(UnsupportedTaskError):
        ScriptedExpert(task="draw-circle")


def test_a_page_it_does_not_understand_ends_the_episode_with_the_reason(miniwob_obs, make_element):
    agent = ScriptedExpert()
    agent.reset('Click on the "okay" button.')
    action, info = agent.act(
        miniwob_obs(
            "click-button", 'Click on the "okay" button.', [make_element("e1", "button", "no")]
        )
    )
    assert action.action is Verb.FINISH and "cannot handle" in info["error"]


@pytest.fixture(scope="module")
def shared_browser():
    """One Chromium for the module's envs, a context each (a launch per task
    cost ~1-2 s of the sweep; a context of a shared browser plays as its own)."""
    from browser_env.vector import SharedBrowser

    browser = SharedBrowser()
    yield browser
    browser.close()


def success_rate(task: str, seeds: range, browser=None) -> tuple[float, list[int]]:
    env = gym.make(
        env_id(task),
        modalities=("elements", "text"),
        max_episode_steps=MAX_STEPS,
        browser=browser,
    )
    agent = ScriptedExpert()
    failed = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            agent.reset(obs["goal"], seed=seed)
            done, info = False, {}
            while not done:
                action, _ = agent.act(obs)
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
            if not info.get("success"):
                failed.append(seed)
    finally:
        env.close()
    return 1 - len(failed) / len(seeds), failed


@pytest.mark.browser
@pytest.mark.parametrize("task", SUPPORTED_TASKS)
def test_expert_solves_a_few_seeds(task, shared_browser):
    """One seed each here (~1 s a task); 50 each: the exhaustive sweep below."""
    rate, failed = success_rate(task, range(1), shared_browser)
    assert rate == 1.0, f"{task} failed seeds {failed}"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.exhaustive
@pytest.mark.parametrize("task", SUPPORTED_TASKS)
def test_expert_reaches_95_percent_over_50_seeds(task, shared_browser):
    rate, failed = success_rate(task, range(50), shared_browser)
    assert rate >= 0.95, f"{task}: {rate:.0%}, failed seeds {failed}"
