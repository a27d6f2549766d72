"""Training prompts equal the prompts the agent sent, byte for byte.

A real :class:`LLMAgent` plays a small env through :func:`agents.rollout.rollout`
with :class:`RecordEpisode` writing ``steps.jsonl``; the learners' datasets then
rebuild every prompt from the recorded episode with the same
:class:`PromptConfig`. The episode goes through a parse failure, a guard
correction and an env error, so the rebuilt history must carry all three.
The backend replays fixed model outputs: what is under test is the prompt
reconstruction, and these outputs are what drive the agent down every path.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium
import numpy as np
import pytest

from agents.agent import LLMAgent, PromptConfig
from agents.backends.base import Generation
from agents.rollout import rollout
from browser_env.actions import ActionError, ActionSpace, Verb, coerce_action
from browser_env.episodes import load_episode
from browser_env.observation import make_element, observation_space
from browser_env.wrappers import RecordEpisode
from learners.samples import iter_samples

OUTPUTS = [
    "I would click the OK button.",  # parse failure -> WAIT 0, error in history
    '{"action": "CLICK", "element_id": "e9"}',  # unknown element -> guard error
    '{"action": "CLICK", "element_id": "e1"}',  # the env reports an error
    '{"action": "TYPE", "element_id": "e3", "value": "hello"}',
    '{"action": "CLICK", "element_id": "e2"}',  # success
]


def _element(eid: str, text: str, role: str = "button", value: str = "") -> dict[str, Any]:
    tag = "button" if role == "button" else "input"
    return make_element(eid, tag, role, text, value=value, bbox=(4.0, 10.0, 20.0, 12.0))


class _ClickOkEnv(gymnasium.Env):
    """Goal: click e2. Clicking e1 fails with an action error; TYPE fills e3."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = observation_space(("elements", "text", "screenshot"), (32, 24))
        self.action_space = ActionSpace()
        self._t, self._typed = 0, ""

    def _obs(self, error: str = "") -> dict[str, Any]:
        rng = np.random.default_rng(self._t)
        return {
            "goal": 'Click the "OK" button.',
            "url": f"http://fake/{self._t}",
            "elements": (
                _element("e1", "Cancel"),
                _element("e2", "OK"),
                _element("e3", "", role="textbox", value=self._typed),
            ),
            "text": "Cancel OK " + "filler text " * 40,
            "last_action_error": error,
            "screenshot": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t, self._typed = 0, ""
        return self._obs(), {"task": "click-ok", "seed": seed, "env_id": "browser_env/fake-v0"}

    def step(self, action: Any):
        self._t += 1
        info: dict[str, Any] = {"success": False, "action_error": "", "action": None}
        try:
            act = coerce_action(action)
        except ActionError as exc:
            info["action_error"] = str(exc)
            return self._obs(str(exc)), 0.0, False, False, info
        info["action"] = act.to_dict()
        if act.action is Verb.TYPE:
            self._typed = act.value or ""
        if act.action is Verb.CLICK and act.element_id == "e1":
            info["action_error"] = "element e1 is covered by another element"
            return self._obs(info["action_error"]), 0.0, False, False, info
        if act.action is Verb.CLICK and act.element_id == "e2":
            info.update(success=True, reason="success")
            return self._obs(), 1.0, True, False, info
        return self._obs(), 0.0, False, self._t >= 10, info


class _ReplayBackend:
    """Replays ``OUTPUTS``; counts tokens as words (not the chars/4 default)."""

    name = "replay"

    def __init__(self, multimodal: bool) -> None:
        self.multimodal = multimodal
        self.calls = 0

    def generate(self, messages, images=None, sampling=None) -> Generation:
        text = OUTPUTS[min(self.calls, len(OUTPUTS) - 1)]
        self.calls += 1
        return Generation(text=text, token_ids=[1], logprobs=[-0.1])

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("multimodal", "prompt"),
    [
        (
            False,
            PromptConfig(
                budget_tokens=260,
                max_history=3,
                max_text_chars=120,
                rules=("Be brief.", "Never click Cancel."),
                system_role=False,
            ),
        ),
        (True, PromptConfig()),
    ],
    ids=["text-agent-custom-settings", "multimodal-agent"],
)
def test_training_prompts_equal_recorded_prompts(tmp_path, multimodal, prompt):
    backend = _ReplayBackend(multimodal)
    agent = LLMAgent(backend, prompt=prompt)
    env = RecordEpisode(_ClickOkEnv(), tmp_path, agent={"name": "llm"})
    result = rollout(env, agent, seed=0)
    env.close()
    assert result.success and result.steps == len(OUTPUTS)

    episode = load_episode(result.episode_dir)
    recorded = {r.index: r for r in episode.steps}
    samples = list(iter_samples(tmp_path, prompt=prompt, backend=backend))
    # every step but the parse failure is a sample
    assert [s.step for s in samples] == [1, 2, 3, 4]
    for sample in samples:
        record = recorded[sample.step]
        assert json.dumps(sample.messages) == json.dumps(record.prompt), f"step {sample.step}"
    seen = "\n".join(s.messages[-1]["content"] for s in samples)
    assert "no readable action" in seen  # the parse failure, as the agent saw it
    assert "e9" in seen and "ERROR" in seen  # the guard's correction
    assert "covered by another element" in seen  # the env's error
    if multimodal:
        assert "A screenshot of the page is attached." in seen
    else:
        assert "Never click Cancel." in samples[0].messages[0]["content"]  # rules, no system role
