"""Scripted experts for the Openpedia wiki (``sites.wiki.*``)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from agents.experts.base import Context, Decision, ExpertError, type_into
from agents.experts.sites.base import (
    button,
    consent,
    field,
    finish,
    goal_quotes,
    has,
    link,
    page_path,
    query,
    site_expert,
)


def _title(ctx: Context) -> str:
    path = page_path(ctx)
    return unquote(path.removeprefix("/wiki/")) if path.startswith("/wiki/") else ""


def _open(ctx: Context, term: str, titles: tuple[str, ...]) -> Decision | None:
    """Reach the article titled one of ``titles`` (in preference order) by
    searching for ``term``; None once there."""
    if _title(ctx) in titles:
        return None
    for title in titles:
        if has(ctx, title, ("link",)) and (page_path(ctx) == "/search" or _title(ctx) == term):
            return link(ctx, title, f'"{title}" is the article the question is about.')
    if page_path(ctx) == "/search" and query(ctx).get("q") == term:
        pages = [e for e in ctx.elements if str(e.get("text") or "").startswith("Page ")]
        if pages and ctx.memory.get("paged", 0) < 3:
            ctx.memory["paged"] = ctx.memory.get("paged", 0) + 1
            return link(ctx, str(pages[0]["text"]), "The article is not on this page of results.")
        raise ExpertError(f"no article for {term!r}")
    box = field(ctx, "Search the wiki")
    if box.get("value") != term:
        return type_into(box, term, f'Search the wiki for "{term}".')
    return button(ctx, "Search", "Run the search.")


def _on_town(ctx: Context, name: str) -> bool:
    """On the town's own article (not the disambiguation page of its name)."""
    return _title(ctx) == f"{name} (town)" or (
        _title(ctx) == name and "may refer to" not in ctx.text
    )


def _reach_town(ctx: Context, name: str) -> Decision | None:
    if _on_town(ctx, name):
        return None
    if _title(ctx) == name:  # the disambiguation page
        return link(
            ctx, f"{name} (town)", "This name is ambiguous; the town is the one asked about."
        )
    return _open(ctx, name, (f"{name} (town)", name))


def _fact(ctx: Context, key: str) -> str:
    match = re.search(rf"^{key}\s+(.+)$", ctx.text, re.M)
    if match is None:
        raise ExpertError(f"no {key} in the infobox")
    return match.group(1).strip()


def _start(ctx: Context) -> Decision | None:
    return consent(ctx)


@site_expert("sites.wiki.population", r"what is the population of the town")
def population(ctx: Context) -> Decision:
    name = goal_quotes(ctx, 1)[0]
    if decision := _start(ctx) or _reach_town(ctx, name):
        return decision
    value = _fact(ctx, "Population")
    return finish(value, f"The infobox of {name} gives the population as {value}.")


@site_expert("sites.wiki.founded", r"^In what year was the town")
def founded(ctx: Context) -> Decision:
    name = goal_quotes(ctx, 1)[0]
    if decision := _start(ctx) or _reach_town(ctx, name):
        return decision
    value = _fact(ctx, "Founded")
    return finish(value, f"The infobox of the town {name} says it was founded in {value}.")


@site_expert("sites.wiki.capital-mayor", r"^Who is the mayor of the capital of")
def capital_mayor(ctx: Context) -> Decision:
    country = goal_quotes(ctx, 1)[0]
    if decision := _start(ctx):
        return decision
    capital = ctx.memory.get("capital")
    if capital is None:
        if decision := _open(ctx, country, (country,)):
            return decision
        capital = ctx.memory["capital"] = _fact(ctx, "Capital")
        return link(ctx, capital, f"The capital of {country} is {capital}; open its article.")
    if decision := _reach_town(ctx, capital):
        return decision
    mayor = _fact(ctx, "Mayor")
    return finish(mayor, f"The mayor of {capital} is {mayor}.")


@site_expert("sites.wiki.older", r"^Which town was founded earlier")
def older(ctx: Context) -> Decision:
    a, b = goal_quotes(ctx, 2)[:2]
    if decision := _start(ctx):
        return decision
    years: dict[str, int] = ctx.memory.setdefault("years", {})
    for name in (a, b):
        if name in years:
            continue
        if decision := _reach_town(ctx, name):
            return decision
        years[name] = int(_fact(ctx, "Founded"))
        if len(years) < 2:
            return _open(ctx, b if name == a else a, ())  # type the next search
    first = a if years[a] < years[b] else b
    return finish(first, f"{a} was founded in {years[a]} and {b} in {years[b]}; {first} is older.")


@site_expert("sites.wiki.export", r"what is the main export of")
def export(ctx: Context) -> Decision:
    country = goal_quotes(ctx, 1)[0]
    if decision := _start(ctx) or _open(ctx, country, (country,)):
        return decision
    match = re.search(rf"The main export of {re.escape(country)} is ([^;.]+)", ctx.text)
    if match is None:
        raise ExpertError("no export sentence")
    return finish(match.group(1), f"The Economy paragraph names {match.group(1)}.")


@site_expert("sites.wiki.mayor-born", r"^In what year was the mayor of the town")
def mayor_born(ctx: Context) -> Decision:
    name = goal_quotes(ctx, 1)[0]
    if decision := _start(ctx):
        return decision
    mayor = ctx.memory.get("mayor")
    if mayor is None:
        if decision := _reach_town(ctx, name):
            return decision
        mayor = ctx.memory["mayor"] = _fact(ctx, "Mayor")
        return link(ctx, mayor, f"The mayor of {name} is {mayor}; open that article.")
    if _title(ctx) != mayor:
        return link(ctx, mayor, f"Open the article on {mayor}.")
    born = _fact(ctx, "Born")
    return finish(born, f"{mayor} was born in {born}.")
