from __future__ import annotations

import json

from agents.agent import Agent, History, LLMAgent, PromptConfig, Step
from agents.backends.base import SamplingParams
from agents.prompt import FORMAT_BLOCK, PROMPT_VERSION, build_prompt
from agents.seeding import derive_seed
from browser_env.actions import Action, Verb


def test_act_returns_action_and_full_info(make_obs, scripted_backend):
    backend = scripted_backend(['Thinking...\n{"action": "CLICK", "element_id": "e2"}'])
    agent = LLMAgent(backend)
    assert isinstance(agent, Agent)
    agent.reset("Click the OK button")
    action, info = agent.act(make_obs())
    assert action == Action.click("e2")
    assert set(info) >= {
        "prompt",
        "raw_output",
        "parse",
        "guards",
        "proposed",
        "action",
        "latency_s",
        "generation",
    }
    assert info["parse"] == {"ok": True, "method": "braces", "action": action.to_dict()}
    assert info["prompt"]["version"] == PROMPT_VERSION
    assert info["prompt"]["messages"][0]["content"] == FORMAT_BLOCK
    assert info["generation"]["logprobs"] == [-0.1, -0.2]
    json.dumps(info)  # episodes store it
    call = backend.calls[0]
    assert call["messages"] == info["prompt"]["messages"] and call["images"] is None
    assert call["sampling"] == SamplingParams()
    assert agent.history[-1].element == '[e2] button "OK"'


def test_prompt_is_the_shared_builder_with_history(make_obs, scripted_backend):
    backend = scripted_backend(
        [
            '{"action": "TYPE", "element_id": "e1", "value": "bob"}',
            '{"action": "CLICK", "element_id": "e2"}',
        ]
    )
    agent = LLMAgent(backend, prompt={"budget_tokens": 2000, "max_history": 4})
    agent.reset("Enter bob")
    agent.act(make_obs())
    obs2 = make_obs(error="")
    expected = build_prompt(
        obs2,
        list(agent.history),
        count_tokens=backend.count_tokens,
        budget_tokens=2000,
        max_history=4,
    )
    _, info = agent.act(obs2)
    assert info["prompt"]["messages"] == expected.messages
    assert (
        '1. {"action": "TYPE", "element_id": "e1", "value": "bob"} on [e1] textbox "Name" -> OK'
        in expected.text
    )


def test_env_errors_are_recorded_on_the_previous_step(make_obs, scripted_backend):
    agent = LLMAgent(
        scripted_backend(
            ['{"action": "CLICK", "element_id": "e2"}', '{"action": "CLICK", "element_id": "e1"}']
        )
    )
    agent.reset("g")
    agent.act(make_obs())
    _, info = agent.act(make_obs(error="element e2 is covered"))
    assert agent.history[0].error == "element e2 is covered"
    assert "LAST ERROR: element e2 is covered" in info["prompt"]["messages"][1]["content"]
    assert "-> ERROR: element e2 is covered" in info["prompt"]["messages"][1]["content"]


def test_parse_failures_wait_then_finish(make_obs, scripted_backend):
    agent = LLMAgent(scripted_backend(["I don't know"]), max_parse_failures=3)
    agent.reset("g")
    actions = []
    for _ in range(3):
        action, info = agent.act(make_obs())
        actions.append(action)
        assert not info["parse"]["ok"] and info["proposed"] is None
    assert actions[:2] == [Action(Verb.WAIT, value="0")] * 2
    assert actions[2].action is Verb.FINISH and "3 consecutive" in actions[2].reasoning
    assert agent.history[0].notes == ("parse_failure",)
    assert "no readable action" in agent.history[0].error
    # the model sees why: the next prompt carries the error
    _, info = agent.act(make_obs())
    assert (
        "LAST ERROR: your output had no readable action" in info["prompt"]["messages"][1]["content"]
    )


def test_parse_failure_count_resets_on_success(make_obs, scripted_backend):
    outputs = ["??", "??", '{"action": "SCROLL", "value": "down"}', "??", "??"]
    agent = LLMAgent(scripted_backend(outputs), max_parse_failures=3)
    agent.reset("g")
    verbs = [agent.act(make_obs())[0].action for _ in outputs]
    assert verbs == [Verb.WAIT, Verb.WAIT, Verb.SCROLL, Verb.WAIT, Verb.WAIT]


