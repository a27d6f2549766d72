"""benchmarks.obs_quality: the ambiguity rate and token counts it reports."""

from __future__ import annotations

import pytest

from benchmarks.obs_quality import ambiguous_targets, line_keys
from browser_env.observation import make_element


def _button(element_id: str, text: str, context: str = "", value: str = "") -> dict:
    return make_element(
        element_id,
        "button",
        "button",
        text,
        value=value,
        name=text,
        name_from="content",
        context=context,
    )


def test_twins_are_lines_alike_but_for_id_and_value():
    page = [_button("e1", "Odd", "3"), _button("e2", "Odd", "4", value="x"), _button("e3", "Go")]
    assert line_keys(page) == ['button "Odd" near="3"', 'button "Odd" near="4"', 'button "Go"']
    assert ambiguous_targets(page, "e1") == []
    alike = [_button("e1", "Odd"), _button("e2", "Odd", value="x"), _button("e3", "Go")]
    assert ambiguous_targets(alike, "e1") == ["e2"]  # no row text to tell them apart
    assert ambiguous_targets(alike, "e3") == []


@pytest.mark.browser
@pytest.mark.slow
def test_sample_of_expert_tasks_is_unambiguous_and_counted():
    from benchmarks.obs_quality import measure

    tasks = ["login-user", "odd-or-even", "enter-password", "copy-paste"]
    result = measure(tasks, seeds=1, progress=False)
    assert result["targets"] >= 8
    assert result["ambiguity_rate"] == 0.0, result["ambiguous"]
    assert result["expert_success"] == 1.0
    for task in tasks:
        row = result["tasks"][task]
        assert row["turn1"]["tiny"] > 0 and row["mean"]["bytes"] > row["mean"]["tiny"]
