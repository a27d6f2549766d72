"""Choice tasks: checkboxes, radio buttons, lists and per-row toggles."""

from __future__ import annotations

import re

from agents.experts.base import (
    Context,
    Decision,
    ExpertError,
    button,
    click,
    describe,
    expert,
    find,
    name_of,
    type_into,
)


@expert("click-checkboxes", "click-checkboxes-large", "click-checkboxes-transfer")
def click_checkboxes(ctx: Context) -> Decision:
    match = re.search(r"Select (.*) and click Submit", ctx.goal)
    if not match:
        raise ExpertError(f"cannot read the items from {ctx.goal!r}")
    listed = match.group(1).strip()
    wanted = set() if listed == "nothing" else {w.strip() for w in listed.split(",")}
    for box in find(ctx.elements, roles=("checkbox",)):
        should = name_of(box) in wanted
        if bool(box.get("checked")) != should:
            why = (
                f'The goal lists "{name_of(box)}", and {describe(box)} is not ticked yet.'
                if should
                else f'The goal does not list "{name_of(box)}", so untick {describe(box)}.'
            )
            return click(box, why)
    target = button(ctx, "Submit")
    return click(
        target, f"Exactly the listed boxes ({listed}) are ticked, so click {describe(target)}."
    )


@expert("click-option")
def click_option(ctx: Context) -> Decision:
    match = re.search(r"Select (.*) and click Submit", ctx.goal)
    if not match:
        raise ExpertError(f"cannot read the option from {ctx.goal!r}")
    label = match.group(1).strip()
    radios = find(ctx.elements, text=label, roles=("radio",))
    if not radios:
        raise ExpertError(f"no radio button {label!r}")
    if not radios[0].get("checked"):
        return click(
            radios[0], f'The goal asks to select "{label}"; that option is {describe(radios[0])}.'
        )
    target = button(ctx, "Submit")
    return click(target, f'"{label}" is selected, so click {describe(target)}.')


@expert("choose-list")
def choose_list(ctx: Context) -> Decision:
    match = re.search(r"Select (.*) from the list", ctx.goal)
    if not match:
        raise ExpertError(f"cannot read the item from {ctx.goal!r}")
    item = match.group(1).strip()
    lists = [e for e in ctx.elements if e.get("tag") == "select"]
    if not lists:
        raise ExpertError("no list on the page")
    if str(lists[0].get("value") or "") != item:
        return type_into(
            lists[0], item, f'The goal asks for "{item}" in the list {describe(lists[0])}.'
        )
    target = button(ctx, "Submit")
    return click(target, f'The list shows "{item}", so click {describe(target)}.')


@expert("odd-or-even")
def odd_or_even(ctx: Context) -> Decision:
    # Each row reads "Odd <number> Even" in the page text, top to bottom.
    numbers = [int(n) for n in re.findall(r"^\s*(-?\d+)\s*$", ctx.text, re.M)]
    odd = find(ctx.elements, text="Odd", roles=("button",), tags=("button",))
    even = find(ctx.elements, text="Even", roles=("button",), tags=("button",))
    if not numbers or not (len(numbers) == len(odd) == len(even)):
        raise ExpertError(f"{len(numbers)} numbers but {len(odd)} Odd and {len(even)} Even buttons")
    marked: int = ctx.memory.setdefault("marked", 0)
    if marked < len(numbers):
        ctx.memory["marked"] = marked + 1
        n = numbers[marked]
        parity = "odd" if n % 2 else "even"
        target = (odd if n % 2 else even)[marked]
        return click(
            target,
            f"Row {marked + 1} shows {n}, which is {parity}, so mark it with {describe(target)}.",
        )
    target = button(ctx, "Submit")
    return click(target, f"All {len(numbers)} numbers are marked, so click {describe(target)}.")
