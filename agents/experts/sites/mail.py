"""Scripted experts for Postbox webmail (``sites.mail.*``)."""

from __future__ import annotations

import re

from agents.experts.base import Context, Decision, ExpertError, click, name_of, type_into
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
    site_expert,
)


def _search(ctx: Context, term: str) -> Decision:
    box = field(ctx, "Search mail")
    if box.get("value") != term:
        return type_into(box, term, f'Search the mail for "{term}".')
    return button(ctx, "Search", "Run the search.")


def _open(ctx: Context, sender: str, subject: str) -> Decision | None:
    """Reach the message from ``sender`` about ``subject`` (None once there)."""
    path = page_path(ctx)
    if (
        path.startswith("/message/")
        and re.search(rf"^{re.escape(subject)}$", ctx.text, re.M)
        and (f"From: {sender} <" in ctx.text)
    ):
        return None
    row = f"{sender}: {subject}"
    if has(ctx, row, ("link",)):
        return link(
            ctx, row, f'The row "{row}" is the email the goal means (exact sender and subject).'
        )
    if path == "/search" and ctx.memory.get("searched") == subject:
        raise ExpertError(f"no email {row!r}")
    if path == "/search":
        ctx.memory["searched"] = (
            subject if field(ctx, "Search mail").get("value") == subject else None
        )
    return _search(ctx, subject)


def _compose(ctx: Context, fields: list[tuple[str, str]]) -> Decision:
    return fill(ctx, fields) or button(ctx, "Send", "The message is ready; send it.")


@site_expert("sites.mail.reply", r"^Reply to the email from")
def reply(ctx: Context) -> Decision:
    sender, subject, text = goal_quotes(ctx, 3)[:3]
    if decision := consent(ctx):
        return decision
    if page_path(ctx) == "/compose":
        return _compose(ctx, [("Message", text)])
    return _open(ctx, sender, subject) or link(ctx, "Reply", "This is the email; reply to it.")


@site_expert("sites.mail.forward", r"^Forward the email from")
def forward(ctx: Context) -> Decision:
    sender, subject, address = goal_quotes(ctx, 3)[:3]
    if decision := consent(ctx):
        return decision
    if page_path(ctx) == "/compose":
        return _compose(ctx, [("To", address)])
    return _open(ctx, sender, subject) or link(ctx, "Forward", "This is the email; forward it.")


@site_expert("sites.mail.compose", r"^Send a new email to")
def compose(ctx: Context) -> Decision:
    address, subject, text = goal_quotes(ctx, 3)[:3]
    if decision := consent(ctx):
        return decision
    if page_path(ctx) == "/compose":
        return _compose(ctx, [("To", address), ("Subject", subject), ("Message", text)])
    return link(ctx, "Compose", "Start a new message.")


@site_expert("sites.mail.archive", r"^Archive the email from")
def archive(ctx: Context) -> Decision:
    sender, subject = goal_quotes(ctx, 2)[:2]
    return (
        consent(ctx) or _open(ctx, sender, subject) or button(ctx, "Archive", "Archive this email.")
    )


@site_expert("sites.mail.delete", r"^Delete the email from")
def delete(ctx: Context) -> Decision:
    sender, subject = goal_quotes(ctx, 2)[:2]
    return (
        consent(ctx) or _open(ctx, sender, subject) or button(ctx, "Delete", "Delete this email.")
    )


@site_expert("sites.mail.archive-sender", r"^Archive every email from")
def archive_sender(ctx: Context) -> Decision:
    sender = goal_quotes(ctx, 1)[0]
    if decision := consent(ctx):
        return decision
    path = page_path(ctx)
    if path.startswith("/message/"):
        if f"From: {sender} <" not in ctx.text:
            raise ExpertError("opened an email from someone else")
        return button(ctx, "Archive", f"This email is from {sender}; archive it.")
    if path == "/search":
        rows = [
            e
            for e in ctx.elements
            if e.get("role") == "link" and name_of(e).startswith(f"{sender}: ")
        ]
        if rows:
            return click(
                rows[0], f"{name_of(rows[0])} is from {sender} exactly (not a similar name)."
            )
        if field(ctx, "Search mail").get("value") == sender:
            return finish("", f"No email from {sender} is left in the inbox.")
    return _search(ctx, sender)


@site_expert("sites.mail.meeting-room", r"^In which room is the meeting")
def meeting_room(ctx: Context) -> Decision:
    sender, subject = goal_quotes(ctx, 2)[:2]
    if decision := consent(ctx) or _open(ctx, sender, subject):
        return decision
    room = re.search(r"Room \d\.\d\d", ctx.text.split("Sponsored")[0])
    if room is None:
        raise ExpertError("no room in the email")
    return finish(room.group(0), f"The email says the meeting is in {room.group(0)}.")
