"""Every element nameable and typed (issue 13): each accessible-name route, every
input type, look-alikes told apart by their row, and the rendering of each."""

from __future__ import annotations

import pytest

from browser_env.observation import ObserverLimits, render_element_lines

pytestmark = pytest.mark.browser

# (element's id attribute -> (name_from, input_type, rendered line without its id))
ROUTES = {
    "r1": ("aria-labelledby", "text", 'textbox "Given name"'),
    "r2": ("aria-label", "search", 'searchbox "Search the site"'),
    "r3": ("label", "email", 'textbox type=email "Email address" maxlength=40 (required)'),
    "r4": ("label", "tel", 'textbox type=tel "Phone"'),  # a wrapping label
    "r5": ("inferred", "text", 'textbox "Username"'),  # a label not associated with it
    "r6": ("placeholder", "text", 'textbox "Where from?"'),
    "r7": ("name", "text", 'textbox name="billing city"'),  # name attribute only
    "r8": ("inferred", "checkbox", 'checkbox "Remember me"'),  # the text after a checkbox
    "r9": ("title", "number", 'spinbutton "Guests" value="3" min=1 max=10 (readonly)'),
    "r10": ("alt", "", 'link "Home"'),  # an image link
    "r11": ("aria-label", "", 'textbox "Comment" (multiline)'),
}

# input type -> rendered line without its id; each sits in a table row after "Kind <type>".
TYPES = {
    "text": 'textbox "Kind text"',
    "password": 'textbox type=password "Kind password"',
    "email": 'textbox type=email "Kind email"',
    "number": 'spinbutton "Kind number"',
    "date": 'textbox type=date "Kind date"',
    "datetime-local": 'textbox type=datetime-local "Kind datetime"',
    "month": 'textbox type=month "Kind month"',
    "week": 'textbox type=week "Kind week"',
    "time": 'textbox type=time "Kind time"',
    "tel": 'textbox type=tel "Kind tel"',
    "url": 'textbox type=url "Kind url"',
    "search": 'searchbox "Kind search"',
    "color": 'button type=color "Kind color" value="#000000"',
    "file": 'button type=file "Kind file"',
    "range": 'slider "Kind range" value="50"',
    "checkbox": 'checkbox "Kind checkbox"',
    "radio": 'radio "Kind radio"',
    "submit": 'button "Send"',
    "reset": 'button "Clear"',
    "button": 'button "Press"',
    "image": 'button type=image "Go"',
}


@pytest.fixture(scope="module")
def env():
    """One browser for the module, in a window tall enough that names.html has
    nothing offscreen; open-v0's page load may take long on a loaded machine."""
    from browser_env.env import BrowserEnv

    env = BrowserEnv(
        "open",
        task_kwargs={"timeout_ms": 300_000},
        modalities=("elements", "text"),
        viewport=(800, 1400),
    )
    yield env
    env.close()


@pytest.fixture(scope="module")
def names(env, site_url):
    """The names.html observation, with each element's DOM id attribute alongside."""
    obs, _ = env.reset(seed=0, options={"url": site_url + "names.html", "goal": "test"})
    dom_ids = env.page.evaluate(
        "(ids) => ids.map((i) => window.__brlState.byId.get(i).deref().id)",
        [e["element_id"] for e in obs["elements"]],
    )
    return obs, dom_ids


def _strip_id(line: str) -> str:
    return line.split("] ", 1)[1]


def test_each_naming_route_gives_the_name_and_its_rendering(names):
    obs, dom_ids = names
    lines = dict(zip(dom_ids, render_element_lines(obs["elements"]), strict=True))
    elements = dict(zip(dom_ids, obs["elements"], strict=True))
    for dom_id, (name_from, input_type, line) in ROUTES.items():
        element = elements[dom_id]
        assert (element["name_from"], element["input_type"]) == (name_from, input_type), dom_id
        assert _strip_id(lines[dom_id]) == line, dom_id
    assert elements["r1"]["name"] == "Given name"  # labelledby wins over aria-label
    assert elements["r3"]["label"] == "Email address" and elements["r3"]["required"] == 1
    assert elements["r9"]["readonly"] == 1 and (elements["r9"]["min"], elements["r9"]["max"]) == (
        "1",
        "10",
    )
    assert elements["r3"]["maxlength"] == 40 and elements["r4"]["maxlength"] == -1
    assert elements["r5"]["label"] == "" and elements["r5"]["context"] == "Username"


