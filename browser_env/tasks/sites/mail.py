"""Webmail: folders with pagination, search, message pages with reply, forward,
archive, delete and star, and a compose form. Sent mail and folder moves live
on the server, where goals are judged."""

from __future__ import annotations

import dataclasses
import random
import re

from browser_env.tasks.sites.common import (
    Goal,
    Request,
    Response,
    Session,
    Site,
    Verdict,
    answer_check,
    esc,
    layout,
    not_found,
    redirect,
)

__all__ = ["SITE"]

ME = "you@postbox.test"
PEOPLE = (
    ("Anna Berg", "anna.berg@northwind.test"),
    ("Anna Bergman", "a.bergman@fabrikam.test"),
    ("Carlos Mendes", "carlos@contoso.test"),
    ("Carla Mendez", "carla.mendez@contoso.test"),
    ("Priya Shah", "priya.shah@tailspin.test"),
    ("Priya Shaw", "pshaw@litware.test"),
    ("Jon Eriksen", "jon.e@adatum.test"),
    ("IT Helpdesk", "helpdesk@postbox.test"),
    ("Travel Desk", "travel@postbox.test"),
)
TOPICS = ("Budget review", "Quarterly report", "Team offsite", "Project kickoff", "Contract renewal",
          "Design feedback", "Hiring plan", "Server migration", "Customer visit", "Training schedule")  # fmt: skip
ROOMS = ("Room 2.14", "Room 3.07", "Room 1.22", "Room 4.01", "Room 2.09")
WORDS = ("Thanks, see you there", "Sounds good to me", "I will send it by Friday", "Count me in")
FOLDERS = ("Inbox", "Archive", "Sent", "Trash")
PER_PAGE = 8


@dataclasses.dataclass
class Message:
    mid: int
    folder: str
    sender: str
    address: str
    to: str
    subject: str
    body: str
    date: str
    starred: bool = False
    reply_to: int | None = None
    forward_of: int | None = None


@dataclasses.dataclass
class World:
    messages: list[Message]

    def get(self, mid: int) -> Message | None:
        return next((m for m in self.messages if m.mid == mid), None)

    def sent(self) -> list[Message]:
        return [m for m in self.messages if m.folder == "Sent" and m.mid >= 1000]


def build(rng: random.Random) -> World:
    messages = []
    for i in range(26):
        sender, address = rng.choice(PEOPLE)
        topic = rng.choice(TOPICS)
        subject = topic if rng.random() < 0.7 else f"Re: {topic}"
        body = (
            f"Hi,\n\nAbout the {topic.lower()}: we meet in {rng.choice(ROOMS)} on "
            f"{rng.choice(('Monday', 'Tuesday', 'Thursday'))} at {rng.randint(9, 16)}:00.\n\nBest,\n{sender}"
        )
        messages.append(
            Message(
                i + 1, "Inbox", sender, address, ME, subject, body, f"Mar {28 - i if i < 27 else 1}"
            )
        )
    return World(messages)


def _rows(session: Session, messages: list[Message], q: str = "") -> str:
    rows = "".join(
        f"<tr><td>{'&#9733;' if m.starred else ''}</td>"
        f'<td><a href="{esc(session.url(f"/message/{m.mid}", q=q))}">{esc(m.sender)}: {esc(m.subject)}</a></td>'
        f"<td>{esc(m.folder)}</td><td>{esc(m.date)}</td></tr>"
        for m in messages
    )
    return f"<table>{rows}</table>" if rows else "<p>No messages.</p>"


def _search_box(session: Session, q: str = "") -> str:
    return (
        f'<form action="{esc(session.url("/search"))}"><label for="q">Search mail</label> '
        f'<input id="q" name="q" type="search" value="{esc(q)}"> <button>Search</button></form>'
    )


