"""MiniWoB++ tasks, served from the ``miniwob`` PyPI package's own HTML.

Reset re-initialises the episode in the already-loaded page (seeding the
page's ``Math.seedrandom`` and calling ``core.startEpisodeReal()``), so only
the first reset of a task pays for a page load; the tasks in
:data:`RELOAD_EACH_EPISODE`, whose widgets keep state from one episode to the
next, load their page afresh at every reset. Reward comes from the page's
globals (``WOB_REWARD_GLOBAL``, ``WOB_RAW_REWARD_GLOBAL``, ``WOB_DONE_GLOBAL``,
``WOB_REWARD_REASON``).

``reward_type``:
    ``raw`` (default): the page's raw reward in [-1, 1];
    ``time_decayed``: the page's reward, scaled by the time left of the
    page's episode time (``episode_max_time_ms``, 10 s for most tasks;
    wall-clock, as MiniWoB++ defines it);
    ``binary``: 1.0 on success (raw reward > 0), else 0.0.

MiniWoB++'s wall-clock timer (``core.EPISODE_MAX_TIME``, 10 s) would end an
episode before a language model finishes thinking, so it is off unless
``episode_timer=True``; step limits come from ``max_episode_steps``.
"""

from __future__ import annotations

import importlib.util
import math
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browser_env.policy import LOOPBACK_HOSTS
from browser_env.tasks.server import serve_directory

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["RELOAD_EACH_EPISODE", "MiniWoBTask", "miniwob_html_dir", "miniwob_task_names"]

REWARD_TYPES = ("raw", "time_decayed", "binary")
# MiniWoB++'s own window (500x320) with the 160x210 task area at its top-left:
# widgets such as jQuery UI dialogs position themselves against the window, so a
# 160x210 viewport would push them off screen. The screenshot is the task area.
MINIWOB_VIEWPORT = (500, 320)
MINIWOB_TASK_AREA = (0, 0, 160, 210)
HARNESS_SELECTOR = "#reward-display, #click-canvas, #sync-task-cover"
FLIGHT_VIEWPORT = (375, 667)

#: Tasks whose page keeps a widget's state from one episode to the next, and
#: what it keeps: on a kept page an episode's observations depend on the
#: episode before (tests/browser_env/test_miniwob_replay.py). Their page is
#: loaded afresh at every reset (``reload_each_episode``), which made the same
#: seed and clicks give the same observations again after another episode, 5
#: times of 5 for each, at ~130-250 ms a reset instead of ~20-30 ms here.
RELOAD_EACH_EPISODE: dict[str, str] = {
    "book-flight-nodelay": "the datepicker keeps its month and selection",
    "choose-date-nodelay": "the jQuery UI datepicker keeps its month and selection",
    "click-menu-2": "the jQuery UI menu keeps its highlighted item",
    "search-engine": "the pagination plugin keeps its state (its links' ids differ)",
}

_SETUP_JS = r"""async ({seed, mode, timer, maxTime, readyMs}) => {
  if (maxTime !== null) core.EPISODE_MAX_TIME = maxTime;
  // The page is kept across episodes: start each with nothing focused or selected,
  // as on a fresh page (a field clicked last episode would still be focused).
  document.activeElement?.blur();
  window.getSelection()?.removeAllRanges();
  Math.seedrandom(seed);
  if (typeof core.setDataMode === "function") core.setDataMode(mode);
  core.startEpisodeReal();
  if (!timer) {
    // Keep endEpisode working (it needs a non-null timer id) without a deadline.
    clearTimeout(core.EP_TIMER);
    core.EP_TIMER = 0;
    core.clearTimer();
  }
  const t0 = Date.now();
  while (typeof WOB_TASK_READY !== "undefined" && !WOB_TASK_READY && Date.now() - t0 < readyMs) {
    await new Promise((r) => setTimeout(r, 10));
  }
  // The page's images may still be loading: a first episode would be observed
  // without them, and an element drawn only by its image (social-media's icons,
  // CSS `content: url(...)`) has no size yet, so it would not be listed. Waited
  // for: every <img>, every url() of the page's stylesheets (a :hover variant too,
  // so hovering draws at once) and of the elements' own styles (a jQuery UI icon's
  // background). Each image once per page (window.__brlImages): it stays cached.
  const seen = (window.__brlImages ??= new Set());
  const urls = new Set();
  const URL_RE = /url\(\s*(['"]?)([^'")]+)\1\s*\)/g;
  const collect = (css, base) => {
    for (const m of css.matchAll(URL_RE)) {
      if (!m[2].startsWith("data:")) try { urls.add(new URL(m[2], base).href); } catch (e) {}
    }
  };
  for (const sheet of document.styleSheets) {
    let rules = null;
    try { rules = sheet.cssRules; } catch (e) {}  // another origin's sheet: not readable
    for (const rule of rules || []) {
      if (rule instanceof CSSFontFaceRule || rule instanceof CSSImportRule) continue;  // not images
      collect(rule.cssText, sheet.href || location.href);
    }
  }
  for (const el of document.body.querySelectorAll("*")) {
    const cs = getComputedStyle(el);
    collect(cs.backgroundImage + " " + cs.content, location.href);
  }
  for (const url of seen) urls.delete(url);
  // An <img> the instance just made may not have started loading (no currentSrc
  // yet), and its box takes the image's size only once it has: wait for the
  // element itself (order-food's rows were shorter in a first episode).
  const pending = [...document.images].filter((img) => !img.complete);
  if (urls.size || pending.length) {
    const loaded = [...urls].map((url) => {
      const image = new Image();
      image.src = url;
      return image.decode().then(() => seen.add(url), () => seen.add(url));  // a failed one: not again
    });
    for (const img of pending) loaded.push(img.decode().catch(() => null));
    const waited = Date.now() - t0;
    await Promise.race([Promise.all(loaded), new Promise((r) => setTimeout(r, Math.max(0, readyMs - waited)))]);
  }
  const u = core.getUtterance();
  return typeof u === "string" ? u : u.utterance;
}"""

