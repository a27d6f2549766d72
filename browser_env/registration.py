"""Gymnasium ids, registered with string entry points (nothing is imported)."""

from __future__ import annotations

import gymnasium as gym

__all__ = ["MINIWOB_MAX_STEPS", "OPEN_MAX_STEPS", "register_envs"]

ENTRY_POINT = "browser_env.env:BrowserEnv"
# make_vec: N contexts of one shared Chromium (vectorization_mode="sync"/"async": N browsers)
VECTOR_ENTRY_POINT = "browser_env.vector:SharedBrowserVectorEnv"
MINIWOB_MAX_STEPS = 10
OPEN_MAX_STEPS = 30

# Pages whose observation is not a function of the seed alone, and why. Gymnasium's
# check_env skips its same-seed-same-observation assertions for these (spec.nondeterministic).
# Most reasons come from Farama's miniwob registration; "ours" were found by check_env here.
NONDETERMINISTIC: dict[str, str] = {
    "book-flight": "datepicker 'today' highlight, toLocaleTimeString()",
    "book-flight-nodelay": "datepicker 'today' highlight, toLocaleTimeString()",
    "choose-date": "jQuery datepicker state persists across resets; fade animation",
    "choose-date-easy": "jQuery datepicker state persists across resets; fade animation",
    "choose-date-medium": "jQuery datepicker state persists across resets; fade animation",
    "choose-date-nodelay": "jQuery datepicker state persists across resets",
    "click-dialog": "jQuery UI dialog destroy/recreate cycle",
    "click-dialog-2": "jQuery UI dialog destroy/recreate cycle",
    "click-pie": "variable RNG use and animated arcs",
    "click-pie-nodelay": "variable RNG use in arc generation",
    "click-scroll-list": "retry-loop RNG use; native select layout",
    "drag-cube": "setInterval physics loop",
    "scroll-text": "focus/caret state carried across resets",
    "scroll-text-2": "scrollTop depends on font rendering",
    "search-engine": "pagination plugin state leaks across resets",
    "social-media": "feed scroll position carried across resets",
    "social-media-all": "feed scroll position carried across resets",
    "social-media-some": "feed scroll position carried across resets",
    "terminal": "blinking cursor; today's date in the page",
    "order-food": "menu scroll position carried across resets",
    "phone-book": "pagination plugin state leaks across resets",
    "stock-market": "setInterval animation mutates the page",
    "chase-circle": "the target moves continuously (ours)",
    "click-tab": "jQuery UI tabs: the previous instance leaks a few rendered pixels (ours)",
    "click-tab-2": "jQuery UI tabs: the previous instance leaks a few rendered pixels (ours)",
    "click-tab-2-easy": "jQuery UI tabs: the previous instance leaks a few rendered pixels (ours)",
    "click-tab-2-medium": "jQuery UI tabs: the previous instance leaks a few rendered pixels (ours)",
    "click-tab-2-hard": "jQuery UI tabs: the previous instance leaks a few rendered pixels (ours)",
    "click-collapsible": "jQuery UI accordion: the previous instance leaks a few rendered pixels (ours)",
    "click-collapsible-nodelay": "jQuery UI accordion: the previous instance leaks a few rendered pixels (ours)",
    "click-collapsible-2": "jQuery UI accordion: the previous instance leaks a few rendered pixels (ours)",
    "click-collapsible-2-nodelay": "jQuery UI accordion: the previous instance leaks a few rendered pixels (ours)",
    "form-sequence": "the previous instance leaks a few rendered pixels (ours)",
    "multi-layouts": "the previous instance leaks a few rendered pixels (ours)",
    "simon-says": "the buttons to press flash on a wall-clock timer (ours)",
    "flight.AA": "a full airline site loads asynchronously",
    "flight.Alaska": "a full airline site loads asynchronously",
    "flight.Alaska-auto": "a full airline site loads asynchronously",
    "flight.Alaska-auto-medium": "a full airline site loads asynchronously",
}


def register_envs() -> None:
    """Register every id once; safe to call again."""
    if "browser_env/open-v0" in gym.registry:
        return
    gym.register(
        id="browser_env/open-v0",
        entry_point=ENTRY_POINT,
        vector_entry_point=VECTOR_ENTRY_POINT,
        max_episode_steps=OPEN_MAX_STEPS,
        kwargs={"task": "open"},
        nondeterministic=True,
    )
    try:
        from browser_env.tasks.miniwob import miniwob_task_names

        names = miniwob_task_names()
    except (
        ModuleNotFoundError,
        FileNotFoundError,
    ):  # miniwob is a core dependency; be lenient anyway
        names = ()
    for name in names:
        gym.register(
            id=f"browser_env/miniwob.{name}-v0",
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            max_episode_steps=MINIWOB_MAX_STEPS,
            kwargs={"task": f"miniwob.{name}"},
            nondeterministic=name in NONDETERMINISTIC,
        )
