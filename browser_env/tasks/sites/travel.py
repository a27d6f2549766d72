"""Travel: flight search with a date picker and selects, results with sorting,
filters and pagination, a passenger form, review and confirmation, and a
"find my booking" page. Bookings live on the server; the confirmation code is
answered with FINISH."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re
import string

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

AIRPORTS = (
    "Lisbon (LIS)", "Madrid (MAD)", "Paris (CDG)", "Berlin (BER)", "Rome (FCO)",
    "Vienna (VIE)", "Oslo (OSL)", "Dublin (DUB)",
)  # fmt: skip
AIRLINES = ("SkyJet", "Aerolux", "BlueWing", "NorthAir")
CABINS = {"Economy": 1.0, "Premium economy": 1.6, "Business": 2.8}
SORTS = ("Departure time", "Price", "Duration")
PER_PAGE = 4
FIRST = ("Ines", "Marco", "Sofia", "Jonas", "Aoife", "Pavel", "Leila", "Hugo")
LAST = ("Silva", "Rossi", "Novak", "Berg", "Walsh", "Costa", "Haddad", "Moreau")


@dataclasses.dataclass(frozen=True)
class Flight:
    fid: str
    airline: str
    number: int
    depart: str  # HH:MM
    arrive: str
    minutes: int
    stops: int
    price: int  # per passenger, in the cabin

    def line(self) -> str:
        stops = (
            "nonstop" if self.stops == 0 else f"{self.stops} stop" + ("s" if self.stops > 1 else "")
        )
        hours, mins = divmod(self.minutes, 60)
        return f"{self.airline} {self.number} · {self.depart} → {self.arrive} · {stops} · {hours}h {mins:02d}m · ${self.price}"


@dataclasses.dataclass
class Booking:
    code: str
    fid: str
    passengers: list[tuple[str, str]]
    email: str
    depart: str
    insurance: bool = False


@dataclasses.dataclass
class World:
    salt: int
    today: dt.date
    bookings: list[Booking] = dataclasses.field(default_factory=list)
    made: list[Booking] = dataclasses.field(default_factory=list)  # booked in this episode
    rng: random.Random = dataclasses.field(default_factory=random.Random)


def build(rng: random.Random) -> World:
    world = World(
        salt=rng.randrange(10**9), today=dt.date(2026, rng.randint(1, 10), rng.randint(1, 25))
    )
    world.rng = random.Random(world.salt)
    return world


def flights(world: World, frm: str, to: str, date: str, cabin: str) -> list[Flight]:
    """The flights of one search, a function of the world's salt and the search."""
    rng = random.Random(f"{world.salt}:{frm}:{to}:{date}")
    out = []
    departs = rng.sample(range(5 * 12, 22 * 12), 8)  # 5-minute slots, all distinct
    prices = rng.sample(range(60, 420), 8)
    for i in range(8):
        stops = rng.choice((0, 0, 1, 1, 2))
        minutes = rng.randint(90, 200) + stops * rng.randint(50, 110)
        start = departs[i] * 5
        end = (start + minutes) % (24 * 60)
        out.append(
            Flight(
                fid=f"{frm[-4:-1]}{to[-4:-1]}{date.replace('-', '')}{cabin[0]}{i}",
                airline=rng.choice(AIRLINES),
                number=rng.randint(100, 999),
                depart=f"{start // 60:02d}:{start % 60:02d}",
                arrive=f"{end // 60:02d}:{end % 60:02d}",
                minutes=minutes,
                stops=stops,
                price=int(prices[i] * CABINS[cabin]),
            )
        )
    return out


def _search_args(request: Request) -> tuple[str, str, str, str, int] | None:
    frm, to, date, cabin = (request.arg(k) for k in ("from", "to", "date", "cabin"))
    pax = request.arg("pax", "1")
    if frm not in AIRPORTS or to not in AIRPORTS or frm == to or cabin not in CABINS:
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date) or pax not in ("1", "2", "3", "4"):
        return None
    return frm, to, date, cabin, int(pax)


def _select(name: str, label: str, values, current: str) -> str:
    opts = "".join(
        f"<option{' selected' if v == current else ''}>{esc(v)}</option>" for v in values
    )
    return f'<div><label for="{name}">{label}</label> <select id="{name}" name="{name}">{opts}</select></div>'


