"""The one prompt builder: inference and every learner call :func:`build_prompt`.

A prompt is a system message holding the output-format block and one user
message holding, in this order::

    GOAL, RULES, LAST ERROR, HISTORY (the agent's own recent actions),
    ELEMENTS (``render_element_lines``), PAGE TEXT[, DEMONSTRATION]

Contracts:

* The format block comes first and is never cut.
* The prompt fits ``budget_tokens`` as measured by ``count_tokens`` (the
  backend's tokenizer; a chars/4 estimate by default) over the messages'
  contents. Chat-template overhead and the reply are not counted: leave
  headroom for them. Cuts happen in this order, each said in the prompt:
  page text (from the end), elements (from the end), history (oldest first),
  the goal (from the end). Only when the format block alone exceeds the budget
  is the prompt over budget; ``Prompt.truncation["over_budget"]`` says so.
* ``demonstration`` (for teacher prompts, e.g. SDFT) adds one delimited
  section at the end of the user message and changes nothing else: the budget
  decisions are made without it, so removing the section from a teacher prompt
  gives exactly the student prompt.
* ``PROMPT_VERSION`` changes whenever the rendered text could change, so that
  adapters and caches know which prompt they were trained on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from browser_env.observation import render_element_lines

if TYPE_CHECKING:
    from agents.history import Step

__all__ = [
    "DEFAULT_RULES",
    "DEMO_BEGIN",
    "DEMO_END",
    "FORMAT_BLOCK",
    "PROMPT_VERSION",
    "Prompt",
    "approx_tokens",
    "build_prompt",
    "render_history",
]

#: v2: elements show their accessible name (or the text beside them), input type,
#: required/readonly/min/max/maxlength, and look-alikes their row's text (``near=``).
PROMPT_VERSION = "browser-rl-prompt-v2"

FORMAT_BLOCK = """\
You are a web agent that controls a browser to accomplish a goal.
Reply with exactly ONE JSON object (one action) and nothing else. Actions:
{"action": "CLICK", "element_id": "e5"}
{"action": "TYPE", "element_id": "e3", "value": "text to type"}   (replaces the field's content)
{"action": "PRESS_ENTER", "element_id": "e3"}   (element_id optional)
{"action": "SCROLL", "value": "down"}   ("up" or "down")
{"action": "WAIT", "value": "500"}   (milliseconds)
{"action": "NAVIGATE", "value": "https://example.com"}
{"action": "FINISH", "value": "answer, or empty"}   (when the goal is achieved)
You may add a short "reasoning" string to the object."""

DEFAULT_RULES: tuple[str, ...] = (
    "Use only element ids listed under ELEMENTS.",
    "After typing into a search or input field, submit it (PRESS_ENTER or click the submit button).",
    "If the last action failed, do something different.",
    "FINISH as soon as the goal is achieved.",
)

DEMO_BEGIN = "=== DEMONSTRATION (an expert's action for this step) ==="
DEMO_END = "=== END DEMONSTRATION ==="
_SECTION_SEP = "\n\n"
_MIN_TEXT_KEEP = 16  # below this many chars the page text section is dropped, not kept as a stub


def approx_tokens(text: str) -> int:
    """A cheap token estimate (about four characters per token)."""
    return (len(text) + 3) // 4


@dataclasses.dataclass(frozen=True)
class Prompt:
    """What a backend receives: chat ``messages`` and the ``images`` for the last
    user message (empty unless the caller asked for a multimodal prompt)."""

    messages: list[dict[str, Any]]
    images: tuple[Any, ...] = ()
    version: str = PROMPT_VERSION
    truncation: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def text(self) -> str:
        """The messages' contents joined, for text-only consumers and counting."""
        return _SECTION_SEP.join(str(m["content"]) for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record (no pixels) for episodes and logs."""
        return {
            "version": self.version,
            "messages": [dict(m) for m in self.messages],
            "n_images": len(self.images),
            "truncation": dict(self.truncation),
        }


def render_history(history: Sequence[Step]) -> list[str]:
    """One line per step: the action as JSON (without reasoning), the element it
    targeted and its outcome, e.g. ``{"action": "CLICK", "element_id": "e5"} on
    [e5] button "OK" -> OK``."""
    lines = []
    for step in history:
        data = {k: v for k, v in step.action.to_dict().items() if k != "reasoning"}
        line = json.dumps(data, ensure_ascii=False)
        if step.element:
            line += f" on {step.element}"
        line += f" -> ERROR: {step.error}" if step.error else " -> OK"
        lines.append(line)
    return lines


def build_prompt(
    obs: Mapping[str, Any],
    history: Sequence[Step] = (),
    *,
    count_tokens: Callable[[str], int] | None = None,
    budget_tokens: int = 3072,
    demonstration: str | None = None,
    multimodal: bool = False,
    max_history: int = 8,
    max_text_chars: int = 8000,
    rules: Sequence[str] | None = None,
    system_role: bool = True,
    goal: str | None = None,
) -> Prompt:
    """Build the prompt for one decision.

    ``obs`` follows the observation contract (missing keys are treated as
    empty); ``history`` is the agent's own steps, oldest first (the last
    ``max_history`` are shown). ``goal`` overrides ``obs["goal"]`` when given.
    With ``multimodal`` the screenshot (if the observation has one) goes in
    ``images``. ``system_role=False`` puts the format block at the top of the
    user message for chat templates without a system role.
    """
    if budget_tokens < 1:
        raise ValueError("budget_tokens must be >= 1")
    # a prompt is measured once, not once per check
    count = functools.cache(count_tokens or approx_tokens)

    goal_text = " ".join(str(goal if goal is not None else obs.get("goal", "")).split())
    error = str(obs.get("last_action_error") or "")
    if not error and history and history[-1].error:
        error = history[-1].error
    steps = list(history)[-max_history:] if max_history > 0 else []
    elements = render_element_lines(obs.get("elements") or ())
    page_text = str(obs.get("text") or "")
    pre_cut = max(len(page_text) - max_text_chars, 0)
    page_text = page_text[:max_text_chars]
    screenshot = obs.get("screenshot")
    images = (screenshot,) if multimodal and screenshot is not None else ()

    def render(
        goal_s: str, n_steps: int, n_elements: int, text_chars: int | None
    ) -> list[dict[str, Any]]:
        parts = [f"GOAL: {goal_s}"]
        if obs.get("url"):
            parts[0] += f"\nURL: {obs['url']}"
        parts.append(
            "RULES:\n" + "\n".join(f"- {r}" for r in (DEFAULT_RULES if rules is None else rules))
        )
        if error:
            parts.append(f"LAST ERROR: {error}")
        shown = steps[len(steps) - n_steps :] if n_steps else []
        hidden = len(history) - n_steps
        lines = [f"({hidden} earlier steps not shown)"] if hidden else []
        lines += [f"{hidden + i + 1}. {line}" for i, line in enumerate(render_history(shown))]
        parts.append("HISTORY (your previous actions):\n" + ("\n".join(lines) or "(none yet)"))
        el_lines = elements[:n_elements]
        if len(elements) > n_elements:
            el_lines.append(f"... ({len(elements) - n_elements} more elements not shown)")
        parts.append("ELEMENTS:\n" + ("\n".join(el_lines) if el_lines else "(none)"))
        if text_chars is not None:
            body = page_text[:text_chars] or "(none)"
            cut = len(page_text) - text_chars + pre_cut
            if cut:
                body += f"\n... ({cut} more characters not shown)"
            parts.append("PAGE TEXT:\n" + body)
        elif page_text:
            parts.append(f"PAGE TEXT: ({len(page_text) + pre_cut} characters not shown)")
        if images:
            parts.append("A screenshot of the page is attached.")
        user = _SECTION_SEP.join(parts)
        if system_role:
            return [{"role": "system", "content": FORMAT_BLOCK}, {"role": "user", "content": user}]
        return [{"role": "user", "content": FORMAT_BLOCK + _SECTION_SEP + user}]

    def fits(messages: list[dict[str, Any]]) -> bool:
        return count(_SECTION_SEP.join(m["content"] for m in messages)) <= budget_tokens

    # Cut in order: page text, elements, history, goal; each by binary search on
    # how much is kept, since counting is monotone in it.
    state: dict[str, Any] = {
        "goal": goal_text,
        "steps": len(steps),
        "elements": len(elements),
        "text": len(page_text),
    }

    def attempt(**change: Any) -> list[dict[str, Any]]:
        s = {**state, **change}
        return render(s["goal"], s["steps"], s["elements"], s["text"])

    messages = attempt()
    if not fits(messages):
        keep = _largest_fitting(len(page_text), lambda n: fits(attempt(text=n)))
        state["text"] = keep if keep is not None and keep >= _MIN_TEXT_KEEP else None
        if state["text"] is None:
            state["elements"] = (
                _largest_fitting(len(elements), lambda n: fits(attempt(elements=n))) or 0
            )
            if not fits(attempt()):
                state["steps"] = _largest_fitting(len(steps), lambda n: fits(attempt(steps=n))) or 0
                if not fits(attempt()):
                    n = _largest_fitting(
                        len(goal_text), lambda n: fits(attempt(goal=_cut(goal_text, n)))
                    )
                    state["goal"] = _cut(goal_text, n or 0)
        messages = attempt()

    truncation = {
        "budget_tokens": budget_tokens,
        "tokens": count(_SECTION_SEP.join(m["content"] for m in messages)),
        "text_chars_cut": len(page_text) + pre_cut - (state["text"] or 0),
        "elements_cut": len(elements) - state["elements"],
        "history_cut": len(steps) - state["steps"],
        "goal_cut": state["goal"] != goal_text,
        "over_budget": not fits(messages),
    }
    if demonstration is not None:
        messages[-1] = {
            **messages[-1],
            "content": messages[-1]["content"]
            + _SECTION_SEP
            + f"{DEMO_BEGIN}\n{demonstration.strip()}\n{DEMO_END}",
        }
    return Prompt(messages=messages, images=images, truncation=truncation)


def _largest_fitting(upper: int, ok: Callable[[int], bool]) -> int | None:
    """The largest ``n`` in ``[0, upper]`` with ``ok(n)``, assuming ``ok`` is
    monotone (true up to some point); ``None`` if even 0 does not fit."""
    if not ok(0):
        return None
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _cut(text: str, n: int) -> str:
    return text if n >= len(text) else text[:n] + "…"
