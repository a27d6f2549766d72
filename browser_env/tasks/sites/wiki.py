"""Wiki: a seeded encyclopedia of invented countries, towns, rivers and people,
with full-text search (paginated), disambiguation pages and infoboxes. Every
goal is a question answered with FINISH and checked against the world."""

from __future__ import annotations

import dataclasses
import random
import re
from urllib.parse import quote, unquote

from browser_env.tasks.sites.common import (
    Goal,
    Request,
    Response,
    Session,
    Site,
    Verdict,
    esc,
    layout,
    not_found,
)

__all__ = ["SITE"]

SYLLABLES = ("bra", "dor", "vel", "mar", "low", "ost", "ka", "ren", "til", "sa", "nor", "the",
             "lin", "ga", "rup", "esk", "wen", "dal", "fen", "hol", "quar", "zi", "bel", "mon")  # fmt: skip
EXPORTS = (
    "copper",
    "timber",
    "wool",
    "salt",
    "olive oil",
    "tin",
    "amber",
    "coffee",
    "rice",
    "glass",
)
FIRST = ("Alma", "Boris", "Celia", "Dario", "Edda", "Felix", "Greta", "Hanno", "Ilse", "Jasper",
         "Kira", "Lukas", "Mina", "Nils", "Orla", "Piet")  # fmt: skip
PER_PAGE = 5
LINK = re.compile(r"\[\[([^\]|]+)(?:\|([^\]]+))?\]\]")


@dataclasses.dataclass
class Article:
    title: str
    infobox: list[tuple[str, str]]
    paragraphs: list[str]  # [[Title]] / [[Title|text]] are links


@dataclasses.dataclass
class Town:
    name: str
    title: str
    country: str
    population: int
    founded: int
    mayor: str
    mayor_born: int


@dataclasses.dataclass
class World:
    articles: dict[str, Article]
    countries: dict[str, dict[str, str]]
    towns: list[Town]
    ambiguous: list[str]


