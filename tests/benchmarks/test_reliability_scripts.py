"""The reliability scripts run end to end on a tiny budget (the full runs are in the README)."""

from __future__ import annotations

import pytest

from benchmarks.browser_kills import kill_rounds
from benchmarks.soak import process_tree_rss, soak

pytestmark = pytest.mark.browser


def test_kill_script_counts_a_recovery_and_leaves_nothing_behind():
    result = kill_rounds(kills=1, driver_every=1, progress=False)
    assert (result["recovered"], result["driver_kills"]) == (1, 1), result["failures"]
    assert result["leftover_processes_of_killed_browsers"] == []
    assert result["chromium_left_after_close"] == [] and result["passed"]


def test_soak_script_reports_the_process_tree_memory():
    result = soak(resets=12, progress=False)
    assert result["resets"] == 12 and result["truncated_steps"] == 0
    assert result["rss_start_mib"] > 10 and [s["resets"] for s in result["samples"]][-1] == 12
    assert process_tree_rss() > 0


@pytest.mark.parametrize("resets", [1, 5, 10])
def test_a_soak_no_longer_than_its_warm_up_is_refused_before_a_browser_starts(resets):
    # the growth is measured from the warm-up's end (at least 10 resets)
    with pytest.raises(ValueError, match="warm-up of 10"):
        soak(resets=resets, progress=False)


@pytest.mark.parametrize("limit", [float("nan"), 0.0, -1.0])
def test_a_soak_whose_growth_limit_can_never_pass_is_refused_before_a_browser_starts(limit):
    with pytest.raises(ValueError, match="max_growth must be a finite number > 0"):
        soak(resets=20, max_growth=limit, progress=False)
