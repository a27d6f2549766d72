"""What every scripted policy shares: the per-step context, the registry and
small readers of the observation.

A policy is a plain function ``policy(ctx) -> Decision``. It sees only what an
agent sees (``ctx.goal`` and ``ctx.obs``: elements, page text, URL) plus a
per-episode ``ctx.memory`` dict for facts it has to remember between steps
(e.g. which tabs it already opened). It never reads the page's JavaScript or
the task's answer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from browser_env.actions import Action, Verb

__all__ = [
    "POLICIES",
    "Context",
    "Decision",
    "ExpertError",
    "click",
    "describe",
    "expert",
    "find",
    "quoted",
    "task_from_url",
    "type_into",
]

Element = Mapping[str, Any]


class ExpertError(RuntimeError):
    """The page is not in a state the scripted policy knows how to handle."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """The next action and one sentence that says why (a demonstration text)."""

    action: Action
    rationale: str


@dataclasses.dataclass
class Context:
    """What a policy may look at: the goal, the current observation, the step
    index within the episode and a scratch dict that lives for one episode."""

    task: str
    goal: str
    obs: Mapping[str, Any]
    step: int
    memory: dict[str, Any]

    @property
    def elements(self) -> list[Element]:
        return [e for e in self.obs.get("elements") or () if e.get("enabled", 1)]

    @property
    def text(self) -> str:
        return str(self.obs.get("text") or "")


Policy = Callable[[Context], Decision]
POLICIES: dict[str, Policy] = {}


def expert(*tasks: str) -> Callable[[Policy], Policy]:
    """Register the decorated function as the policy for each of ``tasks``."""

    def register(policy: Policy) -> Policy:
        for task in tasks:
            if task in POLICIES:
                raise ValueError(f"two experts for {task!r}")
            POLICIES[task] = policy
        return policy

    return register


_TASK_URL = re.compile(r"/miniwob/([^/?#]+)\.html")


def task_from_url(url: str) -> str:
    """``.../miniwob/click-button.html?x`` -> ``click-button`` ("" if not MiniWoB)."""
    match = _TASK_URL.search(url or "")
    return match.group(1) if match else ""


def quoted(goal: str) -> list[str]:
    """The double-quoted strings of ``goal``, in order."""
    return re.findall(r'"([^"]*)"', goal)


def name_of(element: Element) -> str:
    return " ".join(str(element.get("text") or element.get("label") or "").split())


def describe(element: Element) -> str:
    """``e5 (button "okay")``: how rationales name an element."""
    kind = element.get("role") or element.get("tag") or "element"
    name = name_of(element)
    return (
        f'{element["element_id"]} ({kind} "{name}")'
        if name
        else f"{element['element_id']} ({kind})"
    )


def find(
    elements: Iterable[Element],
    *,
    text: str | None = None,
    roles: Sequence[str] = (),
    tags: Sequence[str] = (),
    exact_case: bool = True,
) -> list[Element]:
    """Elements whose name equals ``text`` (case-sensitive unless told) and whose
    role or tag is one of ``roles``/``tags`` (either list may be empty)."""
    out = []
    for element in elements:
        kind_ok = element.get("role") in roles or element.get("tag") in tags
        if (roles or tags) and not kind_ok:
            continue
        if text is not None:
            name = name_of(element)
            if (name != text) if exact_case else (name.lower() != text.lower()):
                continue
        out.append(element)
    return out


def by_position(elements: Iterable[Element]) -> list[Element]:
    """Top-to-bottom, then left-to-right, by bounding box."""
    return sorted(elements, key=lambda e: (round(float(e["bbox"][1])), float(e["bbox"][0])))


def textboxes(ctx: Context) -> list[Element]:
    return by_position(find(ctx.elements, roles=("textbox", "searchbox", "spinbutton")))


def button(ctx: Context, label: str) -> Element:
    """The button named ``label`` (any case), or :class:`ExpertError`."""
    found = find(ctx.elements, text=label, roles=("button",), tags=("button",), exact_case=False)
    if not found:
        raise ExpertError(f"no {label!r} button on the page")
    return found[0]


def click(element: Element, rationale: str) -> Decision:
    return Decision(Action(Verb.CLICK, str(element["element_id"]), reasoning=rationale), rationale)


def covered(element: Element, elements: Iterable[Element]) -> Element | None:
    """An element listed after ``element`` (so painted over it, for these
    absolutely placed widgets) whose box holds ``element``'s centre, if any."""
    x, y, w, h = (float(v) for v in element["bbox"])
    cx, cy = x + w / 2, y + h / 2
    after = False
    for other in elements:
        if other["element_id"] == element["element_id"]:
            after = True
            continue
        ox, oy, ow, oh = (float(v) for v in other["bbox"])
        if after and ox <= cx <= ox + ow and oy <= cy <= oy + oh:
            return other
    return None


def press(element: Element, elements: Iterable[Element], rationale: str) -> Decision:
    """Click ``element``; if another element covers its centre, where a click
    would land, focus it and press Enter instead (a button's keyboard click)."""
    cover = covered(element, elements)
    if cover is None:
        return click(element, rationale)
    rationale = (
        f"{rationale} {describe(cover)} covers its centre, so activate it with the keyboard."
    )
    return Decision(
        Action(Verb.PRESS_ENTER, str(element["element_id"]), reasoning=rationale), rationale
    )


def type_into(element: Element, text: str, rationale: str) -> Decision:
    return Decision(
        Action(Verb.TYPE, str(element["element_id"]), text, reasoning=rationale), rationale
    )


def fill_then_submit(
    ctx: Context, fields: Sequence[tuple[Element, str, str]], submit: str = "Submit"
) -> Decision:
    """Type each ``(element, text, why)`` whose live value differs, then click
    the ``submit`` button: a form policy that reads its progress off the page."""
    for element, text, why in fields:
        if str(element.get("value") or "") != text:
            return type_into(element, text, why)
    target = button(ctx, submit)
    return click(
        target, f"Every field holds what the goal asks for, so submit with {describe(target)}."
    )
