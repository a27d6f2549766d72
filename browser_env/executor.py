"""Runs one :class:`~browser_env.actions.Action` on a page, as a person would.

CLICK and TYPE use real input events (mouse at the element's centre, key
presses), after scrolling the element into view. TYPE replaces the field's
content; on a ``<select>`` it chooses the option whose label or value matches.
CLICK on a checkbox, radio or label toggles it exactly as a click does.
PRESS_ENTER presses Enter in the element (focused first) or wherever focus is.
SCROLL turns the mouse wheel over the element or the viewport. WAIT sleeps at
most ``max_wait_ms``. NAVIGATE loads a URL that the env's
:class:`~browser_env.policy.UrlPolicy` allows, within ``navigation_timeout_ms``.
FINISH does nothing here; the env ends the episode.

Bounds: a TYPE value longer than ``max_type_chars`` (default 1,000) is an
error, not typed at all: every character is a real key press (about 2-4 ms
each), so the cap is what bounds a TYPE in time. Playwright calls that wait
(element waits, loads) time out after ``action_timeout_ms`` /
``navigation_timeout_ms``; the env's watchdog bounds the rest (see
``step_timeout_ms`` and :mod:`browser_env.watchdog`).

Every problem the policy can cause is an :class:`ActionError` with a message
for the policy; only browser failures (a crashed page) propagate.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browser_env.actions import Action, ActionError, Verb
from browser_env.policy import UrlPolicy

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["ExecutorConfig", "execute", "first_line", "LOCATE_JS", "INIT_JS", "INTENTS_JS"]

_JS = Path(__file__).with_name("js")
INIT_JS = (_JS / "init.js").read_text()
LOCATE_JS = (_JS / "locate.js").read_text()
INTENTS_JS = (_JS / "intents.js").read_text()

_SELECT_JS = """([id, wanted]) => {
  const el = window.__brlState.byId.get(id).deref();
  const norm = (s) => (s || "").replace(/\\s+/g, " ").trim().toLowerCase();
  const w = norm(wanted);
  const opts = Array.from(el.options);
  let i = opts.findIndex((o) => norm(o.label) === w || norm(o.text) === w || norm(o.value) === w);
  if (i < 0) i = opts.findIndex((o) => norm(o.text).includes(w));
  if (i < 0) return opts.map((o) => o.text.trim()).join(" | ");
  el.focus();
  el.selectedIndex = i;
  el.dispatchEvent(new Event("input", {bubbles: true}));
  el.dispatchEvent(new Event("change", {bubbles: true}));
  return null;
}"""

_FOCUS_JS = """(id) => { const el = window.__brlState.byId.get(id).deref(); el.focus(); }"""

_SIZE_JS = """(id) => {
  const r = window.__brlState.byId.get(id).deref().getBoundingClientRect();
  return [r.width, r.height];
}"""

_SELECT_ALL_JS = """(id) => {
  const el = window.__brlState.byId.get(id).deref();
  if (typeof el.select === "function") { el.select(); return true; }
  return false;
}"""


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    """Limits for actions.

    Attributes:
        max_wait_ms: WAIT is clamped to this.
        navigation_timeout_ms: NAVIGATE, task page loads and post-action page
            loads give up after this.
        scroll_fraction: SCROLL moves this fraction of the viewport height.
        type_delay_ms: delay between key presses when typing.
        max_type_chars: a longer TYPE value is an error (nothing is typed).
        action_timeout_ms: Playwright's default timeout for anything else that waits.
        popup_timeout_ms: how long a step waits for a window or a navigation
            that its action asked for before it observes.
        step_timeout_ms: a page that keeps a step (or a reset's setup) busy longer
            has its script stopped, and is replaced if still busy 2 s later.
    """

    max_wait_ms: float = 5_000
    navigation_timeout_ms: float = 15_000
    scroll_fraction: float = 0.8
    type_delay_ms: float = 0
    max_type_chars: int = 1_000
    action_timeout_ms: float = 5_000
    popup_timeout_ms: float = 5_000
    step_timeout_ms: float = 30_000

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(
                    f"ExecutorConfig.{field.name} must be a number >= 0, got {value!r}"
                )
        if self.navigation_timeout_ms >= self.step_timeout_ms > 0:
            raise ValueError("step_timeout_ms must be larger than navigation_timeout_ms")


def execute(
    page: Page, action: Action, config: ExecutorConfig, policy: UrlPolicy | None = None
) -> dict[str, Any]:
    """Run ``action`` on ``page``. Returns notes for ``info`` (e.g. a covered click).

    Raises:
        ActionError: the action cannot be done as written (unknown element, a
            URL the policy refuses, a TYPE value over ``max_type_chars``, ...).
    """
    verb = action.action
    if verb is Verb.TYPE and len(action.value or "") > config.max_type_chars:
        raise ActionError(
            f"TYPE value is {len(action.value or '')} characters; the limit is "
            f"{config.max_type_chars} (ExecutorConfig.max_type_chars)"
        )
    if verb is Verb.CLICK:
        return _click(page, action.element_id)
    if verb is Verb.TYPE:
        return _type(page, action.element_id, action.value or "", config)
    if verb is Verb.PRESS_ENTER:
        if action.element_id is not None:
            _locate(page, action.element_id)
            page.evaluate(_FOCUS_JS, action.element_id)
        page.keyboard.press("Enter")
        return {}
    if verb is Verb.SCROLL:
        return _scroll(page, action.element_id, (action.value or "down").lower(), config)
    if verb is Verb.WAIT:
        ms = min(float(action.value or 1000), config.max_wait_ms)
        page.wait_for_timeout(ms)
        return {"waited_ms": ms}
    if verb is Verb.NAVIGATE:
        problem = (policy or UrlPolicy()).url_error(action.value or "")
        if problem is not None:
            raise ActionError(f"NAVIGATE to {action.value} refused: {problem}")
        try:
            page.goto(
                action.value, wait_until="domcontentloaded", timeout=config.navigation_timeout_ms
            )
        except Exception as exc:  # noqa: BLE001 - any load failure is the policy's to read
            raise ActionError(f"NAVIGATE to {action.value} failed: {first_line(exc)}") from None
        return {}
    return {}  # FINISH: the env ends the episode


def _locate(page: Page, element_id: str | None, scroll: bool = True) -> dict[str, Any]:
    if element_id is None:
        raise ActionError("this action needs an element_id")
    found = page.evaluate(LOCATE_JS, {"id": element_id, "scroll": scroll})
    if not found["ok"]:
        raise ActionError(found["error"])
    return found


def _click(page: Page, element_id: str | None) -> dict[str, Any]:
    target = _locate(page, element_id)
    if not target["enabled"]:
        raise ActionError(f"element {element_id} is disabled")
    if target["select"]:
        # A native <select> opens a popup the page cannot see; focusing is the
        # observable effect. Choose an option with TYPE.
        page.evaluate(_FOCUS_JS, element_id)
        return {"note": "select focused; use TYPE with an option's text to choose it"}
    page.mouse.click(target["x"], target["y"])
    return {"covered_by": target["covered"]} if target["covered"] else {}


def _type(page: Page, element_id: str | None, text: str, config: ExecutorConfig) -> dict[str, Any]:
    if element_id is None:
        page.keyboard.type(text, delay=config.type_delay_ms)
        return {}
    target = _locate(page, element_id)
    if not target["enabled"]:
        raise ActionError(f"element {element_id} is disabled")
    if target["select"]:
        options = page.evaluate(_SELECT_JS, [element_id, text])
        if options is not None:
            raise ActionError(f"no option {text!r} in {element_id}; options are: {options}")
        return {}
    if target["type"] in _DATE_TYPES:
        return _set_date(page, element_id, target["type"], text)
    if not target["editable"]:
        raise ActionError(
            f"element {element_id} ({target['tag']}) does not take text; CLICK it instead"
        )
    page.mouse.click(target["x"], target["y"])
    # Replace the content, as fill() would, but with real key events.
    if not page.evaluate(_SELECT_ALL_JS, element_id):
        page.keyboard.press("ControlOrMeta+A")
    page.keyboard.press("Delete")
    page.keyboard.type(text, delay=config.type_delay_ms)
    return {}


# Date and time inputs are segmented widgets whose keyboard order depends on the
# locale; like Playwright's fill(), TYPE sets their value (with input/change
# events) after normalising common spellings: 2010-05-20, 05/20/2010, 9:37 PM.
_DATE_TYPES = {"date", "time", "datetime-local", "month", "week"}
_SET_VALUE_JS = """([id, value]) => {
  const el = window.__brlState.byId.get(id).deref();
  el.focus();
  el.value = value;
  el.dispatchEvent(new Event("input", {bubbles: true}));
  el.dispatchEvent(new Event("change", {bubbles: true}));
  return el.value;
}"""


def _normalise_time(text: str) -> str | None:
    match = re.fullmatch(r"(\d{1,2}):?(\d{2})(?::?(\d{2}))?\s*([ap]\.?m\.?)?", text.strip(), re.I)
    if not match:
        return None
    hour, minute, second, half = match.groups()
    h = int(hour)
    if half:
        if not 1 <= h <= 12:
            return None
        h = h % 12 + (12 if half.lower().startswith("p") else 0)
    if h > 23 or int(minute) > 59 or (second and int(second) > 59):
        return None
    return f"{h:02d}:{minute}" + (f":{second}" if second else "")


def _normalise_date(text: str) -> str | None:
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return text
    match = re.fullmatch(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})", text) or re.fullmatch(
        r"(\d{2})(\d{2})(\d{4})", text
    )
    if match:
        month, day, year = match.groups()
        return f"{year}-{int(month):02d}-{int(day):02d}"
    return None


def _normalise_date_value(kind: str, text: str) -> str | None:
    if kind == "date":
        return _normalise_date(text)
    if kind == "time":
        return _normalise_time(text)
    if kind == "datetime-local":
        parts = re.split(r"[T ]", text.strip(), maxsplit=1)
        if len(parts) == 2:
            date, time = _normalise_date(parts[0]), _normalise_time(parts[1])
            return f"{date}T{time}" if date and time else None
        return None
    return text.strip()  # month (2010-05) and week (2010-W20) have one spelling


def _set_date(page: Page, element_id: str, kind: str, text: str) -> dict[str, Any]:
    value = _normalise_date_value(kind, text)
    if value is not None:
        value = page.evaluate(_SET_VALUE_JS, [element_id, value])
    if not value:
        raise ActionError(
            f"{text!r} is not a valid {kind} for {element_id} (e.g. 2010-05-20, 05/20/2010, 9:37 PM)"
        )
    return {}


def _scroll(
    page: Page, element_id: str | None, direction: str, config: ExecutorConfig
) -> dict[str, Any]:
    size = page.viewport_size or {"width": 1280, "height": 720}
    if element_id is not None:
        target = _locate(page, element_id, scroll=False)
        x, y = target["x"], target["y"]
        w, h = page.evaluate(_SIZE_JS, element_id)
        # The wheel goes to what is under the pointer: over the part of the element
        # on screen, or, when none is, after scrolling it into view (a wheel off
        # screen would scroll the page, not the element).
        left, top = max(x - w / 2, 0), max(y - h / 2, 0)
        right, bottom = min(x + w / 2, size["width"]), min(y + h / 2, size["height"])
        if left < right and top < bottom:
            x, y = (left + right) / 2, (top + bottom) / 2
        else:
            target = _locate(page, element_id, scroll=True)
            x, y = target["x"], target["y"]
    else:
        x, y = size["width"] / 2, size["height"] / 2
    dy = size["height"] * config.scroll_fraction * (1 if direction == "down" else -1)
    page.mouse.move(x, y)
    page.mouse.wheel(0, dy)
    # Wheel events scroll asynchronously; one frame lets the position settle.
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => r()))")
    return {}


def first_line(exc: BaseException) -> str:
    """An exception's message up to its first line break (its type when it has none)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