def _folder(session: Session, request: Request, name: str, flash: str = "") -> Response:
    world: World = session.world
    messages = [m for m in world.messages if m.folder == name]
    page = int(request.arg("page", "1")) if request.arg("page", "1").isdigit() else 1
    pages = max(1, -(-len(messages) // PER_PAGE))
    page = min(max(page, 1), pages)
    pager = "".join(
        f'<a href="{esc(session.url(f"/folder/{name.lower()}", page=n))}">{"Page " + str(n) if n != page else f"[{n}]"}</a>'
        for n in range(1, pages + 1)
    )
    note = {"sent": "Your message was sent.", "moved": "Done."}.get(request.arg("note"), "")
    body = (
        f"{_search_box(session)}{f'<p class=flash>{note}</p>' if note else ''}<h1>{esc(name)}</h1>"
        f"{_rows(session, messages[(page - 1) * PER_PAGE : page * PER_PAGE])}<div class='pager'>{pager}</div>"
    )
    return Response(200, layout(session, name, body))


def _message(session: Session, message: Message, q: str) -> Response:
    actions = "".join(
        f'<form method="post" action="{esc(session.url(f"/message/{message.mid}/{verb.lower()}", q=q))}" '
        f'style="display:inline"><button>{verb}</button></form> '
        for verb in ("Archive", "Delete", "Unstar" if message.starred else "Star")
    )
    body = (
        f"<h1>{esc(message.subject)}</h1><p>From: {esc(message.sender)} &lt;{esc(message.address)}&gt;<br>"
        f"To: {esc(message.to)}<br>Date: {esc(message.date)}</p>"
        f'<p><a href="{esc(session.url("/compose", reply=message.mid))}">Reply</a> '
        f'<a href="{esc(session.url("/compose", forward=message.mid))}">Forward</a></p>{actions}'
        f'<pre style="white-space:pre-wrap">{esc(message.body)}</pre>'
    )
    return Response(200, layout(session, message.subject, body))


def _compose(session: Session, request: Request) -> Response:
    world: World = session.world
    to = subject = text = ""
    ref = ""
    if request.arg("reply").isdigit() and (m := world.get(int(request.arg("reply")))):
        to, subject = m.address, m.subject if m.subject.startswith("Re: ") else f"Re: {m.subject}"
        text = "\n\n> " + m.body.replace("\n", "\n> ")
        ref = f'<input type="hidden" name="reply" value="{m.mid}">'
    elif request.arg("forward").isdigit() and (m := world.get(int(request.arg("forward")))):
        subject = f"Fwd: {m.subject}"
        text = f"\n\n---------- Forwarded message ----------\nFrom: {m.sender} <{m.address}>\n\n{m.body}"
        ref = f'<input type="hidden" name="forward" value="{m.mid}">'
    body = (
        f'<h1>New message</h1><form class="stack" method="post" action="{esc(session.url("/send"))}">{ref}'
        f'<div><label for="to">To</label> <input id="to" name="to" value="{esc(to)}"></div>'
        f'<div><label for="subject">Subject</label> <input id="subject" name="subject" value="{esc(subject)}"></div>'
        f'<div><label for="body">Message</label><br><textarea id="body" name="body" rows="6" cols="60">{esc(text)}</textarea></div>'
        "<button>Send</button></form>"
    )
    return Response(200, layout(session, "Compose", body))


def route(session: Session, request: Request) -> Response:
    world: World = session.world
    path, post = request.path, request.method == "POST"
    if path == "/":
        return _folder(session, request, "Inbox")
    if match := re.fullmatch(r"/folder/(\w{1,10})", path):
        name = match.group(1).capitalize()
        return _folder(session, request, name) if name in FOLDERS else not_found(session, "folder")
    if path == "/search":
        q = request.arg("q").strip().casefold()
        found = [
            m
            for m in world.messages
            if q
            and m.folder == "Inbox"
            and any(q in f.casefold() for f in (m.sender, m.subject, m.body))
        ]
        rows = _rows(session, found, request.arg("q"))
        body = f"{_search_box(session, request.arg('q'))}<h1>Search results (inbox)</h1>{rows}"
        return Response(200, layout(session, "Search", body))
    if match := re.fullmatch(r"/message/(\d{1,6})(?:/(archive|delete|star|unstar))?", path):
        message = world.get(int(match.group(1)))
        if message is None:
            return not_found(session, "message")
        verb = match.group(2)
        if verb is None:
            return _message(session, message, request.arg("q"))
        if not post:
            return redirect(session.url(f"/message/{message.mid}"))
        if verb in ("star", "unstar"):
            message.starred = verb == "star"
            return redirect(session.url(f"/message/{message.mid}"))
        message.folder = "Archive" if verb == "archive" else "Trash"
        if request.arg("q"):  # opened from a search: back to its results
            return redirect(session.url("/search", q=request.arg("q")))
        return redirect(session.url("/folder/inbox", note="moved"))
    if path == "/compose":
        return _compose(session, request)
    if path == "/send" and post:
        to, subject, text = (request.arg(k).strip() for k in ("to", "subject", "body"))
        if "@" not in to or not subject:
            return _compose(session, request)
        mid = 1000 + len(world.sent())
        reply = int(request.arg("reply")) if request.arg("reply").isdigit() else None
        forward = int(request.arg("forward")) if request.arg("forward").isdigit() else None
        world.messages.append(
            Message(mid, "Sent", "You", ME, to, subject, text, "Mar 29", False, reply, forward)
        )
        return redirect(session.url("/folder/inbox", note="sent"))
    return not_found(session)


# --- goals ---------------------------------------------------------------------


def _unique(rng: random.Random, world: World) -> Message:
    """An older inbox message (past the first page) whose (sender, subject) pair is unique."""
    while True:
        m = rng.choice(world.messages[PER_PAGE:])
        if sum((o.sender, o.subject) == (m.sender, m.subject) for o in world.messages) == 1:
            return m


def _sent_check(ok, what: str):
    def check(world: World, answer: str | None) -> Verdict:
        sent = world.sent()
        if not sent:
            return Verdict(False, answer is not None, "nothing was sent")
        good = ok(sent[-1])
        return Verdict(
            good, True, f"{what} was sent" if good else f"the sent message is not {what}"
        )

    return check


def reply(rng: random.Random, world: World) -> Goal:
    m = _unique(rng, world)
    text = rng.choice(WORDS)
    goal = f'Reply to the email from "{m.sender}" about "{m.subject}" with the message "{text}".'
    return Goal(
        goal,
        _sent_check(
            lambda s: s.reply_to == m.mid and s.to == m.address and text in s.body, "the reply"
        ),
    )


def forward(rng: random.Random, world: World) -> Goal:
    m = _unique(rng, world)
    name, address = rng.choice([p for p in PEOPLE if p[0] != m.sender])
    goal = f'Forward the email from "{m.sender}" about "{m.subject}" to "{address}".'
    return Goal(
        goal, _sent_check(lambda s: s.forward_of == m.mid and s.to == address, "the forward")
    )


def compose(rng: random.Random, world: World) -> Goal:
    _, address = rng.choice(PEOPLE)
    subject, text = rng.choice(TOPICS), rng.choice(WORDS)
    goal = f'Send a new email to "{address}" with the subject "{subject}" and the message "{text}".'
    return Goal(
        goal,
        _sent_check(
            lambda s: (
                s.to == address
                and s.subject == subject
                and s.body == text
                and s.reply_to is None
                and s.forward_of is None
            ),
            "the email",
        ),
    )


def _moved(rng: random.Random, world: World, folder: str, verb: str) -> Goal:
    m = _unique(rng, world)
    goal = f'{verb} the email from "{m.sender}" about "{m.subject}".'

    def check(w: World, answer: str | None) -> Verdict:
        moved = [o for o in w.messages if o.mid < 1000 and o.folder != "Inbox"]
        if not moved:
            return Verdict(False, answer is not None, "nothing was moved")
        ok = [o.mid for o in moved] == [m.mid] and moved[0].folder == folder
        return Verdict(ok, True, f"moved to {folder}" if ok else "the wrong email was moved")

    return Goal(goal, check)


def archive(rng: random.Random, world: World) -> Goal:
    return _moved(rng, world, "Archive", "Archive")


def delete(rng: random.Random, world: World) -> Goal:
    return _moved(rng, world, "Trash", "Delete")


def archive_sender(rng: random.Random, world: World) -> Goal:
    name, address = rng.choice(PEOPLE[:6])  # the near-duplicate names
    for m in rng.sample(world.messages, 2):  # at least two of theirs
        m.sender, m.address = name, address
    want = {m.mid for m in world.messages if m.address == address}
    goal = f'Archive every email from "{name}", and nothing else.'

    def check(w: World, answer: str | None) -> Verdict:
        moved = {o.mid for o in w.messages if o.mid < 1000 and o.folder != "Inbox"}
        if moved - want:
            return Verdict(False, True, "an email from someone else was moved")
        if moved == want and all(w.get(i).folder == "Archive" for i in want):
            return Verdict(True, True, f"all {len(want)} emails archived")
        return Verdict(False, answer is not None, f"{len(moved)} of {len(want)} archived")

    return Goal(goal, check)


def meeting_room(rng: random.Random, world: World) -> Goal:
    m = _unique(rng, world)
    room = re.search(r"Room \d\.\d\d", m.body).group(0)
    goal = f'In which room is the meeting in the email from "{m.sender}" about "{m.subject}"? Answer with FINISH and the room.'
    return Goal(goal, answer_check(room, "the room"))


SITE = Site(
    name="mail",
    title="Postbox Mail",
    build=build,
    route=route,
    templates={
        "reply": reply,
        "forward": forward,
        "compose": compose,
        "archive": archive,
        "delete": delete,
        "archive-sender": archive_sender,
        "meeting-room": meeting_room,
    },
    nav=(
        ("Inbox", "/"),
        ("Archive", "/folder/archive"),
        ("Sent", "/folder/sent"),
        ("Trash", "/folder/trash"),
        ("Compose", "/compose"),
    ),
    ads=(
        "Upgrade to Postbox Pro",
        "Anna's bakery: fresh bread daily",
        "Meeting rooms to rent downtown",
        "Your storage is almost full",
    ),
)
