from __future__ import annotations

import json

import pytest

from browser_env.actions import Action, ActionError, ActionSpace, Verb, coerce_action


def test_canonical_json_round_trip():
    action = Action(Verb.TYPE, "e7", "NYC")
    assert json.loads(action.to_json()) == {"action": "TYPE", "element_id": "e7", "value": "NYC"}
    assert Action.from_json(action.to_json()) == action


def test_verbs_are_case_insensitive_and_numbers_become_strings():
    assert Action.from_dict({"action": "wait", "value": 250}) == Action(Verb.WAIT, None, "250")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"element_id": "e1"}, '"action" key'),
        ({"action": "JUMP"}, "unknown action"),
        ({"action": "CLICK"}, "CLICK needs"),
        ({"action": "CLICK", "element_id": "button3"}, "not of the form"),
        ({"action": "TYPE", "element_id": "e1", "value": ""}, "non-empty"),
        ({"action": "TYPE", "element_id": "e1"}, "non-empty"),
        ({"action": "SCROLL", "value": "left"}, "SCROLL value"),
        ({"action": "WAIT", "value": "soon"}, "milliseconds"),
        ({"action": "WAIT", "value": "-5"}, "non-negative"),
        ({"action": "NAVIGATE", "value": "www.example.com"}, "absolute URL"),
        ({"action": "NAVIGATE", "value": "https:///no-host"}, "absolute URL"),
        ({"action": "FINISH", "element_id": "e1"}, "takes no"),
        ({"action": "CLICK", "element_id": "e1", "x": 3}, "unknown key"),
        ({"action": "TYPE", "element_id": "e1", "value": ["a"]}, "string or a number"),
        (42, "an Action, a dict or a JSON string"),
    ],
)
def test_bad_actions_raise_a_clear_error(raw, message):
    with pytest.raises(ActionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        coerce_action(raw)


def test_action_is_frozen():
    action = Action.click("e1")
    with pytest.raises(AttributeError):
        action.element_id = "e2"  # type: ignore[misc]


def test_space_samples_are_valid_and_seeded():
    space = ActionSpace(seed=3)
    first = [space.sample() for _ in range(200)]
    assert all(space.contains(a) for a in first)
    assert {a.action for a in first} == set(Verb)
    space.seed(3)
    assert [space.sample() for _ in range(200)] == first


def test_space_contains_accepts_dicts_and_json_and_rejects_junk():
    space = ActionSpace()
    assert space.contains({"action": "PRESS_ENTER"})
    assert space.contains('{"action": "FINISH", "value": "42"}')
    assert not space.contains({"action": "CLICK"})
    assert not space.contains(None)


@pytest.mark.parametrize("url", ["http://[::1", "https://[not-an-ip]/"])
def test_an_unparsable_navigate_url_is_an_action_error_not_a_crash(url):
    # urlparse raises a bare ValueError for these; the space must answer False
    # and the env must report a bad action, not a browser error.
    with pytest.raises(ActionError, match="valid URL"):
        coerce_action({"action": "NAVIGATE", "value": url})
    assert not ActionSpace().contains({"action": "NAVIGATE", "value": url})


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",  # not UTF-8
        "[" * 100_000,  # nested past the recursion limit
        '{"action": "WAIT", "value": ' + "9" * 5_000 + "}",  # an int too long for str()
        {"action": "TYPE", "element_id": "e1", "value": 10**5_000},
    ],
)
def test_unreadable_junk_is_an_action_error_and_not_in_the_space(raw):
    # found by fuzzing the env: these raised UnicodeDecodeError, RecursionError or
    # ValueError out of coerce_action and ActionSpace.contains
    with pytest.raises(ActionError, match="could not be read"):
        coerce_action(raw)
    assert ActionSpace().contains(raw) is False


def _deeply_nested(depth: int) -> list:
    outer = inner = []
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


@pytest.mark.parametrize(
    ("read", "raw"),
    [
        (Action.from_json, "[" * 100_000),  # RecursionError from json.loads
        (Action.from_json, '{"action": "WAIT", "value": ' + "9" * 5_000 + "}"),  # ValueError
        (Action.from_json, b"\xff\xfe\x00"),  # json.loads takes bytes: UnicodeDecodeError
        (Action.from_json, None),
        (Action.from_json, 7),
        (Action.from_dict, {"action": "WAIT", "value": 10**5_000}),  # str() refuses the int
        (Action.from_dict, {"action": "CLICK", "element_id": 10**5_000}),
        (Action.from_dict, {"action": "FINISH", "reasoning": 10**5_000}),
        (Action.from_dict, {"action": "FINISH", "reasoning": _deeply_nested(100_000)}),
        (Action.from_dict, {"action": "CLICK", 1: 2, "x": 3}),  # keys that do not sort
        (Action.from_dict, None),
        (Action.from_dict, ["CLICK"]),
    ],
)
def test_the_classmethod_readers_raise_only_action_error(read, raw):
    # from_json/from_dict are documented entry points of their own, not only
    # coerce_action's helpers: junk must not escape them as another error
    with pytest.raises(ActionError):
        read(raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"action": "TYPE", "element_id": "e1", "value": "ab\ud800cd"},
        {"action": "FINISH", "value": "\ud83d"},
        '{"action": "FINISH", "value": "\\udc00"}',  # a JSON escape carries one too
        {"action": "CLICK", "element_id": "e1", "reasoning": "half an emoji \ud83d"},
    ],
)
def test_a_lone_surrogate_is_not_text(raw):
    # accepted before, then echoed in info["action"] / info["answer"], which the
    # episode writer could not encode as UTF-8
    with pytest.raises(ActionError, match="lone surrogate"):
        coerce_action(raw)
    assert ActionSpace().contains(raw) is False
    assert coerce_action({"action": "FINISH", "value": "\U0001f600 ok"}).value == "\U0001f600 ok"
