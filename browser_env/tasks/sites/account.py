"""Account: a login gate and settings pages (profile, notifications, privacy,
security, addresses). Goals change a setting and are judged from the saved
account on the server, or read a saved value back (FINISH)."""

from __future__ import annotations

import dataclasses
import random
from urllib.parse import quote

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

USERS = ("mara.k", "tom_h", "lina.p", "oscar88", "ruth.b", "kenji_t")
NAMES = ("Mara Klein", "Tom Hughes", "Lina Park", "Oscar Diaz", "Ruth Bell", "Kenji Tanaka")
LANGUAGES = ("English", "Deutsch", "Español", "Français", "Italiano", "Português")
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
VISIBILITY = ("Public", "Friends only", "Private")
NOTIFICATIONS = (
    "Email updates",
    "Email digest",
    "SMS alerts",
    "Push notifications",
    "Weekly newsletter",
)
WORDS = ("amber", "falcon", "river", "maple", "cobalt", "tundra", "lotus", "ember")
STREETS = ("19 Birch Road", "5 Quay Street", "240 Hill Crescent", "77 Market Square")
CITIES = ("Northam", "Eastwick", "Westford", "Southport")
PAGES = ("Profile", "Notifications", "Privacy", "Security", "Addresses")


@dataclasses.dataclass
class World:
    username: str
    password: str
    name: str
    email: str
    phone: str
    language: str
    timezone: str
    visibility: str
    show_email: bool
    notifications: dict[str, bool]
    addresses: list[tuple[str, str, str]]
    signed_in: bool = False
    sign_ins: int = 0


def build(rng: random.Random) -> World:
    i = rng.randrange(len(USERS))
    return World(
        username=USERS[i],
        password=f"{rng.choice(WORDS)}-{rng.randint(100, 999)}",
        name=NAMES[i],
        email=f"{USERS[i].replace('_', '.')}@example.org",
        phone=f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
        language=rng.choice(LANGUAGES),
        timezone=rng.choice(TIMEZONES),
        visibility=rng.choice(VISIBILITY),
        show_email=rng.random() < 0.5,
        notifications={n: rng.random() < 0.5 for n in NOTIFICATIONS},
        addresses=[(rng.choice(STREETS), rng.choice(CITIES), f"{rng.randint(10000, 99999)}")],
    )


def _select(name: str, label: str, values: tuple[str, ...], current: str) -> str:
    opts = "".join(
        f"<option{' selected' if v == current else ''}>{esc(v)}</option>" for v in values
    )
    return f'<div><label for="{name}">{label}</label> <select id="{name}" name="{name}">{opts}</select></div>'


def _text(name: str, label: str, value: str = "", kind: str = "text") -> str:
    return (
        f'<div><label for="{name}">{label}</label> '
        f'<input id="{name}" name="{name}" type="{kind}" value="{esc(value)}"></div>'
    )


def _check(name: str, label: str, on: bool) -> str:
    return (
        f'<div><input type="checkbox" id="{name}" name="{name}"{" checked" if on else ""}> '
        f'<label for="{name}">{esc(label)}</label></div>'
    )


def _form(session: Session, action: str, inner: str, submit: str) -> str:
    return (
        f'<form class="stack" method="post" action="{esc(session.url(action))}">'
        f"{inner}<button>{esc(submit)}</button></form>"
    )


def _settings_page(session: Session, title: str, body: str, saved: bool) -> Response:
    menu = " | ".join(f'<a href="{esc(session.url("/" + p.lower()))}">{p}</a>' for p in PAGES)
    flash = "<p class='flash'>Your changes were saved.</p>" if saved else ""
    signout = _form(session, "/logout", "", "Sign out")
    page = f"<p>{menu}</p><h1>{esc(title)}</h1>{flash}{body}<hr>{signout}"
    return Response(200, layout(session, title, page))


def _login(session: Session, next_path: str, error: str = "") -> Response:
    world: World = session.world
    body = (
        f"<h1>Sign in</h1>{error}"
        + _form(
            session,
            f"/login?next={quote(next_path)}",
            _text("username", "Username")
            + _text("password", "Password", kind="password")
            + _check("remember", "Remember me", False),
            "Sign in",
        )
        + f'<p><a href="{esc(session.url("/forgot"))}">Forgot password?</a></p>'
    )
    del world
    return Response(200, layout(session, "Sign in", body))


