"""Text-field tasks: focus a field, type what the goal or the page says, submit.

Form policies read their progress off the page: a field whose live value
already equals the wanted text is done, and once all are done the policy
submits.
"""

from __future__ import annotations

import re

from agents.experts.base import (
    Context,
    Decision,
    ExpertError,
    click,
    describe,
    expert,
    fill_then_submit,
    find,
    name_of,
    quoted,
    textboxes,
    type_into,
)
from browser_env.actions import Action, Verb

_ORDINALS = {"1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4}


@expert("focus-text")
def focus_text(ctx: Context) -> Decision:
    boxes = textboxes(ctx)
    if not boxes:
        raise ExpertError("no textbox")
    return click(
        boxes[0], f"The goal asks to focus the textbox; clicking {describe(boxes[0])} focuses it."
    )


@expert("focus-text-2")
def focus_text_2(ctx: Context) -> Decision:
    match = re.search(r"(\d(?:st|nd|rd|th))", ctx.goal)
    if not match:
        raise ExpertError(f"no ordinal in {ctx.goal!r}")
    # The page lists its inputs in order; the observation keeps that order.
    boxes = [e for e in ctx.elements if e.get("role") == "textbox"]
    index = _ORDINALS[match.group(1)]
    target = boxes[index]
    return click(
        target,
        f"The goal asks for the {match.group(1)} input textbox, which is {describe(target)}.",
    )


@expert("enter-text", "enter-text-dynamic", "enter-password")
def enter_text(ctx: Context) -> Decision:
    text = quoted(ctx.goal)[0]
    boxes = textboxes(ctx)
    what = "password" if "password" in ctx.goal else "text"
    fields = [
        (
            box,
            text,
            f'The goal asks for the {what} "{text}" in every field; {describe(box)} does not hold it yet.',
        )
        for box in boxes
    ]
    return fill_then_submit(ctx, fields)


@expert("enter-text-2")
def enter_text_2(ctx: Context) -> Decision:
    text = quoted(ctx.goal)[0]
    upper = "upper case" in ctx.goal
    wanted = text.upper() if upper else text.lower()
    case = "upper" if upper else "lower"
    box = textboxes(ctx)[0]
    why = f'The goal wants "{text}" in all {case} case letters, so type "{wanted}" into {describe(box)}.'
    return fill_then_submit(ctx, [(box, wanted, why)])


@expert("login-user")
def login_user(ctx: Context) -> Decision:
    username, password = quoted(ctx.goal)[:2]
    # The page's labels read "Username" then "Password", one above each field.
    user_box, pass_box = textboxes(ctx)[:2]
    return fill_then_submit(
        ctx,
        [
            (
                user_box,
                username,
                f'The first field, under "Username", {describe(user_box)}, takes "{username}".',
            ),
            (
                pass_box,
                password,
                f'The second field, under "Password", {describe(pass_box)}, takes "{password}".',
            ),
        ],
        submit="Login",
    )


@expert("enter-time")
def enter_time(ctx: Context) -> Decision:
    match = re.search(r"(\d{1,2}):(\d{2})\s*([AP]M)", ctx.goal)
    if not match:
        raise ExpertError(f"no time in {ctx.goal!r}")
    hour, minute, half = match.groups()
    box = textboxes(ctx)[0]
    if ctx.memory.get("typed"):
        return fill_then_submit(ctx, [])
    ctx.memory["typed"] = True
    # A time field is typed as hour, minute and AM/PM keys in that order.
    keys = f"{int(hour):02d}{minute}{half}"
    why = f"The time field {describe(box)} needs {hour}:{minute} {half}; type the keys {keys}."
    return fill_then_submit(ctx, [(box, keys, why)])


@expert("copy-paste")
def copy_paste(ctx: Context) -> Decision:
    boxes = [e for e in ctx.elements if e.get("role") == "textbox"]
    sources = [e for e in boxes if e.get("tag") == "textarea"]
    targets = [e for e in boxes if e.get("tag") == "input"]
    if not sources or not targets:
        raise ExpertError("expected a textarea and a text input")
    text = str(sources[0].get("value") or "")
    why = f"The textarea {describe(sources[0])} holds the text to copy; put it into {describe(targets[0])}."
    return fill_then_submit(ctx, [(targets[0], text, why)])


@expert("read-table")
def read_table(ctx: Context) -> Decision:
    match = re.search(r"value of (.+?) into", ctx.goal)
    if not match:
        raise ExpertError(f"no field name in {ctx.goal!r}")
    key = match.group(1)
    rows = dict(_table_rows(ctx.text))
    if key not in rows:
        raise ExpertError(f"the table has no row {key!r}")
    box = textboxes(ctx)[0]
    why = f'The table row "{key}" reads "{rows[key]}"; type it into {describe(box)}.'
    return fill_then_submit(ctx, [(box, rows[key], why)])


def _table_rows(text: str) -> list[tuple[str, str]]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) == 2 and all(cells):
            rows.append((cells[0], cells[1]))
    return rows


_ARITHMETIC = re.compile(r"^\s*(-?\d+)\s*([-+x])\s*(-?\d+)\s*=\s*$", re.M)
_ALGEBRA = re.compile(r"^\s*(x|-?\d+)\s*([-+])\s*(x|-?\d+)\s*=\s*(-?\d+)\s*$", re.M)


