"""Fuzzing ``env.step``: whatever a policy emits, no exception escapes the env.

Actions come from hypothesis (well-formed actions with junk values, and junk
that is not an action at all) and from a corpus of known troublemakers: huge
values, control characters, odd Unicode, wrong types, nested junk. Every step
must return a valid observation; an action the env cannot run is reported in
``last_action_error``. The fast tier fuzzes a few hundred actions; the
exhaustive tier 10,000 (``make test-all``).
"""

from __future__ import annotations

import json
import math
import os

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import browser_env  # noqa: F401 - registers the ids
from browser_env.actions import ActionError, Verb, coerce_action

pytestmark = pytest.mark.browser

TASKS = ("enter-text", "click-checkboxes")
VERBS = [v.value for v in Verb]

CORPUS = [
    {"action": "TYPE", "element_id": "e1", "value": "x" * 100_000},
    {"action": "TYPE", "element_id": "e2", "value": "\x00\x01\x1b[31m\x7f\ud7ff\t\r\n"},
    {"action": "TYPE", "value": "\u202e\u200b\ufeff\U0001f600\U0001f9d1\u200d\U0001f680 ﷽ 𝔘𝔫𝔦"},
    {"action": "TYPE", "element_id": "e3", "value": "Ａ" * 999 + "\u0301"},
    {"action": "WAIT", "value": "1e308"},
    {"action": "WAIT", "value": "nan"},
    {"action": "WAIT", "value": "-0"},
    {"action": "WAIT", "value": 10**400},
    {"action": "NAVIGATE", "value": "file:///etc/passwd"},
    {"action": "NAVIGATE", "value": "javascript:while(1){}"},
    {"action": "NAVIGATE", "value": "data:text/html,<script>while(1){}</script>"},
    {"action": "NAVIGATE", "value": "http://192.0.2.1/" + "a" * 10_000},
    {"action": "NAVIGATE", "value": "chrome://crash"},
    {"action": "CLICK", "element_id": "e" + "9" * 400},
    {"action": "CLICK", "element_id": ["e1"]},
    {"action": "CLICK", "element_id": {"id": "e1"}},
    {"action": "SCROLL", "value": "sideways"},
    {"action": "PRESS_ENTER", "element_id": "e1", "reasoning": {"deep": [[[[[]]]]]}},
    {"action": "FINISH", "value": "\x00" * 1000},
    {"action": None},
    {"action": 7},
    {"action": "CLICK", "value": float("nan")},
    {"action": "TYPE", "element_id": "e1", "value": True},
    {"action": "TYPE", "element_id": "e1", "value": b"bytes"},
    {"": "", "action": "WAIT"},
    {},
    [],
    [{"action": "CLICK", "element_id": "e1"}],
    "",
    "null",
    "[" * 10_000,
    '{"action": "CLICK", "element_id": "e1"' + "}" * 1000,
    b"\xff\xfe",
    b'{"action": "WAIT", "value": "0"}',
    None,
    0,
    -1.5,
    math.inf,
    object(),
    {"action": "CLICK", "element_id": "e1", "extra": {"a": [1, {"b": [None, object()]}]}},
    json.dumps({"action": "TYPE", "element_id": "e1", "value": "é" * 2000}),
]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=200),
    st.binary(max_size=50),
)
_junk = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_element_ids = st.one_of(st.integers(1, 40).map(lambda n: f"e{n}"), st.text(max_size=12), _scalars)
_values = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=2000),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["up", "down", "0", "50", "http://127.0.0.1:9/", "https://example.com/"]),
    _scalars,
)
_well_formed = st.fixed_dictionaries(
    {"action": st.sampled_from(VERBS + [v.lower() for v in VERBS] + ["JUMP", ""])},
    optional={"element_id": _element_ids, "value": _values, "reasoning": _junk},
)
ACTIONS = st.one_of(
    _well_formed,
    _well_formed.map(lambda d: json.dumps(d, default=str)),
    st.sampled_from(CORPUS),
    _junk,
)


@pytest.fixture(scope="module")
def envs():
    made = {
        task: gym.make(
            f"browser_env/miniwob.{task}-v0",
            modalities=("elements", "text"),
            executor={"max_wait_ms": 20},
        )
        for task in TASKS
    }
    for seed, env in enumerate(made.values()):
        env.reset(seed=seed)
    yield made
    for env in made.values():
        env.close()


def fuzz(envs, max_examples: int) -> None:
    counter = {"steps": 0}

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(task=st.sampled_from(TASKS), action=ACTIONS)
    def one_step(task, action):
        env = envs[task]
        obs, reward, terminated, truncated, info = env.step(action)
        counter["steps"] += 1
        assert env.observation_space.contains(obs), obs.keys()
        assert isinstance(reward, float) and math.isfinite(reward)
        try:
            coerce_action(action)
        except ActionError:
            assert obs["last_action_error"] and info["action_error"] == obs["last_action_error"]
        except Exception:  # noqa: BLE001 - e.g. bytes that are not UTF-8: the env reported it
            assert obs["last_action_error"]
        # Truncation comes from the step limit only: no action may break the page or browser.
        assert "truncated_reason" not in info, info["truncated_reason"]
        if terminated or truncated:
            env.reset(seed=counter["steps"])

    one_step()
    assert counter["steps"] >= max_examples


def test_fuzzed_actions_never_escape_step(envs):
    fuzz(envs, max_examples=150)


@pytest.mark.exhaustive
@pytest.mark.slow
def test_ten_thousand_fuzzed_actions_never_escape_step(envs):
    # BROWSER_ENV_FUZZ_EXAMPLES lowers the count on a machine too busy for 10,000.
    fuzz(envs, max_examples=int(os.environ.get("BROWSER_ENV_FUZZ_EXAMPLES", "10000")))


def test_every_corpus_entry_is_survived(envs):
    env = envs["enter-text"]
    env.reset(seed=1)
    for action in CORPUS:
        obs, _, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        assert "truncated_reason" not in info, info["truncated_reason"]
        if terminated or truncated:
            env.reset(seed=2)