def test_guards_fire_and_are_reported(make_obs, scripted_backend):
    outputs = [
        '{"action": "TYPE", "element_id": "e1", "value": "bob"}',
        '{"action": "FINISH"}',
        '{"action": "CLICK", "element_id": "e42"}',
    ]
    agent = LLMAgent(scripted_backend(outputs), guards={"enter_after_failed_click": False})
    agent.reset("g")
    agent.act(make_obs())
    action, info = agent.act(make_obs())
    assert action == Action(Verb.PRESS_ENTER, "e1")
    assert [g["guard"] for g in info["guards"]] == ["submit_before_finish"]
    assert info["proposed"] == {"action": "FINISH"}
    assert agent.history[-1].proposed == Action(Verb.FINISH)
    action, info = agent.act(make_obs())
    assert action == Action(Verb.WAIT, value="0")
    assert agent.history[-1].error.startswith("element e42 is not on the page")
    # the env's WAIT ran cleanly, but the rejection stays visible to the model
    _, info = agent.act(make_obs(error=""))
    assert "LAST ERROR: element e42 is not on the page" in info["prompt"]["messages"][1]["content"]


def test_screenshot_goes_to_multimodal_backends_only(make_obs, scripted_backend):
    for multimodal, use, expected in ((True, True, 1), (False, True, 0), (True, False, 0)):
        backend = scripted_backend(['{"action": "WAIT"}'], multimodal=multimodal)
        agent = LLMAgent(backend, prompt=PromptConfig(use_screenshot=use))
        agent.reset("g")
        _, info = agent.act(make_obs(screenshot=True))
        images = backend.calls[0]["images"]
        assert len(images or []) == expected
        assert len(info["images"]) == expected  # learners train on exactly what was sent


def test_reset_clears_history_and_seeds_sampling(make_obs, scripted_backend):
    backend = scripted_backend(['{"action": "WAIT"}'])
    agent = LLMAgent(backend, sampling={"temperature": 0.7, "stop": ["\n\n"]})
    assert agent.sampling == SamplingParams(temperature=0.7, stop=("\n\n",))
    agent.reset("g")
    agent.act(make_obs())
    agent.reset("g2", seed=11)
    assert len(agent.history) == 0
    agent.act(make_obs())
    assert backend.calls[-1]["sampling"].seed == derive_seed(11, 0)
    agent.close()
    assert backend.closed


def test_each_step_of_a_seeded_episode_samples_with_its_own_seed(make_obs, scripted_backend):
    """A backend re-seeds before every generation, so one seed per episode would
    replay the same random stream at every step."""
    backend = scripted_backend(['{"action": "WAIT"}'])
    agent = LLMAgent(backend, sampling={"temperature": 1.0})
    agent.reset("g", seed=11)
    for _ in range(4):
        agent.act(make_obs())
    seeds = [c["sampling"].seed for c in backend.calls]
    assert len(set(seeds)) == 4 and seeds == [derive_seed(11, t) for t in range(4)]
    agent.reset("g", seed=11)  # the same episode seed replays the same seeds
    agent.act(make_obs())
    assert backend.calls[-1]["sampling"].seed == seeds[0]
    agent.reset("g")  # no episode seed: the configured sampling seed (None) as is
    agent.act(make_obs())
    assert backend.calls[-1]["sampling"].seed is None


def test_goal_from_reset_when_observation_has_none(make_obs, scripted_backend):
    agent = LLMAgent(scripted_backend())
    agent.reset("Buy milk")
    _, info = agent.act(make_obs(goal=""))
    assert "GOAL: Buy milk" in info["prompt"]["messages"][1]["content"]


def test_history_round_trips():
    history = History(
        [
            Step(
                Action.type("e1", "x"),
                element="[e1] textbox",
                error="e",
                proposed=Action.finish(),
                notes=("submit_before_finish",),
            )
        ]
    )
    restored = History([Step.from_dict(d) for d in json.loads(json.dumps(history.to_list()))])
    assert list(restored) == list(history)
    history.record_error("later")
    assert history[0].error == "e; later"
