"""Scripted experts for the Nimbus account site (``sites.account.*``)."""

from __future__ import annotations

import re

from agents.experts.base import Context, Decision, ExpertError, click, describe
from agents.experts.sites.base import (
    button,
    consent,
    field,
    fill,
    finish,
    goal_quotes,
    link,
    page_path,
    query,
    site_expert,
)

SIGN_IN = r'^Sign in as "[^"]+" with password "[^"]+"'


def _prelude(ctx: Context) -> Decision | None:
    """The cookie banner, then the login gate, with the goal's credentials."""
    if decision := consent(ctx):
        return decision
    if page_path(ctx) == "/login":
        user, password = goal_quotes(ctx, 2)[:2]
        decision = fill(ctx, [("Username", user), ("Password", password)])
        return decision or button(ctx, "Sign in", "The credentials are typed; sign in.")
    return None


def _settings(ctx: Context, page: str, fields: list[tuple[str, str]], submit: str) -> Decision:
    """On settings page ``page``: fill ``fields``, then save once."""
    if decision := _prelude(ctx):
        return decision
    if page_path(ctx) != f"/{page.lower()}":
        return link(ctx, page, f"The {page} page holds the setting to change.")
    if decision := fill(ctx, fields):
        return decision
    if query(ctx).get("saved") == "1" and ctx.memory.get("saved") == page:
        return finish("", "The change is saved.")
    ctx.memory["saved"] = page
    return button(ctx, submit, f'The form holds the new values; press "{submit}".')


def _checkbox(ctx: Context, label: str, on: bool) -> Decision | None:
    for element in ctx.elements:
        if (
            element.get("role") == "checkbox"
            and " ".join(str(element.get("label") or "").split()) == label
        ):
            if bool(element.get("checked")) != on:
                state = "on" if on else "off"
                return click(element, f'Turn "{label}" {state}: {describe(element)}.')
            return None
    raise ExpertError(f"no checkbox {label!r}")


@site_expert("sites.account.change-email", SIGN_IN + r", then change the account email")
def change_email(ctx: Context) -> Decision:
    email = goal_quotes(ctx, 3)[2]
    return _settings(ctx, "Profile", [("Email", email)], "Save profile")


@site_expert("sites.account.notifications", SIGN_IN + r", then turn off")
def notifications(ctx: Context) -> Decision:
    off, on = goal_quotes(ctx, 4)[2:4]
    if (decision := _prelude(ctx)) or page_path(ctx) != "/notifications":
        return decision or link(ctx, "Notifications", "Notification switches are on that page.")
    if decision := _checkbox(ctx, off, False) or _checkbox(ctx, on, True):
        return decision
    return button(ctx, "Save notifications", "Both switches are set; save.")


@site_expert("sites.account.privacy", SIGN_IN + r", then set profile visibility")
def privacy(ctx: Context) -> Decision:
    visibility = goal_quotes(ctx, 3)[2]
    if (decision := _prelude(ctx)) or page_path(ctx) != "/privacy":
        return decision or link(ctx, "Privacy", "Visibility is a privacy setting.")
    if decision := fill(ctx, [("Profile visibility", visibility)]) or _checkbox(
        ctx, "Show my email on my profile", False
    ):
        return decision
    return button(ctx, "Save privacy", "Visibility and email display are set; save.")


@site_expert("sites.account.change-password", SIGN_IN + r", then change your password")
def change_password(ctx: Context) -> Decision:
    password, new = goal_quotes(ctx, 3)[1:3]
    fields = [("Current password", password), ("New password", new), ("Confirm new password", new)]
    return _settings(ctx, "Security", fields, "Change password")


@site_expert("sites.account.add-address", SIGN_IN + r", then add the address")
def add_address(ctx: Context) -> Decision:
    street, city, code = goal_quotes(ctx, 5)[2:5]
    fields = [("Street", street), ("City", city), ("Postal code", code)]
    return _settings(ctx, "Addresses", fields, "Add address")


@site_expert("sites.account.read-phone", SIGN_IN + r"\. What phone number")
def read_phone(ctx: Context) -> Decision:
    if (decision := _prelude(ctx)) or page_path(ctx) != "/profile":
        return decision or link(ctx, "Profile", "The phone number is on the profile page.")
    phone = str(field(ctx, "Phone").get("value") or "")
    if not re.search(r"\d", phone):
        raise ExpertError("no phone number")
    return finish(phone, f"The profile's Phone field holds {phone}.")


@site_expert("sites.account.language-sign-out", SIGN_IN + r", set the language to")
def language_sign_out(ctx: Context) -> Decision:
    language = goal_quotes(ctx, 3)[2]
    if (decision := _prelude(ctx)) or page_path(ctx) != "/profile":
        return decision or link(ctx, "Profile", "Language is a profile setting.")
    if decision := fill(ctx, [("Language", language)]):
        return decision
    if query(ctx).get("saved") != "1":
        return button(ctx, "Save profile", "The language is chosen; save it.")
    return button(ctx, "Sign out", "The language is saved; sign out as asked.")
