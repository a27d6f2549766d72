"""Every verb against its effect on a real page (tests/fixtures/site on 127.0.0.1)."""

from __future__ import annotations

import dataclasses
import time

import pytest

pytestmark = pytest.mark.browser


def by(obs, **match):
    """The single element whose fields equal ``match``."""
    found = [e for e in obs["elements"] if all(e[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, [dict(e, bbox=None) for e in obs["elements"]])
    return found[0]["element_id"]


def open_page(env, site_url, page, **options):
    obs, info = env.reset(seed=0, options={"url": site_url + page, "goal": "test", **options})
    assert obs["last_action_error"] == ""
    return obs


def page_text(env, selector):
    return env.page.inner_text(selector)


def test_observation_lists_form_controls_with_labels(open_env, site_url):
    obs = open_page(open_env, site_url, "form.html")
    name = next(e for e in obs["elements"] if e["placeholder"] == "Your name")
    assert (name["tag"], name["role"], name["label"]) == ("input", "textbox", "Name")
    city = next(e for e in obs["elements"] if e["tag"] == "select")
    assert city["role"] == "combobox" and "New York" in city["text"] and city["label"] == "City"
    disabled = next(e for e in obs["elements"] if e["value"] == "locked")
    assert disabled["enabled"] == 0
    assert not any(e["text"] == "Invisible" for e in obs["elements"])
    assert not any(e["value"] == "x" for e in obs["elements"])  # type=hidden
    ids = [e["element_id"] for e in obs["elements"]]
    assert len(ids) == len(set(ids))
    assert "Sign up" in obs["text"]


def test_type_replaces_content_with_live_value(open_env, site_url):
    obs = open_page(open_env, site_url, "form.html")
    name = by(obs, placeholder="Your name")
    obs, reward, terminated, truncated, info = open_env.step(
        {"action": "TYPE", "element_id": name, "value": "Ada"}
    )
    obs, *_ = open_env.step({"action": "TYPE", "element_id": name, "value": "Grace Hopper"})
    element = next(e for e in obs["elements"] if e["element_id"] == name)
    assert element["value"] == "Grace Hopper" and element["focused"] == 1
    assert open_env.page.input_value("#name") == "Grace Hopper"
    assert (reward, terminated, truncated, info["action_error"]) == (0.0, False, False, None)


def test_type_in_textarea_and_without_element_types_into_focus(open_env, site_url):
    obs = open_page(open_env, site_url, "form.html")
    bio = by(obs, placeholder="About you")
    open_env.step({"action": "TYPE", "element_id": bio, "value": "line one"})
    open_env.step({"action": "TYPE", "value": " and more"})
    assert open_env.page.input_value("#bio") == "line one and more"


def test_type_on_select_chooses_by_label_or_value(open_env, site_url):
    obs = open_page(open_env, site_url, "form.html")
    city = by(obs, tag="select")
    obs, *_ = open_env.step({"action": "TYPE", "element_id": city, "value": "san francisco"})
    assert open_env.page.input_value("#city") == "sf"
    assert next(e for e in obs["elements"] if e["element_id"] == city)["value"] == "San Francisco"
    obs, *_ = open_env.step({"action": "TYPE", "element_id": city, "value": "nyc"})
    assert open_env.page.input_value("#city") == "nyc"
    obs, *_ = open_env.step({"action": "TYPE", "element_id": city, "value": "Paris"})
    assert (
        "no option 'Paris'" in obs["last_action_error"] and "New York" in obs["last_action_error"]
    )


def test_click_toggles_checkbox_radio_and_label(open_env, site_url):
    obs = open_page(open_env, site_url, "form.html")
    news = next(e for e in obs["elements"] if e["role"] == "checkbox")
    obs, *_ = open_env.step({"action": "CLICK", "element_id": news["element_id"]})
    assert open_env.page.is_checked("#news")
    assert next(e for e in obs["elements"] if e["element_id"] == news["element_id"])["checked"] == 1
    open_env.step({"action": "CLICK", "element_id": news["element_id"]})
    assert not open_env.page.is_checked("#news")
    radios = [e["element_id"] for e in obs["elements"] if e["role"] == "radio"]
    open_env.step({"action": "CLICK", "element_id": radios[1]})
    assert open_env.page.is_checked("#r2") and not open_env.page.is_checked("#r1")
    open_env.step({"action": "CLICK", "element_id": radios[0]})
    assert open_env.page.is_checked("#r1") and not open_env.page.is_checked("#r2")


def test_a_click_that_opens_nothing_reads_the_page_once_after_acting(open_env, site_url):
    """The page's notes of windows and navigations it asked for (js/intents.js)
    come with the observation's own read: a CLICK costs two page calls, locating
    the element and observing, and the observation is the page as it is."""
    obs = open_page(open_env, site_url, "form.html")
    news = next(e for e in obs["elements"] if e["role"] == "checkbox")["element_id"]
    page, calls = open_env.page, []
    evaluate = page.evaluate

    def counting(expression, arg=None):
        calls.append(expression)
        return evaluate(expression, arg)

    page.evaluate = counting  # this page object only
    try:
        obs, _, _, _, info = open_env.step({"action": "CLICK", "element_id": news})
    finally:
        del page.evaluate
    assert len(calls) == 2, [c[:60] for c in calls]
    assert info["action_error"] is None and open_env.page.is_checked("#news")
    fresh = open_env.observe()
    assert [(e["element_id"], e["checked"]) for e in obs["elements"]] == [
        (e["element_id"], e["checked"]) for e in fresh["elements"]
    ]
    assert obs["text"] == fresh["text"]
    # the read counts once, as the observation's time
    timings = info["timings"]
    assert timings["observation"] > 0 and timings["action"] > 0
    assert timings["action"] + timings["validate"] + timings["observation"] <= timings["total"]


def test_press_enter_submits_and_waits_for_navigation(open_env, site_url):
    obs = open_page(open_env, site_url, "search.html")
    query = by(obs, label="Search")
    open_env.step({"action": "TYPE", "element_id": query, "value": "blue whales"})
    obs, reward, terminated, _, info = open_env.step({"action": "PRESS_ENTER"})
    assert info["action_error"] is None
    assert obs["url"].startswith(site_url + "result.html")
    assert "Got: q=blue whales" in obs["text"]


#: form id in submits.html -> how its submission navigates the top document
#: (requestSubmit fires the submit event; submit() fires none, so no handler
#: can prevent it)
_SUBMITS = {
    "plain": {"requestSubmit", "submit"},
    "shadowed": {"requestSubmit", "submit"},  # <input name="action"> shadows form.action
    "prevented": {"submit"},  # its own onsubmit prevents it
    "late": {"submit"},  # a window listener of the page's, after the env's, prevents it
    "dialog": set(),  # method=dialog closes a dialog
    "framed": set(),  # target= a frame
    "script": set(),  # a javascript: action
    "shadowed-script": set(),
}


@pytest.mark.parametrize("how", ["requestSubmit", "submit"])
@pytest.mark.parametrize("form", sorted(_SUBMITS))
def test_a_submission_notes_its_navigation_before_the_navigation_starts(
    open_env, site_url, form, how
):
    """A form's navigation is planned: its ``navigate`` event comes ~10-15 ms after
    the submit (after the env's read that follows PRESS_ENTER, which then did not
    wait for the page; seen once under load). The submission itself notes it
    (js/intents.js): the submit event, and ``form.submit()``, which fires none;
    read here in the submission's own task. A submission that navigates no top
    document, or that a listener prevented (even one after the env's), notes
    nothing: the step would wait for a page that never comes."""
    open_page(open_env, site_url, "submits.html")
    intents = open_env.page.evaluate(
        f"() => {{ document.getElementById('{form}').{how}(); return window.__brlIntents(); }}"
    )
    if how in _SUBMITS[form]:
        assert intents["navigate"] == site_url + "result.html"
    else:
        assert intents["navigate"] is None and intents["popups"] == 0


@pytest.fixture(scope="module")
def no_content_url():
    """A page whose form (GET and POST) and link are answered 204 No Content."""
    import http.server
    import threading

    page = (
        b"<form id=get action=/none><input name=q aria-label=Get><button>get</button></form>"
        b"<form id=post method=post action=/none><input name=p aria-label=Post>"
        b"<button>post</button></form><a href=/none>none</a>"
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"" if self.path.startswith("/none") else page
            self.send_response(204 if not body else 200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.parametrize("how", ["enter-get", "enter-post", "link"])
def test_a_navigation_answered_204_does_not_wait_for_a_page(open_env, no_content_url, how):
    """A 204 answer cancels the navigation the step noted (js/intents.js): the
    browser reports the request as aborted, and the step goes on at once instead
    of waiting ``popup_timeout_ms`` (here a minute) for a page that never comes."""
    saved = open_env.executor_config
    open_env.executor_config = dataclasses.replace(saved, popup_timeout_ms=60_000)
    try:
        obs, _ = open_env.reset(seed=0, options={"url": no_content_url, "goal": "test"})
        if how == "link":
            action = {"action": "CLICK", "element_id": by(obs, tag="a")}
        else:
            field = by(obs, label="Get" if how == "enter-get" else "Post")
            open_env.step({"action": "TYPE", "element_id": field, "value": "x"})
            action = {"action": "PRESS_ENTER"}
        start = time.monotonic()
        obs, *_, info = open_env.step(action)
        assert time.monotonic() - start < 30
    finally:
        open_env.executor_config = saved
    assert info["action_error"] is None
    assert obs["url"] == no_content_url


def test_click_link_navigates_and_ids_never_repeat(open_env, site_url):
    obs = open_page(open_env, site_url, "links.html")
    before = {e["element_id"] for e in obs["elements"]}
    link = by(obs, text="Go to result")
    obs, *_ = open_env.step({"action": "CLICK", "element_id": link})
    assert "result.html?from=links" in obs["url"] and "Got: from=links" in obs["text"]
    after = {e["element_id"] for e in obs["elements"]}
    assert after and not (after & before)  # a new page never inherits old ids
    obs, *_ = open_env.step({"action": "CLICK", "element_id": link})
    assert "not on the page" in obs["last_action_error"]


def test_navigate_and_bad_navigate(open_env, site_url):
    open_page(open_env, site_url, "links.html")
    obs, *_ = open_env.step({"action": "NAVIGATE", "value": site_url + "long.html"})
    assert obs["url"] == site_url + "long.html" and obs["last_action_error"] == ""
    obs, *_ = open_env.step({"action": "NAVIGATE", "value": "http://127.0.0.1:9/nothing"})
    assert "NAVIGATE to http://127.0.0.1:9/nothing failed" in obs["last_action_error"]
    obs, *_ = open_env.step({"action": "NAVIGATE", "value": "chrome://settings"})
    assert "chrome: URLs are not allowed" in obs["last_action_error"]


def test_scroll_moves_the_page_and_offscreen_elements_are_flagged(open_env, site_url):
    obs = open_page(open_env, site_url, "long.html")
    bottom = next(e for e in obs["elements"] if e["text"] == "Bottom button")
    assert bottom["visible"] == 0
    for _ in range(8):
        obs, *_ = open_env.step({"action": "SCROLL", "value": "down"})
    assert open_env.page.evaluate("window.scrollY") > 2000
    assert (
        next(e for e in obs["elements"] if e["element_id"] == bottom["element_id"])["visible"] == 1
    )
    open_env.step({"action": "SCROLL", "value": "up"})
    y_after_up = open_env.page.evaluate("window.scrollY")
    assert 0 < y_after_up < open_env.page.evaluate("document.body.scrollHeight")


def test_scroll_over_an_offscreen_box_scrolls_the_box_not_the_page(open_env):
    open_env.reset(options={"url": "about:blank", "goal": "test"})
    open_env.page.set_content(
        '<div style="height:1500px">top</div>'
        '<div id="box" tabindex="0" style="height:200px;width:300px;overflow:auto">'
        '<div style="height:2000px">inner</div></div><div style="height:1500px"></div>'
    )
    box = by(open_env.observe(), tag="div")
    obs, *_ = open_env.step({"action": "SCROLL", "element_id": box, "value": "down"})
    assert obs["last_action_error"] == ""
    # A wheel at the box's off-screen centre scrolled the page and left the box as it was.
    assert open_env.page.evaluate("document.getElementById('box').scrollTop") > 0


def test_click_offscreen_element_scrolls_it_into_view(open_env, site_url):
    obs = open_page(open_env, site_url, "long.html")
    bottom = by(obs, text="Bottom button")
    obs, *_ = open_env.step({"action": "CLICK", "element_id": bottom})
    assert "bottom clicked" in obs["text"]


def test_iframe_and_shadow_root_elements_are_observed_and_actionable(open_env, site_url):
    obs = open_page(open_env, site_url, "frames.html")
    frame_input = by(obs, placeholder="frame input")
    frame_button = by(obs, text="Frame button")
    shadow_button = by(obs, text="Shadow button")
    assert "Inner frame" in obs["text"] and "Shadow text" in obs["text"]
    obs, *_ = open_env.step({"action": "TYPE", "element_id": frame_input, "value": "inside"})
    frame = open_env.page.frame_locator("#inner")
    assert frame.locator("#fi").input_value() == "inside"
    obs, *_ = open_env.step({"action": "CLICK", "element_id": frame_button})
    assert "frame clicked" in obs["text"]
    obs, *_ = open_env.step({"action": "CLICK", "element_id": shadow_button})
    assert (
        open_env.page.locator("#host").evaluate(
            "h => h.shadowRoot.getElementById('sc').textContent"
        )
        == "1"
    )


def test_js_dialogs_are_accepted_and_reported(open_env, site_url):
    obs = open_page(open_env, site_url, "dialogs.html")
    obs, _, _, _, info = open_env.step({"action": "CLICK", "element_id": by(obs, text="Alert")})
    assert info["dialogs"] == [{"type": "alert", "message": "Hello there"}]
    assert "after alert" in obs["text"]
    obs, _, _, _, info = open_env.step({"action": "CLICK", "element_id": by(obs, text="Confirm")})
    assert info["dialogs"][0]["type"] == "confirm" and "confirmed" in obs["text"]


@pytest.mark.parametrize("control", ["Open in new tab", "window.open"])
def test_popups_are_followed(open_env, site_url, control):
    obs = open_page(open_env, site_url, "links.html")
    obs, _, _, _, info = open_env.step({"action": "CLICK", "element_id": by(obs, text=control)})
    popups = info.get("popups", [])  # the step waits for the popup the click opened
    assert len(popups) == 1
    assert "result.html?from=" in obs["url"] and "Got: from=" in obs["text"]


def test_the_page_left_for_a_popup_keeps_no_cdp_session(open_env, site_url):
    """The env's CDP session (the watchdog's) belongs to the page it acts on:
    following a popup detaches the opener's, which would otherwise stay attached
    to the still-open opener, one more each time the env came back to it."""
    obs = open_page(open_env, site_url, "links.html")
    opener, session = open_env.page, open_env._cdp
    assert session is not None and session.send("Runtime.evaluate", {"expression": "1"})
    _, _, _, _, info = open_env.step(
        {"action": "CLICK", "element_id": by(obs, text="Open in new tab")}
    )
    assert len(info["popups"]) == 1 and open_env.page is not opener and not opener.is_closed()
    with pytest.raises(Exception, match="detached|closed"):
        session.send("Runtime.evaluate", {"expression": "1"})
    # a session whose page is already closed is let go quietly
    gone = opener.context.new_page()
    open_env._cdp = opener.context.new_cdp_session(gone)
    gone.close()
    open_env._set_page(opener)
    assert open_env.page is opener and open_env._cdp is None


def test_a_page_the_caller_opens_is_not_a_popup(open_env, site_url):
    """Only pages with an opener are followed: a tab the caller opens in the
    env's context is neither reported nor taken as the env's page."""
    obs = open_page(open_env, site_url, "links.html")
    extra = open_env.page.context.new_page()
    try:
        obs, _, _, _, info = open_env.step({"action": "WAIT", "value": 0})
        assert "popups" not in info
        assert obs["url"].endswith("links.html") and open_env.page is not extra
    finally:
        extra.close()


def test_downloads_are_captured_without_hanging(open_env, site_url, tmp_path):
    obs = open_page(open_env, site_url, "links.html")
    obs, _, _, _, info = open_env.step(
        {"action": "CLICK", "element_id": by(obs, text="Download data")}
    )
    if "downloads" not in info:
        obs, _, _, _, info = open_env.step({"action": "WAIT", "value": "200"})
    assert info["downloads"][0]["filename"] == "data.txt"
    target = tmp_path / "data.txt"
    open_env.downloads[0].save_as(target)
    assert target.read_text().strip() == "hello download"


def test_dynamic_elements_get_new_ids_and_old_ids_stay(open_env, site_url):
    obs = open_page(open_env, site_url, "dynamic.html")
    add = by(obs, text="Add item")
    js_only = by(obs, text="JS clickable")  # clickable only through addEventListener
    ids = {}
    for n in (1, 2):
        obs, *_ = open_env.step({"action": "CLICK", "element_id": add})
        ids[n] = by(obs, text=f"Item {n}")
    assert by(obs, text="Add item") == add and ids[1] != ids[2]
    assert by(obs, text="Item 1") == ids[1]
    obs, *_ = open_env.step({"action": "CLICK", "element_id": js_only})
    assert "JS clicked" in obs["text"]


def test_ids_follow_document_order_whatever_has_rendered(open_env, site_url):
    # An element that is not rendered yet (an icon whose image is still decoding, say)
    # still takes its id in document order, so the ids of a seeded page do not depend
    # on paint timing (check_env's determinism check caught this on a MiniWoB page).
    obs = open_page(open_env, site_url, "reveal.html")
    reveal = by(obs, text="Reveal")
    assert [e["text"] for e in obs["elements"]] == ["Reveal"]
    obs, *_ = open_env.step({"action": "CLICK", "element_id": reveal})
    late = by(obs, text="Late button")
    assert int(late[1:]) < int(reveal[1:]) and by(obs, text="Reveal") == reveal


def test_wait_is_bounded(open_env, site_url):
    saved = open_env.executor_config
    open_env.executor_config = dataclasses.replace(saved, max_wait_ms=50)
    try:
        open_page(open_env, site_url, "links.html")
        _, _, _, _, info = open_env.step({"action": "WAIT", "value": "60000"})
        assert info["waited_ms"] == 50 and info["timings"]["action"] < 5_000
    finally:
        open_env.executor_config = saved


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        '{"action": "FLY"}',
        {"action": "CLICK"},
        {"action": "CLICK", "element_id": "e9999"},
        {"action": "TYPE", "element_id": "e1", "value": ""},
        {"action": "NAVIGATE", "value": "ftp://example.com"},
        {"action": "TYPE", "element_id": "e1", "value": "x"},  # e1 is a link: not a text field
        None,
        12,
    ],
)
def test_bad_actions_never_crash_and_episode_goes_on(open_env, site_url, bad):
    obs = open_page(open_env, site_url, "links.html")
    obs, reward, terminated, truncated, info = open_env.step(bad)
    assert obs["last_action_error"] and info["action_error"] == obs["last_action_error"]
    assert (reward, terminated, truncated) == (0.0, False, False)
    obs, *_ = open_env.step({"action": "WAIT", "value": "0"})
    assert obs["last_action_error"] == ""


def test_finish_ends_episode_and_checks_answer(open_env, site_url):
    open_page(open_env, site_url, "result.html", answer="forty two")
    _, reward, terminated, _, info = open_env.step({"action": "FINISH", "value": "  Forty   TWO "})
    assert (reward, terminated, info["answer"], info["success"]) == (
        1.0,
        True,
        "  Forty   TWO ",
        True,
    )
    open_page(open_env, site_url, "result.html", answer="forty two")
    _, reward, terminated, _, info = open_env.step({"action": "FINISH", "value": "41"})
    assert (reward, terminated, info["success"]) == (0.0, True, False)
    open_page(open_env, site_url, "result.html")
    _, reward, terminated, _, info = open_env.step({"action": "FINISH", "value": "anything"})
    assert (reward, terminated, info["success"]) == (0.0, True, None)


@pytest.mark.parametrize(
    ("label", "typed", "stored"),
    [
        ("Day", "05/20/2010", "2010-05-20"),
        ("Day", "2010-05-20", "2010-05-20"),
        ("Day", "05202010", "2010-05-20"),
        ("Time", "9:37 PM", "21:37"),
        ("Time", "0937PM", "21:37"),
        ("Time", "07:05", "07:05"),
    ],
)
def test_type_into_date_and_time_inputs(open_env, site_url, label, typed, stored):
    obs = open_page(open_env, site_url, "dates.html")
    field = by(obs, label=label)
    obs, *_ = open_env.step({"action": "TYPE", "element_id": field, "value": typed})
    assert obs["last_action_error"] == ""
    assert next(e for e in obs["elements"] if e["element_id"] == field)["value"] == stored
    assert page_text(open_env, "#changes") == "1"


def test_type_invalid_date_is_an_error(open_env, site_url):
    obs = open_page(open_env, site_url, "dates.html")
    obs, *_ = open_env.step(
        {"action": "TYPE", "element_id": by(obs, label="Day"), "value": "next tuesday"}
    )
    assert "not a valid date" in obs["last_action_error"]


def test_covered_element_is_not_flagged_visible(open_env, site_url):
    obs = open_page(open_env, site_url, "covered.html")
    under = next(e for e in obs["elements"] if e["text"] == "Under the overlay")
    clipped = next(e for e in obs["elements"] if e["text"] == "Clipped away")
    free = next(e for e in obs["elements"] if e["text"] == "In the open")
    assert (under["visible"], clipped["visible"], free["visible"]) == (0, 0, 1)


def test_a_huge_live_value_still_fits_the_observation_space(open_env):
    # A textarea's value (or a placeholder) can be any length; the observation
    # must stay inside observation_space (Gymnasium's contract).
    open_env.reset(options={"url": "about:blank", "goal": "test"})
    open_env.page.set_content("<textarea></textarea><input>")
    open_env.page.evaluate(
        "() => { const n = (1 << 20) + 5;"
        " document.querySelector('textarea').value = 'x'.repeat(n);"
        " document.querySelector('input').placeholder = 'p'.repeat(n); }"
    )
    obs = open_env.observe()
    assert open_env.observation_space.contains(obs)
    value = next(e["value"] for e in obs["elements"] if e["tag"] == "textarea")
    assert value.startswith("xxx") and value.endswith("\u2026")
