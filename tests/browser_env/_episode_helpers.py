"""A browser-free stand-in for BrowserEnv that honours the observation, action
and info contracts, for tests of the episode format, writer and wrapper."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from browser_env.actions import ActionError, ActionSpace, Verb, coerce_action
from browser_env.observation import make_element, observation_space

VIEWPORT = (64, 48)


def element(eid: str, text: str, x: float, role: str = "button", value: str = "") -> dict[str, Any]:
    return make_element(
        eid,
        "button" if role == "button" else "input",
        role,
        text,
        value=value,
        bbox=(x, 10.5, 20.0, 12.25),
        name=text,
        name_from="content" if text else "",
        input_type="" if role == "button" else "text",
    )


class FakeBrowserEnv(gymnasium.Env):
    """Goal: click e2. CLICK e2 succeeds; FINISH ends the episode unsuccessfully;
    every step moves to url http://fake/<seed>/<n>. ``max_steps`` truncates."""

    metadata = {"render_modes": []}

    def __init__(self, screenshot: bool = True, max_steps: int = 10, task: str = "fake-click"):
        modalities = ("elements", "text", "screenshot") if screenshot else ("elements", "text")
        self.observation_space = observation_space(modalities, VIEWPORT)
        self.action_space = ActionSpace()
        self.screenshot = screenshot
        self.max_steps = max_steps
        self.task = task
        self._t = 0
        self._seed = 0
        self._typed = ""

    def _obs(self, error: str = "") -> dict[str, Any]:
        obs = {
            "goal": f'Click <b>OK</b> & "win" (seed {self._seed})',
            "url": f"http://fake/{self._seed}/{self._t}",
            "elements": (
                element("e1", "Cancel", 2.0),
                element("e2", "OK <script>", 30.0),
                element("e3", "", 4.0, role="textbox", value=self._typed),
            ),
            "text": "Cancel OK",
            "last_action_error": error,
            "capped": "",
        }
        if self.screenshot:
            rng = np.random.default_rng(self._seed * 100 + self._t)
            obs["screenshot"] = rng.integers(0, 256, (VIEWPORT[1], VIEWPORT[0], 3), dtype=np.uint8)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._seed = 0 if seed is None else seed
        self._t = 0
        self._typed = ""
        info = {"task": self.task, "seed": seed, "env_id": "browser_env/fake-v0"}
        return self._obs(), info

    def step(self, action: Any):
        self._t += 1
        info: dict[str, Any] = {
            "raw_reward": 0.0,
            "success": False,
            "reason": "",
            "timings": {"action_ms": 1.5, "observation_ms": 2.5},
            "action": None,
            "action_error": "",
        }
        try:
            act = coerce_action(action)
        except ActionError as exc:
            info["action_error"] = str(exc)
            return self._obs(str(exc)), 0.0, False, self._t >= self.max_steps, info
        info["action"] = act.to_dict()
        reward, terminated = 0.0, False
        if act.action is Verb.TYPE:
            self._typed = act.value or ""
        if act.action is Verb.CLICK and act.element_id == "e2":
            reward, terminated = 1.0, True
            info.update(raw_reward=1.0, success=True, reason="success")
        elif act.action is Verb.FINISH:
            terminated = True
            info.update(reason="finish", answer=act.value)
        truncated = not terminated and self._t >= self.max_steps
        if truncated:
            info["reason"] = "max_steps"
        return self._obs(), reward, terminated, truncated, info
