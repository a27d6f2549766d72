"""Scripted experts for the Wayfare travel site (``sites.travel.*``)."""

from __future__ import annotations

import datetime as dt
import re

from agents.experts.base import Context, Decision, ExpertError, click, describe, find
from agents.experts.sites.base import (
    button,
    consent,
    field,
    fill,
    finish,
    goal_quotes,
    has,
    link,
    page_path,
    query,
    site_expert,
)

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")  # fmt: skip


def _pick_date(ctx: Context, day: dt.date) -> Decision | None:
    """Choose ``day`` in the date picker: open it, page months, click the day."""
    if field(ctx, "Departure date").get("value") == day.isoformat():
        return None
    header = re.search(r"Calendar: (\w+) (\d{4})", ctx.text)
    if header is None or not has(ctx, "Next month", ("button",)):
        return button(ctx, "Choose date", "The date field is read-only; open its calendar.")
    shown = (int(header.group(2)), MONTHS.index(header.group(1)) + 1)
    if shown < (day.year, day.month):
        return button(ctx, "Next month", f"The calendar shows {header.group(1)}; go forward.")
    if shown > (day.year, day.month):
        return button(ctx, "Previous month", f"The calendar shows {header.group(1)}; go back.")
    target = find(ctx.elements, text=str(day.day), roles=("button",))
    if not target:
        raise ExpertError(f"no day {day.day} in the calendar")
    return click(target[0], f"Pick day {day.day} of {header.group(1)}: {describe(target[0])}.")


def _book(ctx: Context, *, sort: str, nonstop: bool = False) -> Decision:
    if decision := consent(ctx):
        return decision
    quotes = goal_quotes(ctx, 4)
    frm, to, email, names = quotes[0], quotes[1], quotes[-1], quotes[2:-1]
    day = dt.datetime.strptime(
        re.search(r" on (\w+ \d+, \d{4})", ctx.goal).group(1), "%B %d, %Y"
    ).date()
    cabin = re.search(r"(Economy|Business|Premium economy) flight", ctx.goal).group(1)
    path = page_path(ctx)
    if path.startswith("/booking/"):
        code = re.search(r"Confirmation code: ([A-Z0-9]{6})", ctx.text).group(1)
        return finish(code, f"The booking is confirmed with code {code}.")
    if path == "/review":
        return button(ctx, "Confirm booking", "The trip and passengers are right; confirm.")
    if path == "/passengers":
        fields = []
        for i, name in enumerate(names, 1):
            first, last = name.split(" ", 1)
            fields += [(f"Passenger {i} first name", first), (f"Passenger {i} last name", last)]
        fields.append(("Email for the confirmation", email))
        return fill(ctx, fields) or button(
            ctx, "Continue to review", "Every passenger is filled in."
        )
    if path == "/results":
        if decision := fill(ctx, [("Sort by", sort)]):
            return decision
        box = next(e for e in ctx.elements if e.get("role") == "checkbox")
        if bool(box.get("checked")) != nonstop:
            return click(box, f"Set 'Nonstop only' to {nonstop}: {describe(box)}.")
        q = query(ctx)
        if q.get("sort", "Departure time") != sort or bool(q.get("nonstop")) != nonstop:
            return button(ctx, "Update results", "Apply the sorting and filter.")
        first = re.search(r"^(\w+ \d{3}) · ", ctx.text, re.M)
        if first is None:
            raise ExpertError("no flights listed")
        return button(ctx, f"Select {first.group(1)}", f"{first.group(1)} is first in this order.")
    if path != "/":
        return link(ctx, "Flights", "Start from the flight search.")
    if decision := fill(ctx, [("From", frm), ("To", to)]) or _pick_date(ctx, day):
        return decision
    if decision := fill(ctx, [("Passengers", str(len(names))), ("Cabin", cabin)]):
        return decision
    return button(ctx, "Search flights", "The search form is complete.")


@site_expert(
    "sites.travel.book-cheapest",
    r'^Book the cheapest (Economy|Premium economy) flight(?!.*" and ")',
)
def book_cheapest(ctx: Context) -> Decision:
    return _book(ctx, sort="Price")


@site_expert("sites.travel.book-business", r"^Book the cheapest Business flight")
def book_business(ctx: Context) -> Decision:
    return _book(ctx, sort="Price")


@site_expert("sites.travel.book-two", r'^Book the cheapest \w+ flight .* for "[^"]+" and "')
def book_two(ctx: Context) -> Decision:
    return _book(ctx, sort="Price")


@site_expert("sites.travel.book-nonstop", r"^Book the cheapest nonstop")
def book_nonstop(ctx: Context) -> Decision:
    return _book(ctx, sort="Price", nonstop=True)


@site_expert("sites.travel.book-earliest", r"^Book the earliest")
def book_earliest(ctx: Context) -> Decision:
    return _book(ctx, sort="Departure time")


@site_expert("sites.travel.lookup", r"^Your booking \"")
def lookup(ctx: Context) -> Decision:
    if decision := consent(ctx):
        return decision
    code, last = goal_quotes(ctx, 2)[:2]
    if page_path(ctx) != "/trips":
        return link(ctx, "Find my booking", "Bookings are looked up on the trips page.")
    found = re.search(rf"Booking {code}: .* departs at (\d\d:\d\d)", ctx.text)
    if found:
        return finish(found.group(1), f"The booking departs at {found.group(1)}.")
    if query(ctx).get("code") and not fill(ctx, [("Confirmation code", code), ("Last name", last)]):
        raise ExpertError("the booking was not found")
    return fill(ctx, [("Confirmation code", code), ("Last name", last)]) or button(
        ctx, "Find booking", "Look the booking up."
    )
