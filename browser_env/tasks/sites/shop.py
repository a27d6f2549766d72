"""Shop: search, filters, pagination, product pages with options, cart, checkout.

The world is a seeded catalogue of near-duplicate products ("Classic Tee",
"Classic Tee Slim", ...) in four categories, a cart and the orders placed.
Goals are judged from the orders and the cart, or from the FINISH answer.
"""

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

CATEGORIES = {
    "T-shirts": ("Tee", ("XS", "S", "M", "L", "XL")),
    "Hoodies": ("Hoodie", ("XS", "S", "M", "L", "XL")),
    "Jackets": ("Jacket", ("S", "M", "L", "XL")),
    "Sneakers": ("Sneaker", ("7", "8", "9", "10", "11")),
}
ADJECTIVES = ("Classic", "Urban", "Trail", "Organic", "Vintage", "Coastal", "Alpine", "Studio")
VARIANTS = ("Slim", "Lite", "Pro", "Plus")
COLORS = ("Black", "White", "Navy", "Red", "Green", "Grey", "Olive", "Beige")
PER_PAGE = 5
SORTS = {"Relevance": "relevance", "Price: low to high": "price", "Price: high to low": "-price"}
PEOPLE = ("Ana Ruiz", "Ben Okafor", "Chloe Martin", "Dev Patel", "Emma Stone", "Femi Adeyemi")
STREETS = ("12 Oak Street", "4 Mill Lane", "88 Harbour Road", "301 Elm Avenue", "7 Kings Way")
CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Brookhaven")


@dataclasses.dataclass
class Product:
    pid: int
    name: str
    category: str
    price: float
    sizes: tuple[str, ...]
    colors: tuple[str, ...]


@dataclasses.dataclass
class Line:
    pid: int
    size: str
    color: str
    qty: int


@dataclasses.dataclass
class Order:
    number: str
    lines: list[Line]
    name: str
    street: str
    city: str
    shipping: str


@dataclasses.dataclass
class World:
    products: list[Product]
    cart: list[Line] = dataclasses.field(default_factory=list)
    orders: list[Order] = dataclasses.field(default_factory=list)

    def product(self, pid: int) -> Product | None:
        return next((p for p in self.products if p.pid == pid), None)


def build(rng: random.Random) -> World:
    products = []
    for category, (noun, sizes) in CATEGORIES.items():
        prices = rng.sample(range(9, 120), 10)
        for adjective in rng.sample(ADJECTIVES, 5):
            variant = rng.choice(VARIANTS)
            for name in (f"{adjective} {noun}", f"{adjective} {noun} {variant}"):
                products.append(
                    Product(
                        pid=0,
                        name=name,
                        category=category,
                        price=prices.pop() + 0.99,
                        sizes=tuple(
                            sorted(rng.sample(sizes, rng.randint(2, len(sizes))), key=sizes.index)
                        ),
                        colors=tuple(
                            sorted(rng.sample(COLORS, rng.randint(2, 4)), key=COLORS.index)
                        ),
                    )
                )
    rng.shuffle(products)
    for pid, product in enumerate(products, start=101):
        product.pid = pid
    return World(products)


def money(value: float) -> str:
    return f"${value:.2f}"


# --- pages -------------------------------------------------------------------


def _options(values: list[str], selected: str) -> str:
    return "".join(
        f"<option{' selected' if v == selected else ''}>{esc(v)}</option>" for v in values
    )


def _home(session: Session) -> str:
    cats = "".join(
        f'<li><a href="{esc(session.url("/search", cat=c))}">{esc(c)}</a></li>' for c in CATEGORIES
    )
    return (
        f'<h1>Welcome to Threadline</h1><form action="{esc(session.url("/search"))}">'
        '<label for="q">Search products</label> <input id="q" name="q" type="search"> '
        f"<button>Search</button></form><h2>Shop by category</h2><ul>{cats}</ul>"
        "<p class='muted'>Free returns within 30 days.</p>"
    )


def _matches(world: World, request: Request) -> list[Product]:
    q = request.arg("q").strip().casefold()
    cat, size, color = (
        request.arg("cat", "All"),
        request.arg("size", "Any"),
        request.arg("color", "Any"),
    )
    try:
        cap = float(request.arg("max") or "inf")
    except ValueError:
        cap = float("inf")
    found = [
        p
        for p in world.products
        if q in p.name.casefold()
        and cat in ("All", p.category)
        and size in ("Any", *p.sizes)
        and color in ("Any", *p.colors)
        and p.price <= cap
    ]
    sort = SORTS.get(request.arg("sort"), "relevance")
    if sort == "price":
        found.sort(key=lambda p: p.price)
    elif sort == "-price":
        found.sort(key=lambda p: -p.price)
    return found