def route(session: Session, request: Request) -> Response:
    world: World = session.world
    path, form = request.path, request.form
    if path == "/forgot":
        body = (
            "<h1>Reset password</h1><p>Password resets are sent by post within 10 working days.</p>"
        )
        return Response(200, layout(session, "Reset password", body))
    if path == "/login":
        next_path = request.query.get("next", "/")
        next_path = (
            next_path if next_path.startswith("/") and not next_path.startswith("//") else "/"
        )
        if request.method == "POST":
            if form.get("username") == world.username and form.get("password") == world.password:
                world.signed_in = True
                world.sign_ins += 1
                return redirect(session.url(next_path))
            return _login(session, next_path, "<p class='error'>Wrong username or password.</p>")
        return _login(session, next_path)
    if not world.signed_in:
        return redirect(session.url("/login", next=path))
    saved = request.query.get("saved") == "1"
    post = request.method == "POST"
    if path == "/":
        body = f"<p>Welcome back, {esc(world.name)}. Choose a settings page above.</p>"
        return _settings_page(session, "Your account", body, False)
    if path == "/logout" and post:
        world.signed_in = False
        return redirect(session.url("/login"))
    if path == "/profile":
        if post:
            world.name = form.get("name", world.name).strip() or world.name
            world.email = form.get("email", world.email).strip() or world.email
            world.phone = form.get("phone", world.phone).strip() or world.phone
            if form.get("language") in LANGUAGES:
                world.language = form["language"]
            if form.get("timezone") in TIMEZONES:
                world.timezone = form["timezone"]
            return redirect(session.url("/profile", saved=1))
        inner = (
            _text("name", "Display name", world.name)
            + _text("email", "Email", world.email)
            + _text("phone", "Phone", world.phone)
            + _select("language", "Language", LANGUAGES, world.language)
            + _select("timezone", "Time zone", TIMEZONES, world.timezone)
        )
        return _settings_page(
            session, "Profile", _form(session, "/profile", inner, "Save profile"), saved
        )
    if path == "/notifications":
        keys = {n: f"n{i}" for i, n in enumerate(NOTIFICATIONS)}
        if post:
            world.notifications = {n: keys[n] in form for n in NOTIFICATIONS}
            return redirect(session.url("/notifications", saved=1))
        inner = "".join(_check(keys[n], n, world.notifications[n]) for n in NOTIFICATIONS)
        return _settings_page(
            session,
            "Notifications",
            _form(session, "/notifications", inner, "Save notifications"),
            saved,
        )
    if path == "/privacy":
        if post:
            if form.get("visibility") in VISIBILITY:
                world.visibility = form["visibility"]
            world.show_email = "show_email" in form
            return redirect(session.url("/privacy", saved=1))
        inner = _select("visibility", "Profile visibility", VISIBILITY, world.visibility) + _check(
            "show_email", "Show my email on my profile", world.show_email
        )
        return _settings_page(
            session, "Privacy", _form(session, "/privacy", inner, "Save privacy"), saved
        )
    if path == "/security":
        error = ""
        if post:
            new, confirm = form.get("new", ""), form.get("confirm", "")
            if form.get("current") != world.password:
                error = "<p class='error'>The current password is wrong.</p>"
            elif len(new) < 6 or new != confirm:
                error = "<p class='error'>The new passwords must match and have 6 or more characters.</p>"
            else:
                world.password = new
                return redirect(session.url("/security", saved=1))
        inner = (
            _text("current", "Current password", kind="password")
            + _text("new", "New password", kind="password")
            + _text("confirm", "Confirm new password", kind="password")
        )
        return _settings_page(
            session,
            "Security",
            error + _form(session, "/security", inner, "Change password"),
            saved,
        )
    if path == "/addresses":
        if post:
            entry = tuple(form.get(k, "").strip() for k in ("street", "city", "postcode"))
            if all(entry):
                world.addresses.append(entry)  # type: ignore[arg-type]
                return redirect(session.url("/addresses", saved=1))
        rows = "".join(f"<li>{esc(', '.join(a))}</li>" for a in world.addresses)
        inner = _text("street", "Street") + _text("city", "City") + _text("postcode", "Postal code")
        body = f"<h2>Saved addresses</h2><ul>{rows}</ul><h2>Add an address</h2>" + _form(
            session, "/addresses", inner, "Add address"
        )
        return _settings_page(session, "Addresses", body, saved)
    return not_found(session)


