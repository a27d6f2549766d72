"""Click tasks: find the one element the goal names and click it."""

from __future__ import annotations

import re

from agents.experts.base import (
    Context,
    Decision,
    Element,
    ExpertError,
    button,
    click,
    describe,
    expert,
    find,
    name_of,
    press,
    quoted,
)
from browser_env.actions import Action, Verb

_BUTTON = ("button",)


@expert("click-test")
def click_test(ctx: Context) -> Decision:
    buttons = find(ctx.elements, roles=_BUTTON, tags=_BUTTON)
    if len(buttons) != 1:
        raise ExpertError(f"expected one button, found {len(buttons)}")
    return click(
        buttons[0], f"The goal asks to click the button; {describe(buttons[0])} is the only one."
    )


@expert("click-test-2", "click-test-transfer")
def click_named_button(ctx: Context) -> Decision:
    match = re.search(r"button (\S+?)\.?$", ctx.goal.strip())
    if not match:
        raise ExpertError(f"cannot read a button name from {ctx.goal!r}")
    target = button(ctx, match.group(1))
    why = f"The goal asks for button {match.group(1)}; that is {describe(target)}."
    return press(target, ctx.elements, why)


@expert("click-button", "unicode-test")
def click_quoted_button(ctx: Context) -> Decision:
    label = quoted(ctx.goal)[0]
    found = find(ctx.elements, text=label, roles=_BUTTON, tags=_BUTTON)
    if not found:
        raise ExpertError(f"no button {label!r}")
    return click(
        found[0], f'The goal asks for the "{label}" button; {describe(found[0])} is labelled so.'
    )


@expert("click-link")
def click_link(ctx: Context) -> Decision:
    label = quoted(ctx.goal)[0]
    found = find(ctx.elements, text=label)
    if not found:
        raise ExpertError(f"no link {label!r}")
    return click(
        found[0],
        f'The goal asks for the link "{label}"; {describe(found[0])} has exactly that text.',
    )


@expert("click-button-sequence")
def click_button_sequence(ctx: Context) -> Decision:
    names = re.findall(r"button (\w+)", ctx.goal)
    done: list[str] = ctx.memory.setdefault("clicked", [])
    name = names[len(done)] if len(done) < len(names) else names[-1]
    done.append(name)
    target = button(ctx, name)
    order = "first" if len(done) == 1 else "next"
    why = f"The goal orders the clicks {' then '.join(names)}; {order} is {describe(target)}."
    return press(target, ctx.elements, why)


_WIDGETS = {
    "button": lambda e: e.get("tag") == "button",
    "checkbox": lambda e: e.get("role") == "checkbox",
    "radio": lambda e: e.get("role") == "radio",
    "textarea": lambda e: e.get("tag") == "textarea",
    "text": lambda e: e.get("tag") == "input" and e.get("role") == "textbox",
}


@expert("click-widget")
def click_widget(ctx: Context) -> Decision:
    kind = quoted(ctx.goal)[0]
    if kind not in _WIDGETS:
        raise ExpertError(f"unknown widget kind {kind!r}")
    found = [e for e in ctx.elements if _WIDGETS[kind](e)]
    if not found:
        raise ExpertError(f"no {kind} widget")
    what = {"text": "a one-line text input", "textarea": "a multi-line textarea"}.get(
        kind, f"a {kind}"
    )
    return click(found[0], f'The goal asks for a "{kind}" widget; {describe(found[0])} is {what}.')


@expert("click-tab")
def click_tab(ctx: Context) -> Decision:
    match = re.search(r"(Tab #\d+)", ctx.goal)
    if not match:
        raise ExpertError(f"no tab in {ctx.goal!r}")
    tabs = find(ctx.elements, text=match.group(1), roles=("tab",))
    if not tabs:
        raise ExpertError(f"no {match.group(1)}")
    return click(tabs[0], f"The goal asks for {match.group(1)}; that tab is {describe(tabs[0])}.")