def _search(session: Session, request: Request) -> str:
    world: World = session.world
    found = _matches(world, request)
    try:
        page = max(1, int(request.arg("page", "1")))
    except ValueError:
        page = 1
    pages = max(1, -(-len(found) // PER_PAGE))
    page = min(page, pages)
    shown = found[(page - 1) * PER_PAGE : page * PER_PAGE]
    sizes = sorted({s for _, ss in CATEGORIES.values() for s in ss}, key=lambda s: (s.isdigit(), s))
    keep = {k: request.arg(k) for k in ("q", "cat", "size", "color", "max", "sort")}
    filters = (
        f'<form class="filters" action="{esc(session.url("/search"))}">'
        f'<input type="hidden" name="q" value="{esc(keep["q"])}">'
        f'<div><label for="cat">Category</label> <select id="cat" name="cat">{_options(["All", *CATEGORIES], keep["cat"] or "All")}</select> '
        f'<label for="size">Size</label> <select id="size" name="size">{_options(["Any", *sizes], keep["size"] or "Any")}</select></div>'
        f'<div><label for="color">Color</label> <select id="color" name="color">{_options(["Any", *COLORS], keep["color"] or "Any")}</select> '
        f'<label for="max">Max price</label> <input id="max" name="max" size="6" value="{esc(keep["max"])}"></div>'
        f'<div><label for="sort">Sort by</label> <select id="sort" name="sort">{_options(list(SORTS), keep["sort"] or "Relevance")}</select> '
        "<button>Apply filters</button></div></form>"
    )
    rows = "".join(
        f'<div class="result"><a href="{esc(session.url(f"/product/{p.pid}"))}">{esc(p.name)}</a>'
        f" {money(p.price)} <span class='muted'>{esc(p.category)}</span></div>"
        for p in shown
    )
    pager = "".join(
        f'<a href="{esc(session.url("/search", **keep, page=n))}">{"Page " + str(n) if n != page else f"[{n}]"}</a>'
        for n in range(1, pages + 1)
    )
    if page < pages:
        pager += f'<a href="{esc(session.url("/search", **keep, page=page + 1))}">Next page</a>'
    title = f'Results for "{esc(keep["q"])}"' if keep["q"] else "All products"
    return (
        f"<h1>{title}</h1>{filters}<p>{len(found)} results</p>"
        f"{rows or '<p>No products match.</p>'}<div class='pager'>{pager}</div>"
    )


def _product(session: Session, product: Product) -> str:
    return (
        f"<h1>{esc(product.name)}</h1><p>{esc(product.category)} &middot; <b>{money(product.price)}</b></p>"
        f"<p>A comfortable {esc(product.name.lower())} made to last.</p>"
        f'<form class="stack" method="post" action="{esc(session.url("/cart/add"))}">'
        f'<input type="hidden" name="pid" value="{product.pid}">'
        f'<div><label for="size">Size</label> <select id="size" name="size">{_options(["Choose a size", *product.sizes], "")}</select></div>'
        f'<div><label for="color">Color</label> <select id="color" name="color">{_options(["Choose a color", *product.colors], "")}</select></div>'
        '<div><label for="qty">Quantity</label> <input id="qty" name="qty" type="number" value="1" min="1" max="9"></div>'
        "<button>Add to cart</button></form>"
        f'<p><a href="{esc(session.url("/search", cat=product.category))}">More {esc(product.category)}</a></p>'
    )


def _cart(session: Session, note: str = "") -> str:
    world: World = session.world
    rows = ""
    total = 0.0
    for i, line in enumerate(world.cart):
        p = world.product(line.pid)
        if p is None:
            continue
        total += p.price * line.qty
        rows += (
            f"<tr><td>{esc(p.name)}</td><td>{esc(line.size)}</td><td>{esc(line.color)}</td>"
            f"<td>{line.qty}</td><td>{money(p.price * line.qty)}</td><td>"
            f'<form method="post" action="{esc(session.url("/cart/remove"))}">'
            f'<input type="hidden" name="line" value="{i}"><button>Remove {esc(p.name)}</button></form></td></tr>'
        )
    if not rows:
        return f"<h1>Your cart</h1>{note}<p>Your cart is empty.</p>"
    return (
        f"<h1>Your cart</h1>{note}<table><tr><th>Item</th><th>Size</th><th>Color</th><th>Qty</th>"
        f"<th>Price</th><th></th></tr>{rows}</table><p>Total: {money(total)}</p>"
        f'<p><a href="{esc(session.url("/checkout"))}">Proceed to checkout</a> '
        f'<a href="{esc(session.url("/"))}">Continue shopping</a></p>'
    )


def _checkout(session: Session, error: str = "") -> str:
    shipping = _options(["Standard (free)", "Express ($9.99)"], "Standard (free)")
    return (
        f"<h1>Checkout</h1>{error}"
        f'<form class="stack" method="post" action="{esc(session.url("/order"))}">'
        '<div><label for="name">Full name</label> <input id="name" name="name"></div>'
        '<div><label for="street">Street address</label> <input id="street" name="street"></div>'
        '<div><label for="city">City</label> <input id="city" name="city"></div>'
        f'<div><label for="shipping">Shipping</label> <select id="shipping" name="shipping">{shipping}</select></div>'
        "<button>Place order</button></form>"
    )


def route(session: Session, request: Request) -> Response:
    world: World = session.world
    path = request.path
    if path == "/":
        return Response(200, layout(session, "Home", _home(session)))
    if path == "/search":
        return Response(200, layout(session, "Search", _search(session, request)))
    if match := re.fullmatch(r"/product/(\d{1,6})", path):
        product = world.product(int(match.group(1)))
        if product is None:
            return not_found(session, "product")
        return Response(200, layout(session, product.name, _product(session, product)))
    if path == "/cart":
        return Response(200, layout(session, "Cart", _cart(session)))
    if path == "/cart/add" and request.method == "POST":
        product = world.product(int(request.arg("pid", "0")) if request.arg("pid").isdigit() else 0)
        size, color, qty = request.arg("size"), request.arg("color"), request.arg("qty", "1")
        if product is None:
            return not_found(session, "product")
        if (
            size not in product.sizes
            or color not in product.colors
            or not qty.isdigit()
            or not 1 <= int(qty) <= 9
        ):
            error = "<p class='error'>Choose a size, a color and a quantity from 1 to 9.</p>"
            return Response(200, layout(session, product.name, error + _product(session, product)))
        world.cart.append(Line(product.pid, size, color, int(qty)))
        return redirect(session.url("/cart"))
    if path == "/cart/remove" and request.method == "POST":
        index = request.arg("line")
        if index.isdigit() and int(index) < len(world.cart):
            del world.cart[int(index)]
        return redirect(session.url("/cart"))
    if path == "/checkout":
        if not world.cart:
            return Response(200, layout(session, "Cart", _cart(session)))
        return Response(200, layout(session, "Checkout", _checkout(session)))
    if path == "/order" and request.method == "POST":
        fields = {k: request.arg(k).strip() for k in ("name", "street", "city", "shipping")}
        if not world.cart:
            return redirect(session.url("/cart"))
        if not all(fields.values()):
            error = "<p class='error'>Please fill in every field.</p>"
            return Response(200, layout(session, "Checkout", _checkout(session, error)))
        number = f"TL-{1000 + len(world.orders) * 7 + len(world.products)}"
        world.orders.append(Order(number, list(world.cart), **fields))
        world.cart.clear()
        return redirect(session.url(f"/order/{number}"))
    if match := re.fullmatch(r"/order/([A-Z0-9-]{1,20})", path):
        body = f"<h1>Thank you!</h1><p>Your order {esc(match.group(1))} is confirmed.</p>"
        return Response(200, layout(session, "Order placed", body))
    return not_found(session)


# --- goals ---------------------------------------------------------------------


def _address(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(PEOPLE), rng.choice(STREETS), rng.choice(CITIES)


def _order_check(want: list[tuple[int, str, str | None, int]], address: tuple[str, str, str]):
    """Done once an order is placed; right when it holds exactly ``want``
    (pid, size, color or None for any, qty) and ships to ``address``."""

    def check(world: World, answer: str | None) -> Verdict:
        if not world.orders:
            return Verdict(False, False, "no order placed")
        order = world.orders[0]
        got = sorted((line.pid, line.size, line.color, line.qty) for line in order.lines)
        ok_lines = len(got) == len(want) and all(
            g[0] == w[0] and g[1] == w[1] and (w[2] is None or g[2] == w[2]) and g[3] == w[3]
            for g, w in zip(got, sorted(want, key=lambda w: w[0]), strict=True)
        )
        ok_address = (order.name, order.street, order.city) == address
        if not ok_lines:
            return Verdict(False, True, "the order holds the wrong items")
        if not ok_address:
            return Verdict(False, True, "the order ships to the wrong address")
        return Verdict(True, True, "the right order was placed")

    return check


def _ship(address: tuple[str, str, str]) -> str:
    return f'Ship to "{address[0]}", "{address[1]}", "{address[2]}".'


def buy_cheapest(rng: random.Random, world: World) -> Goal:
    while True:
        category = rng.choice(list(CATEGORIES))
        size = rng.choice(CATEGORIES[category][1])
        fits = sorted(
            (p for p in world.products if p.category == category and size in p.sizes),
            key=lambda p: p.price,
        )
        if len(fits) >= 3:
            break
    cap = int(fits[2].price) + 1 + rng.randint(0, 20)
    address = _address(rng)
    text = (
        f'Buy the cheapest item in "{category}" under ${cap} in size "{size}", any color. '
        + _ship(address)
    )
    return Goal(text, _order_check([(fits[0].pid, size, None, 1)], address))


def buy_named(rng: random.Random, world: World) -> Goal:
    product = rng.choice(world.products)
    size, color, qty = rng.choice(product.sizes), rng.choice(product.colors), rng.randint(2, 3)
    address = _address(rng)
    text = f'Buy {qty} of "{product.name}" in color "{color}", size "{size}". ' + _ship(address)
    return Goal(text, _order_check([(product.pid, size, color, qty)], address))


def add_to_cart(rng: random.Random, world: World) -> Goal:
    product = rng.choice(world.products)
    size, color = rng.choice(product.sizes), rng.choice(product.colors)
    text = f'Add one "{product.name}" in size "{size}" and color "{color}" to the cart. Do not check out.'

    def check(w: World, answer: str | None) -> Verdict:
        if w.orders:
            return Verdict(False, True, "an order was placed")
        lines = [(line.pid, line.size, line.color, line.qty) for line in w.cart]
        if lines == [(product.pid, size, color, 1)]:
            return Verdict(True, True, "the cart holds the item")
        return Verdict(False, False, "the cart does not hold exactly the item")

    return Goal(text, check)


def remove_and_checkout(rng: random.Random, world: World) -> Goal:
    picks = rng.sample(world.products, 3)
    world.cart.extend(Line(p.pid, p.sizes[0], p.colors[0], 1) for p in picks)
    drop = rng.choice(picks)
    keep = [(line.pid, line.size, line.color, 1) for line in world.cart if line.pid != drop.pid]
    address = _address(rng)
    text = f'Remove "{drop.name}" from your cart, then check out the rest. ' + _ship(address)
    return Goal(text, _order_check(keep, address))


def cheapest_price(rng: random.Random, world: World) -> Goal:
    category = rng.choice(list(CATEGORIES))
    color = rng.choice(COLORS)
    fits = [p for p in world.products if p.category == category and color in p.colors]
    while not fits:
        color = rng.choice(COLORS)
        fits = [p for p in world.products if p.category == category and color in p.colors]
    best = min(fits, key=lambda p: p.price)
    text = (
        f'What is the price of the cheapest item in "{category}" that comes in "{color}"? '
        "Answer with FINISH and the price, e.g. 12.99."
    )
    return Goal(text, answer_check(f"{best.price:.2f}", "the price"))


def count_under(rng: random.Random, world: World) -> Goal:
    category = rng.choice(list(CATEGORIES))
    cap = rng.randint(30, 100)
    count = sum(1 for p in world.products if p.category == category and p.price <= cap)
    text = f'How many items in "{category}" cost at most ${cap}? Answer with FINISH and the number.'
    return Goal(text, answer_check(str(count), "the count"))


SITE = Site(
    name="shop",
    title="Threadline Shop",
    build=build,
    route=route,
    templates={
        "buy-cheapest": buy_cheapest,
        "buy-named": buy_named,
        "add-to-cart": add_to_cart,
        "remove-and-checkout": remove_and_checkout,
        "cheapest-price": cheapest_price,
        "count-under": count_under,
    },
    nav=(("Home", "/"), ("All products", "/search"), ("Cart", "/cart")),
    ads=(
        "Classic Tee - 70% off today only",
        "Free sneakers with every order*",
        "Urban Hoodie Lite: new colors",
        "Win a $500 gift card",
        "Alpine Jacket Pro clearance",
    ),
)
