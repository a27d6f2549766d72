from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.parser import ParseFailure, explain_parse, parse_action
from browser_env.actions import Action, ActionError, Verb

CASES = [
    ('{"action": "CLICK", "element_id": "e5"}', Action.click("e5"), "json"),
    ('{"action": "click", "element_id": 5}', Action.click("e5"), "json"),
    ('{"action": "CLICK", "element_id": "[e5]"}', Action.click("e5"), "json"),
    ('{"action": "CLICK", "element_id": "5"}', Action.click("e5"), "json"),
    (
        '{"action": {"action": "TYPE", "element_id": "e3", "value": "NYC"}}',
        Action.type("e3", "NYC"),
        "json",
    ),
    (
        '{"action": {"action": "CLICK", "element_id": "e2"}, "reasoning": "OK submits"}',
        Action(Verb.CLICK, "e2", reasoning="OK submits"),
        "json",
    ),
    ('```json\n{"action": "PRESS_ENTER"}\n```', Action(Verb.PRESS_ENTER), "fence"),
    (
        'Sure.\n```json\n{"action": "press enter", "element_id": "e4"}\n```\nDone',
        Action(Verb.PRESS_ENTER, "e4"),
        "fence",
    ),
    (
        'I will type now: {"action": "TYPE", "element_id": "e3", "value": "a {b} c"} then stop',
        Action.type("e3", "a {b} c"),
        "braces",
    ),
    ('{"type": "scroll", "direction": "up"}', Action(Verb.SCROLL, value="up"), "json"),
    ("{'action': 'WAIT', 'value': 200,}", Action(Verb.WAIT, value="200"), "json"),
    ('[{"action": "FINISH", "answer": "42"}]', Action.finish("42"), "json"),
    ('{"bad": 1} and then {"action": "CLICK", "element_id": "e7"}', Action.click("e7"), "braces"),
    (
        '{"id": "chatcmpl-1", "action": {"action": "FINISH", "value": "ok"}}',
        Action.finish("ok"),
        "json",
    ),
    ('{"action": "FINISH", "element_id": "e3", "value": "7"}', Action.finish("7"), "json"),
    ("CLICK e5", Action.click("e5"), "verb_line"),
    ("CLICK [e5]", Action.click("e5"), "verb_line"),
    ("Thought: the button is e5.\nAction: CLICK e5", Action.click("e5"), "verb_line"),
    ('TYPE e3 "hello world"', Action.type("e3", "hello world"), "verb_line"),
    ("TYPE e3 hello world", Action.type("e3", "hello world"), "verb_line"),
    ('type(e3, "hi")', Action.type("e3", "hi"), "verb_line"),
    ("click(e12)", Action.click("e12"), "verb_line"),
    ("- PRESS_ENTER", Action(Verb.PRESS_ENTER), "verb_line"),
    ("SCROLL down", Action(Verb.SCROLL, value="down"), "verb_line"),
    ("WAIT 500", Action(Verb.WAIT, value="500"), "verb_line"),
    (
        "NAVIGATE https://example.com/a?b=1",
        Action(Verb.NAVIGATE, value="https://example.com/a?b=1"),
        "verb_line",
    ),
    ("FINISH Paris", Action.finish("Paris"), "verb_line"),
    ('finish("Paris")', Action.finish("Paris"), "verb_line"),
    ("The task is complete.", Action.finish(""), "done_language"),
    ("I am done.", Action.finish(""), "done_language"),
    ("I have completed the task", Action.finish(""), "done_language"),
]


@pytest.mark.parametrize(("text", "expected", "method"), CASES)
def test_parses(text, expected, method):
    outcome = explain_parse(text)
    assert outcome.result == expected
    assert outcome.method == method
    assert outcome.ok and outcome.to_dict()["action"] == expected.to_dict()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "hmm, not sure",
        "Click the button",  # prose, not an action
        "Type your name in the box",
        "Is the task complete?",
        "The task is not complete yet",
        '{"action": "CLICK"}',  # CLICK without an element
        '{"action": "JUMP", "element_id": "e1"}',
        '{"action": "CLICK", "element_id": "button"}',
        "WAIT for the page",
        "{{{{",
    ],
)
def test_failures_are_typed(text):
    result = parse_action(text)
    assert isinstance(result, ParseFailure)
    assert result.reason and not result