def _names(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        if name not in out and 5 <= len(name) <= 10:
            out.append(name)
    return out


def build(rng: random.Random) -> World:
    names = _names(rng, 26)
    country_names, town_names = names[:5], names[5:23]
    articles: dict[str, Article] = {}
    ambiguous = rng.sample(town_names, 6)
    towns = []
    used_people: set[str] = set()
    for i, name in enumerate(town_names):
        country = country_names[i % 5]
        while True:
            mayor = f"{rng.choice(FIRST)} {rng.choice(names[23:] + town_names)}"
            if mayor not in used_people:
                used_people.add(mayor)
                break
        title = f"{name} (town)" if name in ambiguous else name
        towns.append(
            Town(
                name,
                title,
                country,
                rng.randint(2_000, 900_000),
                rng.randint(900, 1900),
                mayor,
                rng.randint(1950, 1995),
            )
        )
    countries = {}
    for i, country in enumerate(country_names):
        capital = towns[i]
        export = rng.choice(EXPORTS)
        countries[country] = {"capital": capital.title, "export": export}
        others = ", ".join(
            f"[[{t.title}|{t.name}]]" for t in towns if t.country == country and t is not capital
        )
        articles[country] = Article(
            country,
            [
                ("Capital", capital.name),
                ("Currency", f"{country[:3]} mark"),
                ("Population", f"{rng.randint(1, 60)} million"),
            ],
            [
                f"{country} is a country whose capital is [[{capital.title}|{capital.name}]]. Other towns include {others}.",
                f"Economy. The main export of {country} is {export}; it also trades {rng.choice(EXPORTS)} with its neighbours.",
            ],
        )
    for town in towns:
        articles[town.title] = Article(
            town.title,
            [
                ("Country", town.country),
                ("Population", f"{town.population:,}"),
                ("Founded", str(town.founded)),
                ("Mayor", town.mayor),
            ],
            [
                f"{town.name} is a town in [[{town.country}]], founded in {town.founded}. Its mayor is [[{town.mayor}]].",
                f"History. Records of a settlement near {town.name} go back to {town.founded - rng.randint(50, 400)}; "
                f"the present town charter dates from {town.founded}.",
            ],
        )
        articles[town.mayor] = Article(
            town.mayor,
            [("Born", str(town.mayor_born)), ("Office", f"Mayor of {town.name}")],
            [
                f"{town.mayor} (born {town.mayor_born}) is the mayor of [[{town.title}|{town.name}]]."
            ],
        )
    for name in ambiguous:
        town = next(t for t in towns if t.name == name)
        articles[f"{name} (river)"] = Article(
            f"{name} (river)",
            [("Length", f"{rng.randint(40, 900)} km"), ("Source", "unknown")],
            [
                f"The {name} is a river that flows near [[{town.title}|the town of {name}]]. Its banks were settled in {rng.randint(900, 1900)}."
            ],
        )
        articles[f"{name} (album)"] = Article(
            f"{name} (album)",
            [("Released", str(rng.randint(1970, 2020))), ("Genre", "folk")],
            [f"{name} is an album named after the town. It was founded on old songs."],
        )
        articles[name] = Article(
            name,
            [],
            [
                f"{name} may refer to:",
                f"[[{town.title}]], a town in {town.country}",
                f"[[{name} (river)]], a river",
                f"[[{name} (album)]], a folk album",
            ],
        )
    articles["Openpedia:About"] = Article(
        "Openpedia:About", [], ["Openpedia is written by volunteers. Facts may be invented."]
    )
    return World(articles, countries, towns, ambiguous)


def _render(session: Session, text: str) -> str:
    parts, last = [], 0
    for match in LINK.finditer(text):
        parts.append(esc(text[last : match.start()]))
        title, label = match.group(1), match.group(2) or match.group(1)
        parts.append(f'<a href="{esc(session.url("/wiki/" + quote(title)))}">{esc(label)}</a>')
        last = match.end()
    parts.append(esc(text[last:]))
    return "".join(parts)


def _plain(text: str) -> str:
    return LINK.sub(lambda m: m.group(2) or m.group(1), text)


def _search_box(session: Session, q: str = "") -> str:
    return (
        f'<form action="{esc(session.url("/search"))}"><label for="q">Search the wiki</label> '
        f'<input id="q" name="q" type="search" value="{esc(q)}"> <button>Search</button></form>'
    )


def _article(session: Session, article: Article) -> str:
    box = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in article.infobox)
    box = f'<table class="infobox">{box}</table>' if box else ""
    paras = "".join(f"<p>{_render(session, p)}</p>" for p in article.paragraphs)
    return f"{_search_box(session)}<h1>{esc(article.title)}</h1>{box}{paras}"


