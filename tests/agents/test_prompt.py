from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.agent import Step
from agents.prompt import (
    DEMO_BEGIN,
    DEMO_END,
    FORMAT_BLOCK,
    PROMPT_VERSION,
    approx_tokens,
    build_prompt,
)
from browser_env.actions import Action, Verb

SECTIONS = ("GOAL:", "RULES:", "LAST ERROR:", "HISTORY", "ELEMENTS:", "PAGE TEXT")


def many_elements(make_element, n):
    return [make_element(f"e{i}", "link", f"link number {i}") for i in range(1, n + 1)]


def test_sections_in_order_and_format_first(make_obs):
    history = [Step(Action.type("e1", "bob")), Step(Action.click("e9"), error="no such element")]
    prompt = build_prompt(make_obs(error="element e9 not found"), history)
    assert prompt.messages[0] == {"role": "system", "content": FORMAT_BLOCK}
    user = prompt.messages[1]["content"]
    positions = [user.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert prompt.text.startswith(FORMAT_BLOCK)
    assert prompt.version == PROMPT_VERSION
    assert prompt.images == ()


def test_history_lines_show_outcome(make_obs):
    history = [
        Step(Action.type("e1", "bob"), element='[e1] textbox "Name"'),
        Step(Action(Verb.CLICK, "e9", reasoning="secret"), error="no such element"),
    ]
    user = build_prompt(make_obs(), history).messages[1]["content"]
    assert (
        '1. {"action": "TYPE", "element_id": "e1", "value": "bob"} on [e1] textbox "Name" -> OK'
        in user
    )
    assert '2. {"action": "CLICK", "element_id": "e9"} -> ERROR: no such element' in user
    assert "secret" not in user
    # the last step's error is shown even when the env reported none (a guard's rejection)
    assert "LAST ERROR: no such element" in user


def test_max_history_keeps_latest_and_says_how_many_are_hidden(make_obs):
    history = [Step(Action(Verb.WAIT, value=str(i))) for i in range(12)]
    user = build_prompt(make_obs(), history, max_history=3).messages[1]["content"]
    assert "(9 earlier steps not shown)" in user
    assert '9. {"action": "WAIT", "value": "8"}' not in user
    assert '10. {"action": "WAIT", "value": "9"}' in user
    assert '12. {"action": "WAIT", "value": "11"}' in user


def test_page_text_is_cut_before_elements(make_obs, make_element):
    obs = make_obs(elements=many_elements(make_element, 10), text="word " * 5000)
    full = build_prompt(obs, budget_tokens=100_000, max_text_chars=30_000)
    assert not full.truncation["over_budget"] and full.truncation["text_chars_cut"] == 0
    capped = build_prompt(obs, budget_tokens=100_000)  # max_text_chars caps before counting
    assert capped.truncation["text_chars_cut"] == 25_000 - 8000
    prompt = build_prompt(obs, budget_tokens=800, max_text_chars=30_000)
    assert approx_tokens(prompt.text) <= 800
    assert prompt.truncation["elements_cut"] == 0
    assert 0 < prompt.truncation["text_chars_cut"] < 25_000
    assert "more characters not shown" in prompt.text
    assert "[e10] link" in prompt.text


def test_elements_cut_from_the_end_after_page_text(make_obs, make_element):
    obs = make_obs(elements=many_elements(make_element, 300), text="word " * 5000)
    prompt = build_prompt(obs, budget_tokens=1000)
    assert approx_tokens(prompt.text) <= 1000
    assert prompt.truncation["text_chars_cut"] == 25_000
    cut = prompt.truncation["elements_cut"]
    assert 0 < cut < 300
    assert f"... ({cut} more elements not shown)" in prompt.text
    assert "[e1] link" in prompt.text and "[e300] link" not in prompt.text
    assert "PAGE TEXT: (25000 characters not shown)" in prompt.text


def test_format_block_is_never_cut(make_obs, make_element):
    obs = make_obs(goal="g " * 2000, elements=many_elements(make_element, 50), text="x" * 9000)
    prompt = build_prompt(obs, budget_tokens=10)
    assert prompt.messages[0]["content"] == FORMAT_BLOCK
    assert prompt.truncation["over_budget"]
    roomy = build_prompt(obs, budget_tokens=approx_tokens(FORMAT_BLOCK) + 200)
    assert not roomy.truncation["over_budget"]
    assert roomy.truncation["goal_cut"]
    assert roomy.messages[0]["content"] == FORMAT_BLOCK


def test_uses_the_given_token_counter(make_obs):
    calls = []

    def words(text):
        calls.append(text)
        return len(text.split())

    obs = make_obs(text="alpha beta " * 2000)
    prompt = build_prompt(obs, count_tokens=words, budget_tokens=600)
    assert calls and words(prompt.text) <= 600
    assert prompt.truncation["tokens"] == words(prompt.text)


def test_each_text_is_counted_once(make_obs):
    """Counting runs a tokenizer on the whole prompt: a prompt that fits is
    measured once, and a cut prompt never measures one candidate twice."""
    calls = []

    def words(text):
        calls.append(text)
        return len(text.split())

    build_prompt(make_obs(), count_tokens=words, budget_tokens=100_000)
    assert len(calls) == 1
    calls.clear()
    build_prompt(make_obs(text="alpha beta " * 2000), count_tokens=words, budget_tokens=600)
    assert len(calls) == len(set(calls)) > 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    budget=st.integers(1, 3000),
    n_elements=st.integers(0, 80),
    text_len=st.integers(0, 20_000),
    goal_len=st.integers(0, 3000),
    n_steps=st.integers(0, 20),
)
def test_budget_property(make_obs, make_element, budget, n_elements, text_len, goal_len, n_steps):
    element = make_element
    obs = make_obs(
        goal="a" * goal_len,
        elements=[element(f"e{i}", "link", "t" * (i % 30)) for i in range(1, n_elements + 1)],
        text="w" * text_len,
    )
    history = [Step(Action.click(f"e{i + 1}")) for i in range(n_steps)]
    prompt = build_prompt(obs, history, budget_tokens=budget)
    assert prompt.messages[0]["content"] == FORMAT_BLOCK
    tokens = approx_tokens(prompt.text)
    assert prompt.truncation["tokens"] == tokens
    if prompt.truncation["over_budget"]:
        assert budget < approx_tokens(FORMAT_BLOCK) + 200
    else:
        assert tokens <= budget


