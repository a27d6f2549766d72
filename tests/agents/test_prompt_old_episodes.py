"""Episodes recorded before prompt v2 (no name, type or state fields) still load
and render, and the prompt built from them says which version built it."""

from __future__ import annotations

import numpy as np

from agents.prompt import PROMPT_VERSION, build_prompt
from browser_env.episodes import AgentInfo, EpisodeMeta, EpisodeWriter, load_episode
from browser_env.observation import render_element, render_element_lines

V1_ELEMENT = {  # an element as prompt v1's episodes stored it
    "element_id": "e3",
    "tag": "input",
    "role": "textbox",
    "text": "",
    "label": "",
    "placeholder": "City",
    "value": "Paris",
    "bbox": np.zeros(4, dtype=np.float32),
    "enabled": 1,
    "visible": 1,
    "focused": 1,
    "checked": 0,
}


def test_v1_elements_render_as_before():
    assert render_element(V1_ELEMENT) == '[e3] textbox "City" value="Paris" (focused)'
    twin = {**V1_ELEMENT, "element_id": "e4", "value": ""}
    assert render_element_lines([V1_ELEMENT, twin])[1] == '[e4] textbox "City" (focused)'


def test_a_v1_episode_loads_and_prompts_with_the_current_version(tmp_path):
    meta = EpisodeMeta(
        env_id="browser_env/open-v0",
        task="open",
        seed=0,
        goal="Type a city",
        agent=AgentInfo(name="llm", prompt_version="browser-rl-prompt-v1"),
    )
    writer = EpisodeWriter(tmp_path, meta)
    obs = {"goal": "Type a city", "url": "http://x/", "elements": (V1_ELEMENT,), "text": "City"}
    action = {"action": "TYPE", "element_id": "e3", "value": "Rome"}
    info = {"action": action, "action_error": None, "success": True, "reason": "typed"}
    writer.write_step(obs, action, 1.0, True, False, info)
    episode = load_episode(writer.close(final_observation=obs))
    assert episode.meta.agent.prompt_version == "browser-rl-prompt-v1"
    prompt = build_prompt(episode.observation(0))
    assert prompt.version == PROMPT_VERSION == "browser-rl-prompt-v2"
    assert '[e3] textbox "City" value="Paris" (focused)' in prompt.text
