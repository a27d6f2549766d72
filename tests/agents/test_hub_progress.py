"""progress=false hides transformers' "Loading weights" bar, and only inside the block."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")


def _load_and_read_stderr(capfd, path) -> str:
    from transformers import AutoModelForCausalLM

    capfd.readouterr()
    AutoModelForCausalLM.from_pretrained(path)
    return capfd.readouterr().err


def test_progress_false_hides_the_loading_bar_and_puts_it_back_after(capfd):
    """``benchmarks.run progress=false agent=tiny`` still drew transformers'
    "Loading weights" bar: the block hides it, and a load after the block
    draws it again (a library caller's setting is not changed for good)."""
    import huggingface_hub.utils as hub
    import transformers.utils.logging as tlog
    from backend_contract import tiny_path

    from agents.hub_progress import hub_progress

    path = tiny_path("text")
    assert tlog.is_progress_bar_enabled() and not hub.are_progress_bars_disabled()
    assert "Loading weights" in _load_and_read_stderr(capfd, path)  # the bar this hides
    with hub_progress(False):
        assert not tlog.is_progress_bar_enabled() and hub.are_progress_bars_disabled()
        assert "Loading weights" not in _load_and_read_stderr(capfd, path)
    assert tlog.is_progress_bar_enabled() and not hub.are_progress_bars_disabled()
    assert "Loading weights" in _load_and_read_stderr(capfd, path)
    with hub_progress(True):  # changes nothing
        assert tlog.is_progress_bar_enabled()


def test_bars_a_user_turned_off_stay_off():
    import huggingface_hub.utils as hub
    import transformers.utils.logging as tlog

    from agents.hub_progress import hub_progress

    tlog.disable_progress_bar()
    try:
        with hub_progress(False):
            pass
        assert not tlog.is_progress_bar_enabled() and hub.are_progress_bars_disabled()
        with hub_progress(True):
            assert not tlog.is_progress_bar_enabled()
    finally:
        tlog.enable_progress_bar()