def test_teacher_differs_from_student_only_by_demonstration(make_obs, make_element):
    obs = make_obs(elements=many_elements(make_element, 100), text="word " * 4000)
    history = [Step(Action.type("e1", "bob"))]
    demo = '{"action": "CLICK", "element_id": "e2"}\nThe OK button submits the form.'
    for budget in (100_000, 900):
        student = build_prompt(obs, history, budget_tokens=budget)
        teacher = build_prompt(obs, history, budget_tokens=budget, demonstration=demo)
        section = f"\n\n{DEMO_BEGIN}\n{demo}\n{DEMO_END}"
        assert teacher.messages[-1]["content"].endswith(section)
        assert teacher.text.replace(section, "") == student.text
        assert teacher.messages[:-1] == student.messages[:-1]
        assert teacher.truncation == student.truncation


def test_screenshot_only_for_multimodal(make_obs):
    obs = make_obs(screenshot=True)
    assert build_prompt(obs).images == ()
    prompt = build_prompt(obs, multimodal=True)
    assert len(prompt.images) == 1 and prompt.images[0].shape == (8, 8, 3)
    assert "screenshot" in prompt.text
    assert build_prompt(make_obs(), multimodal=True).images == ()


def test_without_system_role_and_custom_rules(make_obs):
    prompt = build_prompt(make_obs(), system_role=False, rules=["Be brief."])
    assert len(prompt.messages) == 1 and prompt.messages[0]["role"] == "user"
    assert prompt.text.startswith(FORMAT_BLOCK)
    assert "RULES:\n- Be brief." in prompt.text


def test_goal_override_missing_keys_and_to_dict():
    prompt = build_prompt({}, goal="Find the price")
    assert "GOAL: Find the price" in prompt.text
    assert "ELEMENTS:\n(none)" in prompt.text
    record = prompt.to_dict()
    assert record["version"] == PROMPT_VERSION and record["n_images"] == 0
    assert record["messages"] == prompt.messages


def test_rejects_nonpositive_budget(make_obs):
    with pytest.raises(ValueError):
        build_prompt(make_obs(), budget_tokens=0)
