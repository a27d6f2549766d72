"""browser_env: a fast, Gymnasium-compliant environment around a real Chromium browser.

``import browser_env`` registers ``browser_env/open-v0`` and one
``browser_env/miniwob.<task>-v0`` per MiniWoB++ task page (cheap: no browser
starts until the first ``reset``)::

    import gymnasium as gym
    import browser_env

    env = gym.make("browser_env/miniwob.click-button-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(
        {"action": "CLICK", "element_id": obs["elements"][0]["element_id"]}
    )
"""

from __future__ import annotations

from browser_env.actions import Action, ActionError, ActionSpace, Verb, coerce_action
from browser_env.observation import render_elements
from browser_env.registration import register_envs

__all__ = [
    "Action",
    "ActionError",
    "ActionSpace",
    "BrowserEnv",
    "Verb",
    "coerce_action",
    "register_envs",
    "render_elements",
]


def __getattr__(name: str):  # lazy: importing the env pulls in Playwright
    if name == "BrowserEnv":
        from browser_env.env import BrowserEnv

        return BrowserEnv
    raise AttributeError(f"module 'browser_env' has no attribute {name!r}")


register_envs()
