from __future__ import annotations

import pytest

from agents.agent import Step
from agents.guards import GuardConfig, Guards, pending_type
from browser_env.actions import Action, Verb

TYPED = Step(Action.type("e1", "bob"))
ENTER_E1 = Action(Verb.PRESS_ENTER, "e1")


def fired(notes):
    return [n.guard for n in notes]


def test_no_guard_fires_on_a_normal_action(make_obs):
    action, notes = Guards()(Action.click("e2"), make_obs(), [])
    assert action == Action.click("e2") and notes == []


def test_pending_type():
    assert pending_type([TYPED]) is TYPED
    assert pending_type([TYPED, Step(Action(Verb.SCROLL, value="down"))]) is TYPED
    assert pending_type([TYPED, Step(Action(Verb.PRESS_ENTER))]) is None
    assert pending_type([TYPED, Step(Action.click("e2"))]) is None
    assert pending_type([TYPED, Step(Action.click("e2"), error="boom")]) is TYPED
    assert pending_type([Step(Action.type("e1", "x"), error="not editable")]) is None
    assert pending_type([]) is None


def test_finish_after_unsubmitted_type_presses_enter(make_obs):
    action, notes = Guards()(Action.finish("done"), make_obs(), [TYPED])
    assert action == ENTER_E1
    assert fired(notes) == ["submit_before_finish"]
    note = notes[0].to_dict()
    assert note["proposed"] == {"action": "FINISH", "value": "done"}
    assert note["replacement"] == {"action": "PRESS_ENTER", "element_id": "e1"}
    # once submitted, FINISH goes through
    action, notes = Guards()(Action.finish("done"), make_obs(), [TYPED, Step(ENTER_E1)])
    assert action == Action.finish("done") and notes == []


def test_enter_goes_to_focus_when_typed_element_is_gone(make_obs, make_element):
    obs = make_obs(elements=[make_element("e7", "button", "Next")])
    action, _ = Guards()(Action.finish(), obs, [TYPED])
    assert action == Action(Verb.PRESS_ENTER)


def test_failed_click_after_type_presses_enter(make_obs):
    history = [TYPED, Step(Action.click("e2"), error="element is not clickable")]
    action, notes = Guards()(Action.click("e2"), make_obs(), history)
    assert action == ENTER_E1 and fired(notes) == ["enter_after_failed_click"]
    # a click on an element that is not on the page while a TYPE is pending is a failed click
    action, notes = Guards()(Action.click("e99"), make_obs(), [TYPED])
    assert action == ENTER_E1 and fired(notes) == ["enter_after_failed_click"]


def test_unknown_element_is_rejected_with_a_message(make_obs):
    action, notes = Guards()(Action.click("e99"), make_obs(), [])
    assert action == Action(Verb.WAIT, value="0")
    assert fired(notes) == ["unknown_element"]
    assert "e99" in notes[0].error and "ELEMENTS" in notes[0].error
    # no elements modality: nothing to check against
    obs = make_obs()
    del obs["elements"]
    assert Guards()(Action.click("e99"), obs, [])[0] == Action.click("e99")


def test_same_action_repeated_stops(make_obs):
    history = [Step(Action.click("e2")) for _ in range(3)]
    action, notes = Guards(GuardConfig(max_repeats=4))(
        Action(Verb.CLICK, "e2", reasoning="again"), make_obs(), history
    )
    assert action.action is Verb.FINISH and "4 times" in action.reasoning
    assert fired(notes) == ["max_repeats"]
    # fewer repeats, or a different action, pass
    assert Guards()(Action.click("e2"), make_obs(), history[:2])[1] == []
    assert Guards()(Action.click("e1"), make_obs(), history)[1] == []


def test_repeated_wait_stops(make_obs):
    history = [Step(Action(Verb.WAIT, value=str(i))) for i in range(2)]
    action, notes = Guards()(Action(Verb.WAIT, value="100"), make_obs(), history)
    assert action.action is Verb.FINISH and fired(notes) == ["max_waits"]
    assert Guards()(Action(Verb.WAIT), make_obs(), history[:1])[1] == []


def test_each_guard_can_be_turned_off(make_obs):
    off = Guards(
        {
            "unknown_element": False,
            "enter_after_failed_click": False,
            "submit_before_finish": False,
            "max_repeats": 0,
            "max_waits": 0,
        }
    )
    assert off(Action.finish(), make_obs(), [TYPED]) == (Action.finish(), [])
    assert off(Action.click("e99"), make_obs(), [TYPED])[0] == Action.click("e99")
    waits = [Step(Action(Verb.WAIT)) for _ in range(10)]
    assert off(Action(Verb.WAIT), make_obs(), waits)[0] == Action(Verb.WAIT)


@pytest.mark.parametrize("kwargs", [{"max_repeats": 1}, {"max_waits": -1}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        GuardConfig(**kwargs)