def _search(session: Session, request: Request) -> str:
    world: World = session.world
    q = request.arg("q").strip()
    if not q:
        return _search_box(session) + "<p>Type something to search for.</p>"
    needle = q.casefold()
    titles = [a for a in world.articles.values() if needle in a.title.casefold()]
    mentions = [
        a
        for a in world.articles.values()
        if a not in titles and any(needle in _plain(p).casefold() for p in a.paragraphs)
    ]
    found = sorted(titles, key=lambda a: (len(a.title), a.title)) + sorted(
        mentions, key=lambda a: a.title
    )
    page = int(request.arg("page", "1")) if request.arg("page", "1").isdigit() else 1
    pages = max(1, -(-len(found) // PER_PAGE))
    page = min(max(page, 1), pages)
    rows = "".join(
        f'<div class="result"><a href="{esc(session.url("/wiki/" + quote(a.title)))}">{esc(a.title)}</a>'
        f"<div class='muted'>{esc(_plain(a.paragraphs[0])[:90])}</div></div>"
        for a in found[(page - 1) * PER_PAGE : page * PER_PAGE]
    )
    pager = "".join(
        f'<a href="{esc(session.url("/search", q=q, page=n))}">{"Page " + str(n) if n != page else f"[{n}]"}</a>'
        for n in range(1, pages + 1)
    )
    return (
        f"{_search_box(session, q)}<h1>Search results</h1><p>{len(found)} articles match.</p>"
        f"{rows or '<p>No results.</p>'}<div class='pager'>{pager}</div>"
    )


def route(session: Session, request: Request) -> Response:
    world: World = session.world
    if request.path == "/":
        body = _search_box(session) + (
            "<h1>Welcome to Openpedia</h1><p>The free encyclopedia of places that are not on your map.</p>"
            "<h2>Countries</h2><ul>"
            + "".join(
                f'<li><a href="{esc(session.url("/wiki/" + quote(c)))}">{esc(c)}</a></li>'
                for c in world.countries
            )
            + "</ul>"
        )
        return Response(200, layout(session, "Main page", body))
    if request.path == "/search":
        return Response(200, layout(session, "Search", _search(session, request)))
    if request.path.startswith("/wiki/"):
        article = world.articles.get(unquote(request.path.removeprefix("/wiki/")))
        if article is None:
            return not_found(session, "article")
        return Response(200, layout(session, article.title, _article(session, article)))
    return not_found(session)


# --- goals ---------------------------------------------------------------------


def _number_check(expected: str, what: str):
    def check(world: World, answer: str | None) -> Verdict:
        if answer is None:
            return Verdict(False, False, "")
        got = re.sub(r"[\s,.]", "", answer.casefold())
        ok = got == re.sub(r"[\s,.]", "", expected.casefold())
        return Verdict(ok, True, f"{what} is correct" if ok else f"expected {expected!r}")

    return check


def population(rng: random.Random, world: World) -> Goal:
    town = rng.choice(world.towns)
    text = f'According to the wiki, what is the population of the town "{town.name}"? Answer with FINISH and the number.'
    return Goal(text, _number_check(f"{town.population:,}", "the population"))


def founded(rng: random.Random, world: World) -> Goal:
    name = rng.choice(world.ambiguous)
    town = next(t for t in world.towns if t.name == name)
    text = f'In what year was the town "{town.name}" founded? Answer with FINISH and the year.'
    return Goal(text, _number_check(str(town.founded), "the year"))


def capital_mayor(rng: random.Random, world: World) -> Goal:
    country = rng.choice(list(world.countries))
    capital = world.countries[country]["capital"]
    mayor = next(t.mayor for t in world.towns if t.title == capital)
    text = f'Who is the mayor of the capital of "{country}"? Answer with FINISH and the full name.'
    return Goal(text, _number_check(mayor, "the mayor"))


def older(rng: random.Random, world: World) -> Goal:
    a, b = rng.sample(world.towns, 2)
    while a.founded == b.founded:
        a, b = rng.sample(world.towns, 2)
    first = a if a.founded < b.founded else b
    text = f'Which town was founded earlier, "{a.name}" or "{b.name}"? Answer with FINISH and its name.'
    return Goal(text, _number_check(first.name, "the town"))


def export(rng: random.Random, world: World) -> Goal:
    country = rng.choice(list(world.countries))
    text = f'According to the wiki, what is the main export of "{country}"? Answer with FINISH and the product.'
    return Goal(text, _number_check(world.countries[country]["export"], "the export"))


def mayor_born(rng: random.Random, world: World) -> Goal:
    town = rng.choice(world.towns)
    text = f'In what year was the mayor of the town "{town.name}" born? Answer with FINISH and the year.'
    return Goal(text, _number_check(str(town.mayor_born), "the year"))


SITE = Site(
    name="wiki",
    title="Openpedia",
    build=build,
    route=route,
    templates={
        "population": population,
        "founded": founded,
        "capital-mayor": capital_mayor,
        "older": older,
        "export": export,
        "mayor-born": mayor_born,
    },
    nav=(("Main page", "/"), ("Random article", "/wiki/Openpedia:About")),
    ads=(
        "Learn a language in 7 days",
        "Donate to Openpedia today",
        "Maps of every town - free download",
        "History books up to 80% off",
    ),
)