# --- goals ---------------------------------------------------------------------


def _sign_in(world: World) -> str:
    return f'Sign in as "{world.username}" with password "{world.password}"'


def _state_goal(text: str, met) -> Goal:
    def check(world: World, answer: str | None) -> Verdict:
        if met(world):
            return Verdict(True, True, "the account was changed as asked")
        return Verdict(False, False, "the account does not show the change yet")

    return Goal(text, check)


def change_email(rng: random.Random, world: World) -> Goal:
    email = f"{world.username.split('.')[0].split('_')[0]}.{rng.choice(WORDS)}@mail.test"
    return _state_goal(
        f'{_sign_in(world)}, then change the account email to "{email}".',
        lambda w: w.email == email,
    )


def notifications(rng: random.Random, world: World) -> Goal:
    off, on = rng.sample(NOTIFICATIONS, 2)
    world.notifications[off], world.notifications[on] = True, False
    return _state_goal(
        f'{_sign_in(world)}, then turn off "{off}" and turn on "{on}" notifications; keep the others as they are.',
        lambda w, before=dict(world.notifications): (
            w.notifications == {**before, off: False, on: True}
        ),
    )


def privacy(rng: random.Random, world: World) -> Goal:
    visibility = rng.choice([v for v in VISIBILITY if v != world.visibility])
    world.show_email = True
    return _state_goal(
        f'{_sign_in(world)}, then set profile visibility to "{visibility}" and stop showing your email on your profile.',
        lambda w: w.visibility == visibility and not w.show_email,
    )


def change_password(rng: random.Random, world: World) -> Goal:
    new = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randint(10, 99)}"
    return _state_goal(
        f'{_sign_in(world)}, then change your password to "{new}".', lambda w: w.password == new
    )


def add_address(rng: random.Random, world: World) -> Goal:
    entry = (
        f"{rng.randint(2, 400)} {rng.choice(('Cedar', 'Pine', 'Rowan'))} Lane",
        rng.choice(CITIES),
        f"{rng.randint(10000, 99999)}",
    )
    return _state_goal(
        f'{_sign_in(world)}, then add the address "{entry[0]}", "{entry[1]}", postal code "{entry[2]}".',
        lambda w: entry in w.addresses,
    )


def read_phone(rng: random.Random, world: World) -> Goal:
    text = f"{_sign_in(world)}. What phone number is saved in your profile? Answer with FINISH and the number."
    return Goal(text, answer_check(world.phone, "the phone number"))


def language_sign_out(rng: random.Random, world: World) -> Goal:
    language = rng.choice([x for x in LANGUAGES if x != world.language])
    text = f'{_sign_in(world)}, set the language to "{language}", save it, and sign out.'

    def check(w: World, answer: str | None) -> Verdict:
        if w.signed_in or w.sign_ins == 0:
            return Verdict(False, False, "still signed in")
        ok = w.language == language
        return Verdict(
            ok, True, "language saved, signed out" if ok else f"language is {w.language}"
        )

    return Goal(text, check)


SITE = Site(
    name="account",
    title="Nimbus Account",
    build=build,
    route=route,
    templates={
        "change-email": change_email,
        "notifications": notifications,
        "privacy": privacy,
        "change-password": change_password,
        "add-address": add_address,
        "read-phone": read_phone,
        "language-sign-out": language_sign_out,
    },
    nav=(("Account", "/"), ("Help", "/forgot")),
    ads=(
        "Nimbus Premium: 3 months free",
        "Secure your account with Nimbus Vault",
        "Change your password? Try PassKeeper",
        "Upgrade storage to 2 TB",
    ),
)