def test_failure_reason_names_the_json_problem():
    result = parse_action('{"action": "CLICK"}')
    assert "element_id" in result.reason
    assert explain_parse('{"action": "CLICK"}').to_dict() == {
        "ok": False,
        "method": "failed",
        "error": result.reason,
    }


@pytest.mark.parametrize("value", [None, 42, b'{"action": "WAIT"}', ["CLICK e1"]])
def test_non_text_input(value):
    result = parse_action(value)
    if isinstance(value, bytes):
        assert result == Action(Verb.WAIT)
    else:
        assert isinstance(result, ParseFailure)


def test_first_valid_json_object_wins():
    text = '{"action": "CLICK", "element_id": "e1"} {"action": "CLICK", "element_id": "e2"}'
    assert parse_action(text) == Action.click("e1")


def test_deep_nesting_does_not_raise():
    assert isinstance(parse_action("[" * 5000 + "]" * 5000), ParseFailure)
    assert isinstance(parse_action('{"a": ' * 3000 + "1" + "}" * 3000), ParseFailure)


# --- properties ---------------------------------------------------------------

element_ids = st.integers(1, 10_000).map(lambda i: f"e{i}")
texts = st.text(min_size=1, max_size=40)


@st.composite
def actions(draw):
    verb = draw(st.sampled_from(list(Verb)))
    reasoning = draw(st.none() | st.text(max_size=40))
    if verb is Verb.CLICK:
        return Action(verb, draw(element_ids), reasoning=reasoning)
    if verb is Verb.TYPE:
        return Action(verb, draw(st.none() | element_ids), draw(texts), reasoning)
    if verb is Verb.PRESS_ENTER:
        return Action(verb, draw(st.none() | element_ids), reasoning=reasoning)
    if verb is Verb.SCROLL:
        return Action(
            verb, draw(st.none() | element_ids), draw(st.sampled_from(["up", "down"])), reasoning
        )
    if verb is Verb.WAIT:
        return Action(verb, None, draw(st.none() | st.integers(0, 10_000).map(str)), reasoning)
    if verb is Verb.NAVIGATE:
        host = draw(st.from_regex(r"[a-z]{1,10}\.(com|org)", fullmatch=True))
        return Action(verb, None, f"https://{host}/", reasoning)
    return Action(verb, None, draw(st.none() | st.text(max_size=40)), reasoning)


@settings(max_examples=300, deadline=None)
@given(actions())
def test_round_trip(action):
    assert parse_action(action.to_json()) == action


@settings(max_examples=200, deadline=None)
@given(actions(), st.text(max_size=60), st.text(max_size=60))
def test_round_trip_inside_prose_and_fences(action, before, after):
    # Surrounding text may itself hold braces; only check texts without them.
    before, after = (
        before.replace("{", "").replace("}", ""),
        after.replace("{", "").replace("}", ""),
    )
    fenced = f"{before}\n```json\n{action.to_json()}\n```\n{after}"
    assert parse_action(fenced) == action
    nested = json.dumps({"action": action.to_dict()})
    assert parse_action(nested) == action


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["action", "element_id", "value", "type", "id", "text", "reasoning", "x"]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_text(text):
    result = parse_action(text)
    assert isinstance(result, Action | ParseFailure)


@settings(max_examples=300, deadline=None)
@given(json_values, st.text(max_size=30))
def test_never_raises_on_json_like_text(value, noise):
    text = noise + json.dumps(value) + noise
    result = parse_action(text)
    assert isinstance(result, Action | ParseFailure)
    if isinstance(result, Action):  # whatever it returns is a valid action
        assert Action.from_json(result.to_json()) == result


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "CLICK",
                "type",
                "TYPE",
                "e5",
                "[e3]",
                '"',
                "'",
                "{",
                "}",
                "(",
                ")",
                "```",
                "json",
                "\n",
                " ",
                ",",
                "FINISH",
                "WAIT",
                "500",
                "NAVIGATE",
                "https://x.io",
                "done",
                "task complete",
                "action:",
                ":",
            ]
        ),
        max_size=25,
    )
)
def test_never_raises_on_action_shaped_noise(tokens):
    result = parse_action("".join(tokens))
    assert isinstance(result, Action | ParseFailure)


def test_invalid_action_error_is_not_raised():
    with pytest.raises(ActionError):
        Action(Verb.CLICK)  # the schema raises ...
    assert isinstance(parse_action('{"action": "CLICK"}'), ParseFailure)  # ... the parser does not