_VALIDATE_JS = """() => typeof WOB_DONE_GLOBAL === "undefined" ? null :
  [WOB_DONE_GLOBAL, WOB_REWARD_GLOBAL, WOB_RAW_REWARD_GLOBAL, WOB_REWARD_REASON]"""


@cache
def miniwob_html_dir() -> Path:
    """The ``html`` folder shipped inside the ``miniwob`` package (not imported)."""
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("MiniWoB++ pages need the `miniwob` package: pip install miniwob")
    html = Path(next(iter(spec.submodule_search_locations))) / "html"
    if not (html / "miniwob").is_dir():
        raise FileNotFoundError(f"the miniwob package has no task pages at {html}")
    return html


@cache
def miniwob_task_names() -> tuple[str, ...]:
    """Every task: ``click-test``, ..., and ``flight.AA`` style flight tasks."""
    html = miniwob_html_dir()
    names = [p.stem for p in (html / "miniwob").glob("*.html")]
    names += [f"flight.{p.parent.name}" for p in (html / "flight").glob("*/wrapper.html")]
    return tuple(sorted(names))


class MiniWoBTask:
    """One MiniWoB++ task, e.g. ``MiniWoBTask("click-button")``."""

    fresh_context = False
    #: The env's request interception lets pages reach only these hosts (browser_env.policy).
    allowed_hosts = LOOPBACK_HOSTS

    def __init__(
        self,
        name: str,
        reward_type: str = "raw",
        episode_timer: bool = False,
        episode_max_time_ms: int | None = None,
        data_mode: str = "train",
        ready_timeout_ms: int = 2_000,
        reload_each_episode: bool | None = None,
    ) -> None:
        """``reload_each_episode``: load the page afresh at every reset; ``None``
        (default): only for the tasks in :data:`RELOAD_EACH_EPISODE`. ``False``
        for one of those gives ~20 ms resets, but a seed's observations then
        depend on the episodes before (the registered id still says
        deterministic: check_env would fail)."""
        if name not in miniwob_task_names():
            raise ValueError(
                f"unknown MiniWoB++ task {name!r}; see browser_env.tasks.miniwob_task_names()"
            )
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type must be one of {REWARD_TYPES}, got {reward_type!r}")
        if episode_max_time_ms is not None and episode_max_time_ms <= 0:
            raise ValueError(
                "episode_max_time_ms must be > 0 (or None for the page's own, 10 s for most tasks)"
            )
        self.name = name
        self.reward_type = reward_type
        self.episode_timer = episode_timer
        self.episode_max_time_ms = episode_max_time_ms
        self.data_mode = data_mode
        self.ready_timeout_ms = ready_timeout_ms
        self.reload_each_episode = (
            name in RELOAD_EACH_EPISODE
            if reload_each_episode is None
            else bool(reload_each_episode)
        )
        flight = name.startswith("flight.")
        self.viewport = FLIGHT_VIEWPORT if flight else MINIWOB_VIEWPORT
        self.screenshot_region = None if flight else MINIWOB_TASK_AREA
        # The whole page minus MiniWoB's own harness (reward HUD, click canvas,
        # the START cover between episodes): jQuery UI dialogs and menus are
        # attached to <body>, outside the task's #wrap, and must stay visible.
        self.observation_root = None
        self.observation_exclude = HARNESS_SELECTOR
        path = f"flight/{name.split('.', 1)[1]}/wrapper.html" if flight else f"miniwob/{name}.html"
        #: the base URL of the server the pages come from (see browser_env.tasks.base)
        self.server_url = serve_directory(miniwob_html_dir())
        self.url = self.server_url + path

    def setup(self, page: Page, seed: int, options: dict[str, Any]) -> str:
        if (
            self.reload_each_episode
            or page.url != self.url
            or not page.evaluate("() => typeof core !== 'undefined'")
        ):
            page.goto(self.url, wait_until="load")
        args = {
            "seed": seed,
            "mode": self.data_mode,
            "timer": self.episode_timer,
            "maxTime": self.episode_max_time_ms,
            "readyMs": self.ready_timeout_ms,
        }
        return page.evaluate(_SETUP_JS, args)

    #: A JS function the env may run in the same ``evaluate`` as its observation;
    #: its result goes to :meth:`judge` (one browser round trip less per step).
    state_js = _VALIDATE_JS

    def validate(self, page: Page, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        return self.judge(page.evaluate(_VALIDATE_JS), answer)

    def judge(
        self, state: list[Any] | None, answer: str | None
    ) -> tuple[float, bool, dict[str, Any]]:
        """Reward from the page globals read by :attr:`state_js` (None: not a task page).

        A reward the page left unset (``null``) or not a finite number counts as
        0: an episode the page ended without a positive raw reward is a failure."""
        if state is None:  # the agent navigated away: the task cannot be judged there
            return 0.0, False, {"raw_reward": 0.0, "success": False, "reason": "left the task page"}
        done, reward, raw, reason = state
        raw, reward = _finite(raw), _finite(reward)
        success = bool(done) and raw > 0
        if not done:
            value = 0.0
        elif self.reward_type == "raw":
            value = raw
        elif self.reward_type == "binary":
            value = 1.0 if success else 0.0
        else:
            value = reward
        return (
            value,
            bool(done),
            {"raw_reward": raw if done else 0.0, "success": success, "reason": reason},
        )

    def teardown(self) -> None:
        pass


def _finite(value: Any) -> float:
    """A page global read as a reward: ``value`` when a finite number, else 0.0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0