@expert("simple-arithmetic")
def simple_arithmetic(ctx: Context) -> Decision:
    match = _ARITHMETIC.search(ctx.text)
    if not match:
        raise ExpertError("no arithmetic problem on the page")
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    answer = a + b if op == "+" else a - b if op == "-" else a * b
    box = textboxes(ctx)[0]
    why = f"The page asks {a} {op} {b}, which is {answer}; type it into {describe(box)}."
    return fill_then_submit(ctx, [(box, str(answer), why)])


@expert("simple-algebra")
def simple_algebra(ctx: Context) -> Decision:
    match = _ALGEBRA.search(ctx.text)
    if not match:
        raise ExpertError("no equation on the page")
    left, op, right, total = match.group(1), match.group(2), match.group(3), int(match.group(4))
    if left == "x":  # x + d = t  or  x - d = t
        d = int(right)
        answer = total - d if op == "+" else total + d
    else:  # d + x = t  or  d - x = t
        d = int(left)
        answer = total - d if op == "+" else d - total
    box = textboxes(ctx)[0]
    equation = f"{left} {op} {right} = {total}"
    why = f"Solving {equation} gives x = {answer}; type it into {describe(box)}."
    return fill_then_submit(ctx, [(box, str(answer), why)])


@expert("enter-date")
def enter_date(ctx: Context) -> Decision:
    match = re.search(r"(\d{2})/(\d{2})/(\d{4})", ctx.goal)
    if not match:
        raise ExpertError(f"no date in {ctx.goal!r}")
    month, day, year = match.groups()
    box = textboxes(ctx)[0]
    # A date field reports its value as YYYY-MM-DD whatever way it was typed.
    if str(box.get("value") or "") != f"{year}-{month}-{day}":
        return type_into(
            box,
            match.group(0),
            f"The goal asks for the date {match.group(0)}; type it into the date field {describe(box)}.",
        )
    return fill_then_submit(ctx, [])


_AUTOCOMPLETE = re.compile(r'starts with "([^"]+)"(?: and ends with "([^"]+)")?')
_AUTOCOMPLETE_WAIT = "The suggestion menu opens a moment after typing; wait for it."


@expert("use-autocomplete")
def use_autocomplete(ctx: Context) -> Decision:
    match = _AUTOCOMPLETE.search(ctx.goal)
    if not match:
        raise ExpertError(f"cannot read the prefix from {ctx.goal!r}")
    start, end = match.group(1), match.group(2) or ""
    box = textboxes(ctx)[0]
    value = str(box.get("value") or "")
    if ctx.memory.get("picked") and value.startswith(start) and value.endswith(end):
        return fill_then_submit(ctx, [])
    if value != start:
        return type_into(
            box,
            start,
            f'The item must start with "{start}"; type that into {describe(box)} to get suggestions.',
        )
    items = [e for e in find(ctx.elements, tags=("li",)) if name_of(e)]
    fits = [e for e in items if name_of(e).startswith(start) and name_of(e).endswith(end)]
    if not fits:
        waits = ctx.memory.get("waits", 0)
        if items or waits >= 4:
            raise ExpertError(f"no suggestion starts with {start!r} and ends with {end!r}")
        ctx.memory["waits"] = waits + 1
        return Decision(
            Action(Verb.WAIT, value="500", reasoning=_AUTOCOMPLETE_WAIT), _AUTOCOMPLETE_WAIT
        )
    item = fits[0]
    ctx.memory["picked"] = True
    rule = f'starts with "{start}"' + (f' and ends with "{end}"' if end else "")
    if item.get("visible", 1):
        return click(item, f"The suggestion {describe(item)} {rule}; pick it.")
    return type_into(
        box,
        name_of(item),
        f"The suggestion {describe(item)} {rule} but lies off screen; type it into {describe(box)}.",
    )


#: multi-layouts / multi-orderings: which field a label names (the page's label
#: words: "Genre", "Movie Genre", "Director Name", "Year", "Released Date").
_MOVIE_FIELDS = (("genre", "genre"), ("director", "director"), ("year", "year"), ("date", "year"))


@expert("multi-layouts", "multi-orderings")
def movie_search(ctx: Context) -> Decision:
    """Three text fields in a random order and layout, each named by its label:
    type the goal's genre, director and year into the field its label names,
    then press the form's one other control (Submit, Search or Go!)."""
    match = re.search(
        r"Search for (.+?) movies directed by (.+?) from year (\d{4})", ctx.goal, re.IGNORECASE
    )
    if not match:
        raise ExpertError(f"no genre, director and year in {ctx.goal!r}")
    wanted = dict(zip(("genre", "director", "year"), match.groups(), strict=True))
    fields = []
    for box in textboxes(ctx):
        label = str(box.get("name") or name_of(box))  # the observation's accessible name
        field = next((f for word, f in _MOVIE_FIELDS if word in label.lower()), None)
        if field is None or field not in wanted:
            raise ExpertError(f"no field of its own named by the label of {describe(box)}")
        why = f'The field named "{label}", {describe(box)}, takes the {field} "{wanted[field]}".'
        fields.append((box, wanted.pop(field), why))
    if wanted:
        raise ExpertError(f"no field for the {', '.join(wanted)}")
    for box, text, why in fields:
        if str(box.get("value") or "") != text:
            return type_into(box, text, why)
    controls = [
        e
        for e in ctx.elements
        if e.get("role") not in ("textbox", "searchbox", "spinbutton")
        and re.fullmatch(r"submit|search|go!?", str(e.get("name") or name_of(e)), re.IGNORECASE)
    ]
    if len(controls) != 1:
        raise ExpertError(f"expected one submit control, found {len(controls)}")
    return click(
        controls[0],
        f"Every field holds what the goal asks for, so submit with {describe(controls[0])}.",
    )