def test_every_input_type_is_typed_and_named_by_its_row(names):
    obs, _ = names
    lines = render_element_lines(obs["elements"])
    rows = [
        (e, line)
        for e, line in zip(obs["elements"], lines, strict=True)
        if e["context"].startswith("Kind ")
    ]
    assert [e["input_type"] for e, _ in rows] == list(TYPES)
    assert [_strip_id(line) for _, line in rows] == list(TYPES.values())


def test_look_alikes_show_the_text_of_their_row(names):
    obs, _ = names
    lines = [_strip_id(line) for line in render_element_lines(obs["elements"])]
    assert lines[-4:] == [
        'button "Odd" near="7"',
        'button "Even" near="7"',
        'button "Odd" near="8"',
        'button "Even" near="8"',
    ]
    assert len(set(lines)) == len(lines)  # no two elements on this page read alike


def test_the_observation_fits_its_space(names):
    from browser_env.observation import observation_space

    obs, _ = names
    assert observation_space(("elements", "text")).contains(obs)
    assert obs["capped"] == ""


@pytest.mark.parametrize("modalities", [("elements", "text", "screenshot"), ("text",)])
def test_a_real_observation_has_the_keys_of_the_observation_typeddict(site_url, modalities):
    # Observation's annotations, required or NotRequired, against what reset
    # and step return: every required key always, an optional one with its
    # modality. (get_type_hints: with postponed annotations Python 3.11's
    # __optional_keys__ does not see NotRequired.)
    from typing import NotRequired, get_origin, get_type_hints

    from browser_env.env import BrowserEnv
    from browser_env.observation import Observation

    hints = get_type_hints(Observation, include_extras=True)
    optional = {key for key, hint in hints.items() if get_origin(hint) is NotRequired}
    required = set(hints) - optional
    assert optional == {"elements", "text", "screenshot"}
    with BrowserEnv("open", modalities=modalities, viewport=(400, 300)) as env:
        obs, _ = env.reset(seed=0, options={"url": site_url + "form.html", "goal": "t"})
        after, *_ = env.step({"action": "WAIT", "value": "0"})
    for observation in (obs, after):
        assert set(observation) == required | set(modalities)


@pytest.mark.browser
def _observe_capped(env, site_url, n: int, limits: ObserverLimits):
    """Reset on huge.html with ``n`` generated elements under ``limits``, CLICK
    the first element; returns (reset obs, step obs, step info)."""
    default, env.observer.limits = env.observer.limits, limits
    try:
        obs, _ = env.reset(seed=0, options={"url": site_url + f"huge.html?n={n}", "goal": "t"})
        assert env.page.evaluate("document.querySelectorAll('#bulk > *').length") == n
        first = obs["elements"][0]["element_id"]
        after, _, _, _, info = env.step({"action": "CLICK", "element_id": first})
    finally:
        env.observer.limits = default
    assert env.observation_space.contains(obs) and env.observation_space.contains(after)
    return obs, after, info


def test_caps_bound_the_walk_and_the_text_and_are_reported(env, site_url):
    limits = ObserverLimits(max_nodes=500, max_text_chars=5_000)
    obs, after, info = _observe_capped(env, site_url, 3_000, limits)
    assert obs["capped"] == (
        "elements: stopped after 500 nodes (max_nodes); "
        "text: cut at 5000 characters (max_text_chars)"
    )
    assert len(obs["text"]) == 5_000
    names = [e["name"] for e in obs["elements"]]
    assert names[:2] == ["First", "Field"] and "Last" not in names
    assert 15 < len(names) < 30  # every 20th generated element is a link
    assert info["action_error"] is None and after["capped"] == obs["capped"]


@pytest.mark.slow
def test_a_100000_element_page_is_observed_within_the_default_caps(env, site_url):
    """100,000 generated elements (5,000 of them links): reset and a step return,
    the walk stops at the default element cap, the text at the default text cap,
    and both are reported."""
    obs, after, info = _observe_capped(env, site_url, 100_000, ObserverLimits())
    assert obs["capped"] == (
        "elements: stopped after 2000 elements (max_elements); "
        "text: cut at 200000 characters (max_text_chars)"  # the page holds ~1.1 M
    )
    assert len(obs["text"]) == 200_000 and len(obs["elements"]) == 2_000
    assert info["action_error"] is None and after["capped"]