def _home(session: Session, error: str = "") -> Response:
    world: World = session.world
    today = world.today.isoformat()
    last = (world.today + dt.timedelta(days=120)).isoformat()
    body = (
        f"<h1>Find flights</h1><p>Today is {world.today:%B} {world.today.day}, {world.today.year}.</p>{error}"
        f'<form class="stack" action="{esc(session.url("/results"))}">'
        + _select("from", "From", ("Choose departure", *AIRPORTS), "")
        + _select("to", "To", ("Choose destination", *AIRPORTS), "")
        + '<div><label for="date">Departure date</label> <input id="date" name="date" readonly '
        f'placeholder="YYYY-MM-DD" data-datepicker data-button="open-calendar" data-today="{today}" '
        f'data-min="{today}" data-max="{last}"> <button type="button" id="open-calendar">Choose date</button></div>'
        + _select("pax", "Passengers", ("1", "2", "3", "4"), "1")
        + _select("cabin", "Cabin", tuple(CABINS), "Economy")
        + "<button>Search flights</button></form>"
        + f'<p><a href="{esc(session.url("/trips"))}">Find my booking</a></p>'
    )
    return Response(200, layout(session, "Flights", body, scripts=("sites.js",)))


def _results(session: Session, request: Request) -> Response:
    args = _search_args(request)
    if args is None:
        return _home(session, "<p class='error'>Choose a departure, a destination and a date.</p>")
    frm, to, date, cabin, pax = args
    found = flights(session.world, frm, to, date, cabin)
    if request.arg("nonstop"):
        found = [f for f in found if f.stops == 0]
    sort = request.arg("sort", SORTS[0])
    key = {"Price": lambda f: f.price, "Duration": lambda f: f.minutes}.get(
        sort, lambda f: f.depart
    )
    found.sort(key=key)
    page = int(request.arg("page", "1")) if request.arg("page", "1").isdigit() else 1
    pages = max(1, -(-len(found) // PER_PAGE))
    page = min(max(page, 1), pages)
    keep = {k: request.arg(k) for k in ("from", "to", "date", "pax", "cabin")}
    hidden = "".join(f'<input type="hidden" name="{k}" value="{esc(v)}">' for k, v in keep.items())
    checked = " checked" if request.arg("nonstop") else ""
    controls = (
        f'<form class="filters" action="{esc(session.url("/results"))}">{hidden}'
        + _select("sort", "Sort by", SORTS, sort)
        + f'<div><input type="checkbox" id="nonstop" name="nonstop" value="1"{checked}> '
        '<label for="nonstop">Nonstop only</label> <button>Update results</button></div></form>'
    )
    rows = "".join(
        f'<div class="result">{esc(f.line())} '
        f'<form method="get" action="{esc(session.url("/passengers"))}" style="display:inline">{hidden}'
        f'<input type="hidden" name="fid" value="{f.fid}"><button>Select {esc(f.airline)} {f.number}</button></form></div>'
        for f in found[(page - 1) * PER_PAGE : page * PER_PAGE]
    )
    pager = "".join(
        f'<a href="{esc(session.url("/results", **keep, sort=sort, nonstop=request.arg("nonstop"), page=n))}">'
        f"{'Page ' + str(n) if n != page else f'[{n}]'}</a>"
        for n in range(1, pages + 1)
    )
    body = (
        f"<h1>{esc(frm)} to {esc(to)}</h1><p>{esc(date)} · {pax} passenger(s) · {esc(cabin)}</p>"
        f"{controls}{rows or '<p>No flights.</p>'}<div class='pager'>{pager}</div>"
    )
    return Response(200, layout(session, "Results", body))


def _flight(session: Session, request: Request) -> tuple[tuple, Flight] | None:
    args = _search_args(request)
    if args is None:
        return None
    match = [f for f in flights(session.world, *args[:4]) if f.fid == request.arg("fid")]
    return (args, match[0]) if match else None


def _passengers(session: Session, request: Request, error: str = "") -> Response:
    picked = _flight(session, request)
    if picked is None:
        return not_found(session, "flight")
    args, flight = picked
    keep = {k: request.arg(k) for k in ("from", "to", "date", "pax", "cabin", "fid")}
    hidden = "".join(f'<input type="hidden" name="{k}" value="{esc(v)}">' for k, v in keep.items())
    fields = "".join(
        f'<div><label for="first{i}">Passenger {i} first name</label> <input id="first{i}" name="first{i}"></div>'
        f'<div><label for="last{i}">Passenger {i} last name</label> <input id="last{i}" name="last{i}"></div>'
        for i in range(1, args[4] + 1)
    )
    body = (
        f"<h1>Passengers</h1><p>{esc(flight.line())}</p>{error}"
        f'<form class="stack" method="post" action="{esc(session.url("/review"))}">{hidden}{fields}'
        '<div><label for="email">Email for the confirmation</label> <input id="email" name="email" type="email"></div>'
        "<button>Continue to review</button></form>"
    )
    return Response(200, layout(session, "Passengers", body))


def _review(session: Session, request: Request) -> Response:
    picked = _flight(session, request)
    if picked is None:
        return not_found(session, "flight")
    args, flight = picked
    people = [
        (request.arg(f"first{i}").strip(), request.arg(f"last{i}").strip())
        for i in range(1, args[4] + 1)
    ]
    if not all(a and b for a, b in people) or "@" not in request.arg("email"):
        return _passengers(
            session, request, "<p class='error'>Fill in every name and an email.</p>"
        )
    keep = {k: request.arg(k) for k in ("from", "to", "date", "pax", "cabin", "fid", "email")}
    keep.update({f"first{i}": a for i, (a, _) in enumerate(people, 1)})
    keep.update({f"last{i}": b for i, (_, b) in enumerate(people, 1)})
    hidden = "".join(f'<input type="hidden" name="{k}" value="{esc(v)}">' for k, v in keep.items())
    names = "".join(f"<li>{esc(a)} {esc(b)}</li>" for a, b in people)
    body = (
        f"<h1>Review your trip</h1><p>{esc(flight.line())}</p><p>{esc(args[2])}</p><ul>{names}</ul>"
        f"<p>Total: ${flight.price * args[4]}</p>"
        f'<form class="stack" method="post" action="{esc(session.url("/confirm"))}">{hidden}'
        '<div><input type="checkbox" id="insurance" name="insurance"> <label for="insurance">Add travel insurance ($25)</label></div>'
        "<button>Confirm booking</button></form>"
    )
    return Response(200, layout(session, "Review", body))


def _confirm(session: Session, request: Request) -> Response:
    world: World = session.world
    picked = _flight(session, request)
    if picked is None or request.method != "POST":
        return not_found(session, "flight")
    args, flight = picked
    people = [
        (request.arg(f"first{i}").strip(), request.arg(f"last{i}").strip())
        for i in range(1, args[4] + 1)
    ]
    if not all(a and b for a, b in people):
        return redirect(session.url("/"))
    code = "".join(world.rng.choice(string.ascii_uppercase + string.digits) for _ in range(6))
    booking = Booking(
        code,
        flight.fid,
        people,
        request.arg("email"),
        flight.depart,
        bool(request.arg("insurance")),
    )
    world.bookings.append(booking)
    world.made.append(booking)
    return redirect(session.url(f"/booking/{code}"))


def _trips(session: Session, request: Request) -> Response:
    world: World = session.world
    result = ""
    if request.arg("code"):
        match = [
            b
            for b in world.bookings
            if b.code == request.arg("code").strip().upper()
            and any(
                last.casefold() == request.arg("last").strip().casefold()
                for _, last in b.passengers
            )
        ]
        result = (
            f"<p class='flash'>Booking {esc(match[0].code)}: flight {esc(match[0].fid)}, departs at {esc(match[0].depart)}.</p>"
            if match
            else "<p class='error'>No booking matches that code and last name.</p>"
        )
    body = (
        f"<h1>Find my booking</h1>{result}"
        f'<form class="stack" action="{esc(session.url("/trips"))}">'
        '<div><label for="code">Confirmation code</label> <input id="code" name="code"></div>'
        '<div><label for="last">Last name</label> <input id="last" name="last"></div>'
        "<button>Find booking</button></form>"
    )
    return Response(200, layout(session, "My trips", body))


def route(session: Session, request: Request) -> Response:
    path = request.path
    if path == "/":
        return _home(session)
    if path == "/results":
        return _results(session, request)
    if path == "/passengers":
        return _passengers(session, request)
    if path == "/review" and request.method == "POST":
        return _review(session, request)
    if path == "/confirm":
        return _confirm(session, request)
    if path == "/trips":
        return _trips(session, request)
    if match := re.fullmatch(r"/booking/([A-Z0-9]{6})", path):
        body = (
            f"<h1>Booked!</h1><p>Confirmation code: {esc(match.group(1))}</p>"
            "<p>Keep this code to manage your booking.</p>"
        )
        return Response(200, layout(session, "Booked", body))
    return not_found(session)


# --- goals ---------------------------------------------------------------------


def _trip(
    rng: random.Random, world: World, pax: int = 1
) -> tuple[str, str, dt.date, list[tuple[str, str]]]:
    frm, to = rng.sample(AIRPORTS, 2)
    day = world.today + dt.timedelta(days=rng.randint(3, 70))
    people = [(rng.choice(FIRST), rng.choice(LAST)) for _ in range(pax)]
    return frm, to, day, people


def _booking_goal(
    rng: random.Random, world: World, *, which: str, cabin: str = "Economy", pax: int = 1
) -> Goal:
    frm, to, day, people = _trip(rng, world, pax)
    found = flights(world, frm, to, day.isoformat(), cabin)
    if which == "nonstop":
        while not any(f.stops == 0 for f in found):
            frm, to, day, people = _trip(rng, world, pax)
            found = flights(world, frm, to, day.isoformat(), cabin)
        want = min((f for f in found if f.stops == 0), key=lambda f: f.price)
        what = f"the cheapest nonstop {cabin} flight"
    elif which == "earliest":
        want = min(found, key=lambda f: f.depart)
        what = f"the earliest {cabin} flight"
    else:
        want = min(found, key=lambda f: f.price)
        what = f"the cheapest {cabin} flight"
    names = " and ".join(f'"{a} {b}"' for a, b in people)
    email = f"{people[0][0].lower()}@travel.test"
    text = (
        f'Book {what} from "{frm}" to "{to}" on {day:%B} {day.day}, {day.year} for {names} '
        f'(email "{email}"). Answer with FINISH and the confirmation code.'
    )

    def check(w: World, answer: str | None) -> Verdict:
        if answer is None:
            return Verdict(False, False, "")
        if not w.made:
            return Verdict(False, True, "nothing was booked")
        booking = w.made[-1]
        if booking.fid != want.fid:
            return Verdict(False, True, "the wrong flight was booked")
        if booking.passengers != people or booking.email != email:
            return Verdict(False, True, "the passengers or email are wrong")
        if answer.strip().upper() != booking.code:
            return Verdict(False, True, f"the confirmation code is {booking.code}")
        return Verdict(True, True, "booked the right flight and answered its code")

    return Goal(text, check)


def book_cheapest(rng: random.Random, world: World) -> Goal:
    return _booking_goal(rng, world, which="cheapest")


def book_nonstop(rng: random.Random, world: World) -> Goal:
    return _booking_goal(rng, world, which="nonstop")


def book_earliest(rng: random.Random, world: World) -> Goal:
    return _booking_goal(rng, world, which="earliest")


def book_business(rng: random.Random, world: World) -> Goal:
    return _booking_goal(rng, world, which="cheapest", cabin="Business")


def book_two(rng: random.Random, world: World) -> Goal:
    return _booking_goal(rng, world, which="cheapest", pax=2)


def lookup(rng: random.Random, world: World) -> Goal:
    for _ in range(4):  # near-duplicate bookings: same names, other codes
        frm, to, day, people = _trip(rng, world)
        flight = rng.choice(flights(world, frm, to, day.isoformat(), "Economy"))
        code = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(6))
        world.bookings.append(Booking(code, flight.fid, people, "x@travel.test", flight.depart))
    booking = rng.choice(world.bookings)
    text = (
        f'Your booking "{booking.code}" is under the last name "{booking.passengers[0][1]}". '
        "At what time does its flight depart? Answer with FINISH and the time as HH:MM."
    )
    return Goal(text, answer_check(booking.depart, "the departure time"))


SITE = Site(
    name="travel",
    title="Wayfare Travel",
    build=build,
    route=route,
    templates={
        "book-cheapest": book_cheapest,
        "book-nonstop": book_nonstop,
        "book-earliest": book_earliest,
        "book-business": book_business,
        "book-two": book_two,
        "lookup": lookup,
    },
    nav=(("Flights", "/"), ("My trips", "/trips")),
    ads=(
        "Hotels in Lisbon from $39",
        "Rent a car: 20% off",
        "SkyJet sale: Paris from $19*",
        "Travel insurance you can trust",
    ),
)