@expert("click-collapsible", "click-collapsible-nodelay")
def click_collapsible(ctx: Context) -> Decision:
    if not ctx.memory.get("expanded"):
        headers = [e for e in find(ctx.elements, roles=("tab",)) if name_is_section(e)]
        if not headers:
            raise ExpertError("no section header")
        ctx.memory["expanded"] = True
        return click(
            headers[0],
            f"The section is collapsed; clicking its header {describe(headers[0])} expands it.",
        )
    target = button(ctx, "Submit")
    return click(
        target, f"The section is now expanded, so click {describe(target)} as the goal says."
    )


def name_is_section(element: Element) -> bool:
    return str(element.get("text") or "").startswith("Section #")


@expert("click-tab-2", "click-tab-2-easy", "click-tab-2-medium")
def click_tab_2(ctx: Context) -> Decision:
    return _search_panels(ctx, panel_role="tab", noun="tab")


@expert("click-collapsible-2", "click-collapsible-2-nodelay")
def click_collapsible_2(ctx: Context) -> Decision:
    return _search_panels(
        ctx, panel_role="tab", noun="section", settle=ctx.task == "click-collapsible-2"
    )


_SETTLE = "The section is still sliding open; wait for it to settle before reading its links."


def _search_panels(ctx: Context, *, panel_role: str, noun: str, settle: bool = False) -> Decision:
    """Click the quoted link if it is in view; otherwise open the next panel
    (tab or accordion section) not yet opened."""
    label = quoted(ctx.goal)[0]
    if ctx.memory.pop("settle", False):
        return Decision(
            Action(Verb.WAIT, value="600", reasoning=_SETTLE),
            _SETTLE,
        )
    links = [
        e
        for e in find(ctx.elements, text=label)
        if e.get("role") not in (panel_role, "presentation", "tablist") and e.get("visible", 1)
    ]
    if links:
        return click(
            links[0], f'The link "{label}" is visible as {describe(links[0])}, so click it.'
        )
    headers = [e for e in find(ctx.elements, roles=(panel_role,)) if e.get("tag") != "ul"]
    opened: list[str] = ctx.memory.setdefault("opened", [])
    if noun == "tab" and not opened and headers:
        # The first tab is the one shown when the page loads.
        opened.append(str(headers[0]["element_id"]))
    headers = [e for e in headers if str(e["element_id"]) not in opened]
    if not headers:
        raise ExpertError(f"opened every {noun} and found no link {label!r}")
    opened.append(str(headers[0]["element_id"]))
    ctx.memory["settle"] = settle
    return click(
        headers[0],
        f'No visible link reads "{label}" yet; open the next {noun}, {describe(headers[0])}, to look there.',
    )


def _dialog_button(ctx: Context, label: str) -> tuple[Element, str]:
    """The button of the open dialog that ``label`` names, and how to say so.

    The dialog's "x" is its title-bar close button, named "Close" on the page."""
    dialogs = find(ctx.elements, roles=("dialog",))
    if not dialogs:
        raise ExpertError("no dialog on the page")
    x, y, w, h = (float(v) for v in dialogs[0]["bbox"])

    def inside(element: Element) -> bool:
        ex, ey, ew, eh = (float(v) for v in element["bbox"])
        cx, cy = ex + ew / 2, ey + eh / 2
        return x <= cx <= x + w and y <= cy <= y + h

    buttons = [e for e in find(ctx.elements, roles=_BUTTON, tags=_BUTTON) if inside(e)]
    if label.lower() in ("x", "×"):
        found = [e for e in buttons if name_of(e).lower() in ("close", "x", "×")]
        how = 'the "x" in its title bar is the close button'
    else:
        found = [e for e in buttons if name_of(e).lower() == label.lower()]
        how = f'its "{label}" button is'
    if not found:
        raise ExpertError(f"the dialog has no {label!r} button")
    return found[0], how


@expert("click-dialog", "click-dialog-2")
def click_dialog(ctx: Context) -> Decision:
    labels = quoted(ctx.goal)
    if not labels:
        raise ExpertError(f"no button named in {ctx.goal!r}")
    target, how = _dialog_button(ctx, labels[0])
    return click(
        target,
        f'The goal asks for the dialog\'s "{labels[0]}"; {how} {describe(target)}, so click it.',
    )
