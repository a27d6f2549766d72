"""``make_element``: complete elements for observations made without a browser."""

from __future__ import annotations

import numpy as np
import pytest

from browser_env.observation import ELEMENT_FIELDS, element_space, make_element, render_element


def test_every_field_is_there_and_the_element_fits_the_space():
    element = make_element("e3", "input", "textbox", label="City", value="NYC", bbox=(1, 2, 3, 4))
    assert set(element) == set(ELEMENT_FIELDS)
    assert element_space().contains(element)
    assert element["bbox"].dtype == np.float32 and element["bbox"].tolist() == [1, 2, 3, 4]
    assert render_element(element) == '[e3] textbox "City" value="NYC"'


def test_defaults_are_an_enabled_visible_element_without_flags():
    element = make_element("e1", "button", "button", "OK")
    assert (element["enabled"], element["visible"], element["focused"], element["checked"]) == (
        1,
        1,
        0,
        0,
    )
    assert element["maxlength"] == -1 and element["bbox"].tolist() == [0, 0, 0, 0]
    assert render_element(element) == '[e1] button "OK"'
    # a partial dict (what hand-written test elements used to be) does not fit the space
    partial = {k: element[k] for k in ELEMENT_FIELDS[:12]}
    assert not element_space().contains(partial)


def test_unknown_fields_and_bad_boxes_are_refused():
    with pytest.raises(ValueError, match="unknown element fields"):
        make_element("e1", "button", "button", "OK", colour="red")
    with pytest.raises(ValueError, match="bbox must be 4 numbers"):
        make_element("e1", "button", bbox=(1, 2, 3))


def test_observer_limits_keep_the_text_within_its_space():
    """``max_text_chars`` past the observation space's bound would let ``text``
    outgrow it: refused, as a limit below 1 is."""
    from browser_env.observation import MAX_TEXT_CHARS, ObserverLimits, observation_space

    assert observation_space(("text",), (10, 10))["text"].max_length == MAX_TEXT_CHARS
    assert ObserverLimits(max_text_chars=MAX_TEXT_CHARS).max_text_chars == MAX_TEXT_CHARS
    with pytest.raises(ValueError, match="max_text_chars must be <= "):
        ObserverLimits(max_text_chars=MAX_TEXT_CHARS + 1)
    with pytest.raises(ValueError, match="max_nodes must be >= 1"):
        ObserverLimits(max_nodes=0)


def test_modalities_as_one_string_or_an_unknown_name_are_refused_before_any_browser():
    """``modalities="text"`` used to reach ``tuple()`` and come back as
    "unknown modalities ['e', 't', 'x']": a string is refused as one, naming
    the tuple meant; the env refuses it in its constructor, before a launch."""
    from browser_env.env import BrowserEnv
    from browser_env.observation import check_modalities, observation_space

    assert check_modalities(["text", "elements"]) == ("text", "elements")
    message = "modalities must be a sequence of names such as ('text',), not the string 'text'"
    for call in (check_modalities, observation_space, lambda m: BrowserEnv(modalities=m)):
        with pytest.raises(TypeError) as refused:
            call("text")
        assert str(refused.value) == message
        with pytest.raises(ValueError, match=r"unknown modalities \['nope'\]; choose from"):
            call(("text", "nope"))
    env = BrowserEnv(modalities=("text",))
    assert env.modalities == ("text",) and "elements" not in env.observation_space.spaces
    env.close()
