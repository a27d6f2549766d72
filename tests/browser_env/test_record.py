"""The human demo recorder, driven headlessly with real Playwright input events."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import gymnasium
import psutil
import pytest

import browser_env  # noqa: F401 - registers the env ids
from browser_env import record as record_mod
from browser_env.episodes import load_episode
from browser_env.record import DemoRecorder, RecordConfig
from browser_env.replay import replay_episode
from browser_env.tasks.server import serve_directory

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser


@pytest.fixture
def base_url():
    return serve_directory(FIXTURES)


def _recorder(tmp_path, options=None, env_id="browser_env/open-v0", seed=0):
    """A recorder that takes every navigation for the effect of the input
    before it, however slowly the browser reports it; a test that navigates
    itself (the address bar) sets ``caused_navigation_s`` to 0 around that."""
    env = gymnasium.make(env_id, render_mode="rgb_array", headless=True)
    rec = DemoRecorder(env, tmp_path, seed=seed, options=options, caused_navigation_s=10.0)
    return env, rec


class Person:
    """Mouse and keyboard input as a person gives it, letting the recorder run in between."""

    def __init__(self, rec):
        self.rec, self.page = rec, rec.page

    def settle(self, n=4):
        for _ in range(n):
            self.rec.poll(50)

    def click(self, selector):
        box = self.page.locator(selector).bounding_box()
        self.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        self.settle()

    def type(self, text):
        self.page.keyboard.type(text, delay=5)
        self.settle()

    def press(self, key):
        self.page.keyboard.press(key)
        self.settle()


def _ids(obs):
    """Elements by each of their names (text, label, placeholder)."""
    out = {}
    for e in obs["elements"]:
        for name in (e["placeholder"], e["label"], e["text"]):
            if name:
                out[name] = e
    return out


def test_demo_on_a_form_records_and_replays(tmp_path, base_url):
    env, rec = _recorder(
        tmp_path, {"url": base_url + "rec_start.html", "goal": "Order something green"}
    )
    try:
        path = rec.start()
        person = Person(rec)
        person.settle()
        rec.caused_navigation_s = 0.0  # no input caused this one
        rec.page.goto(base_url + "rec_other.html")  # the address bar
        person.settle()  # (goto returned after the navigation was reported)
        rec.caused_navigation_s = 10.0
        person.click("#to-form")  # a link: its navigation is the click's effect, not a NAVIGATE
        rec.page.wait_for_load_state("load")
        person.settle()
        person.click("#name")
        person.type("Ada")
        person.click("label[for=sub]")  # a label: recorded as a click on its checkbox
        person.click("#color")
        person.press("ArrowDown")
        person.press("Enter")  # closes the select popup; no form submission
        assert rec.page.eval_on_selector("#color", "e => e.value") == "Green"
        person.click("#card-text")  # not listed itself: its clickable ancestor is
        person.click("#add")
        person.click("#extra")  # appeared after the last step: indexed at the click
        rec.page.mouse.move(300, 300)
        rec.page.mouse.wheel(0, 1000)
        person.settle()
        rec.page.wait_for_timeout(200)
        person.click("#q")
        person.type("shoes")
        rec.page.keyboard.press("Enter")  # submits the form
        rec.page.wait_for_load_state("load")
        person.settle(8)
        rec.finish("done")
    finally:
        env.close()

    ep = load_episode(path)
    assert ep.complete and ep.meta.source == "human" and ep.meta.agent.name == "human"
    assert ep.meta.env_id == "browser_env/open-v0" and ep.meta.env_kwargs == {"task": "open"}
    assert ep.meta.reset_options == {
        "url": base_url + "rec_start.html",
        "goal": "Order something green",
    }
    verbs = [(s.action["action"], s.action.get("value")) for s in ep.steps]
    assert verbs == [
        ("NAVIGATE", base_url + "rec_other.html"),
        ("CLICK", None),
        ("TYPE", "Ada"),  # the click into the field is folded into the TYPE
        ("CLICK", None),
        ("TYPE", "Green"),
        ("CLICK", None),
        ("CLICK", None),
        ("CLICK", None),
        ("SCROLL", "down"),
        ("TYPE", "shoes"),
        ("PRESS_ENTER", None),
        ("FINISH", "done"),
    ]
    s = ep.steps
    assert s[0].observation["url"].endswith("rec_start.html")
    assert s[1].action["element_id"] == _ids(s[1].observation)["Open the form"]["element_id"]
    # every action is paired with the page BEFORE its effect
    form = _ids(s[2].observation)
    assert s[2].action["element_id"] == form["Name"]["element_id"] and form["Name"]["value"] == ""
    assert not form["Name"]["focused"] and s[2].extras["event"]["folded_click"]["kind"] == "CLICK"
    sub = _ids(s[3].observation)["Subscribe to news"]
    assert s[3].action["element_id"] == sub["element_id"] and sub["checked"] == 0
    assert (
        s[3].extras["event"]["how"] == "label" and _ids(s[3].observation)["Name"]["value"] == "Ada"
    )
    color = _ids(s[4].observation)["Color"]
    assert s[4].action["element_id"] == color["element_id"] and color["value"] == "Red"
    assert _ids(s[5].observation)["Pick this card"]["element_id"] == s[5].action["element_id"]
    assert s[5].extras["event"]["how"] == "ancestor"
    assert "Extra option" not in _ids(s[6].observation)
    assert _ids(s[7].observation)["Extra option"]["element_id"] == s[7].action["element_id"]
    assert _ids(s[9].observation)["search"]["value"] == ""
    enter = _ids(s[10].observation)["search"]
    assert s[10].action["element_id"] == enter["element_id"] and enter["value"] == "shoes"
    assert s[10].observation["url"] == base_url + "rec_form.html"
    assert "rec_result.html?" in s[11].observation["url"]
    assert all(st.observation["screenshot"] for st in s)
    assert ep.observation(2, screenshot=True)["screenshot"].shape == (720, 1280, 3)
    summary = _ids(ep.final_observation)["Summary"]["value"]
    assert summary == "name=Ada;color=Green;sub=yes;picked=card+extra;q=shoes"
    assert ep.outcome.answer == "done" and ep.outcome.steps == 12

    report = replay_episode(path)
    assert report.ok, report.summary()
    assert _ids(report.final_observation)["Summary"]["value"] == summary


def test_unmapped_click_is_kept_and_window_close_stops(tmp_path, base_url):
    env, rec = _recorder(
        tmp_path, {"url": base_url + "rec_start.html", "goal": "g", "answer": "Start"}
    )
    try:
        path = rec.start()
        person = Person(rec)
        person.settle()
        rec.page.mouse.click(600, 500)  # empty page area: no element to click
        person.settle()
        rec.page.close()  # the person closes the window
        person.settle()
        assert rec.window_closed
        rec.finish("start")
    finally:
        env.close()
    ep = load_episode(path)
    assert [st.action["action"] for st in ep.steps] == ["FINISH"]
    unmapped = ep.steps[0].extras["unmapped"]
    assert (
        unmapped[0]["kind"] == "CLICK"
        and unmapped[0]["how"] == "unindexed"
        and unmapped[0]["target"] == "html"
    )
    assert ep.outcome.success and ep.outcome.return_ == 1.0  # the answer is judged
    assert ep.final_observation["url"].endswith("rec_start.html")


def test_a_lone_surrogate_on_the_page_is_recorded_as_a_replacement_character(tmp_path, base_url):
    # the in-page snapshot reaches the recorder through its binding, not the
    # observer's read(): the recorder's own well_formed() must mend it, or the
    # episode writer cannot write the step (no UTF-8 file holds a lone surrogate)
    env, rec = _recorder(tmp_path, {"url": base_url + "site/surrogates.html", "goal": "g"})
    try:
        path = rec.start()
        person = Person(rec)
        person.settle()
        person.click("#b")
        rec.finish("")
    finally:
        env.close()
    click = load_episode(path).steps[0]
    assert click.action["action"] == "CLICK" and "late" not in click.extras["event"]
    assert "lone \ufffd here" in click.observation["text"]
    button = next(e for e in click.observation["elements"] if e["tag"] == "button")
    assert button["element_id"] == click.action["element_id"]
    assert (button["text"], button["name"]) == ("half \ufffd", "cut \ufffd label")


def test_miniwob_demo_ends_by_itself_and_replays(tmp_path):
    env, rec = _recorder(tmp_path, env_id="browser_env/miniwob.click-button-v0", seed=2)
    try:
        path = rec.start()
        goal = rec.base.goal
        label = goal.split('"')[1]
        person = Person(rec)
        person.settle()
        person.click(f"#area button:text-is('{label}')")
        assert rec.done
        rec.finish(None)
    finally:
        env.close()
    ep = load_episode(path)
    assert ep.meta.env_id == "browser_env/miniwob.click-button-v0" and ep.meta.seed == 2
    assert ep.meta.task_server and ep.meta.task_server.startswith("http://127.0.0.1:")
    assert len(ep.steps) == 1 and ep.steps[0].action["action"] == "CLICK" and ep.outcome.success
    report = replay_episode(path)
    assert report.ok, report.summary()


class Terminal:
    """``python -m browser_env.record`` as a person runs it, with stdin a real pipe."""

    def __init__(self, tmp_path, url):
        command = [
            sys.executable,
            "-m",
            "browser_env.record",
            f"url='{url}'",
            "goal=What is the heading?",
            "answer=Start",
            "headless=true",
            f"episodes_dir={tmp_path / 'episodes'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.out = b""

    def wait_for(self, text, timeout_s=60.0):
        """Read the output until ``text`` (a prompt ends without a newline)."""
        deadline = time.monotonic() + timeout_s
        while text.encode() not in self.out:
            assert time.monotonic() < deadline, f"no {text!r} in {self.out.decode()}"
            if select.select([self.proc.stdout], [], [], 1.0)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                assert chunk, f"the recorder ended before {text!r}: {self.out.decode()}"
                self.out += chunk

    def type(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def close_browser(self):
        """What closing Chromium's last window does: the browser process ends."""
        parents = {}  # Chromium pid -> its parent's pid; a renderer may come and go
        for proc in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if "chrom" in proc.name().lower():
                    parents[proc.pid] = proc.ppid()
            except psutil.Error:
                continue
        (browser,) = (pid for pid, parent in parents.items() if parent not in parents)
        psutil.Process(browser).terminate()

    def end(self, timeout_s=60.0):
        """Close stdin (nothing more is typed) and wait; the exit status."""
        self.proc.stdin.close()
        try:
            self.out += self.proc.stdout.read()
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.parametrize("stop", ["enter", "window"])
def test_entry_point_takes_the_answer_typed_once(tmp_path, base_url, stop):
    """Stopped by Enter or by the window closing, the one line typed after the
    prompt is the answer: no second reader of stdin takes it (then ``input``
    met the end of the pipe and the episode was aborted)."""
    terminal = Terminal(tmp_path, base_url + "rec_start.html")
    try:
        terminal.wait_for("press Enter here")
        if stop == "enter":
            terminal.type("")
        else:
            terminal.close_browser()
        terminal.wait_for("final answer (empty for none): ")
        terminal.type(" Start ")
    finally:
        status = terminal.end()
    assert status == 0, terminal.out.decode()
    (path,) = (tmp_path / "episodes").iterdir()
    ep = load_episode(path)
    assert ep.complete and [st.action["action"] for st in ep.steps] == ["FINISH"]
    assert ep.outcome.success and ep.outcome.answer == "Start"
    assert ep.meta.goal == "What is the heading?"
    assert ep.meta.env_kwargs == {"task": "open"}  # no window settings leak into replay


def test_a_line_read_for_a_stop_wait_that_gave_up_is_the_next_answer(monkeypatch):
    """The window closed while the stop wait's read was under way; the answer
    typed after the prompt lands in that read, maybe before ``ask`` asks:
    it is still the answer (it had made ``ask`` meet the end of stdin)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(" Start \nmore\n"))
    lines = record_mod._TerminalLines()
    assert lines.next_line().result(timeout=10) == " Start \n"  # read, not taken
    assert lines.ask("final answer: ") == " Start "
    stop = lines.next_line()  # Enter as the stop: taken, so the next ask reads on
    assert lines.take(stop) == "more\n"
    with pytest.raises(EOFError):
        lines.ask("final answer: ")


def test_entry_point_takes_every_env_spelling():
    for spelling in ("miniwob.click-test", "browser_env/miniwob.click-test-v0"):
        gym_id, options = record_mod._env_and_options(RecordConfig(env=spelling))
        assert gym_id == "browser_env/miniwob.click-test-v0" and options is None
    gym_id, options = record_mod._env_and_options(RecordConfig(url="http://127.0.0.1:1/", goal="g"))
    assert gym_id == "browser_env/open-v0" and options == {
        "url": "http://127.0.0.1:1/",
        "goal": "g",
    }
    with pytest.raises(ValueError):
        record_mod._env_and_options(RecordConfig())


@pytest.mark.parametrize("url", ["notaurl", "example.com/page", "ftp://example.com/", 42])
def test_a_start_url_of_the_wrong_form_is_refused_before_the_browser_starts(
    tmp_path, monkeypatch, url
):
    def launch(*args, **kwargs):
        raise AssertionError("the env (and its browser) was made for a URL open-v0 refuses")

    monkeypatch.setattr(gymnasium, "make", launch)
    with pytest.raises(ValueError, match="needs an http\\(s\\) or file URL, e.g. https://"):
        record_mod.record(RecordConfig(url=url, goal="g"), tmp_path)
    assert not any(tmp_path.iterdir())  # no episode either


def test_a_file_url_is_refused_unless_its_scheme_is_allowed(tmp_path, monkeypatch, virtual_display):
    """open-v0 starts on file: URLs where the env allows them; by default it
    does not (http and https), so that is refused before a browser starts,
    saying how to allow it."""
    made = []
    monkeypatch.setattr(gymnasium, "make", lambda *a, **k: made.append(k) or 1 / 0)
    # a window could be shown (none is: make fails)
    assert virtual_display, "this test needs a display: Xvfb or $DISPLAY"
    page = f"file://{tmp_path}/page.html"
    with pytest.raises(ValueError, match=r"file: URLs are not allowed .*allowed_url_schemes"):
        record_mod.record(RecordConfig(url=page, goal="g"), tmp_path)
    assert made == []
    allowed = RecordConfig(url=page, goal="g", env_kwargs={"allowed_url_schemes": ["file"]})
    with pytest.raises(ZeroDivisionError):  # past the checks: the env is made
        record_mod.record(allowed, tmp_path)
    assert made and made[0]["allowed_url_schemes"] == ["file"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "error: give url=... goal=... (or env=miniwob.<task>)"),
        (["url=example.com"], "error: open-v0 needs an http(s) or file URL"),
        (["env=miniwob.click-buton"], "Did you mean: `miniwob.click-button`?"),
    ],
)
def test_a_refused_command_line_is_one_error_line_and_exit_status_2(tmp_path, overrides, message):
    from _commands import python_m

    out = python_m("browser_env.record", *overrides, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, out.stderr
    assert "Traceback" not in out.stderr


def test_recording_with_no_display_is_refused_before_the_browser_starts(tmp_path):
    """A person records in a browser window: with no display (a server, CI)
    Chromium failed to start with a long traceback."""
    from _commands import python_m

    out = python_m(
        "browser_env.record",
        "url=http://127.0.0.1:1/",
        "goal=g",
        cwd=tmp_path,
        unset=("DISPLAY", "WAYLAND_DISPLAY"),
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: recording shows a browser window to act in, and there is no display here "
        "($DISPLAY and $WAYLAND_DISPLAY are unset): run it on a desktop, or under xvfb-run "
        "to try it"
    ]
    assert list((tmp_path / "outputs").rglob("*")) == []  # no run dir left


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+env_kwargs.foo=1",
            "error: env_kwargs: BrowserEnv.__init__() got an unexpected keyword ",
        ),
        ("+env_kwargs.extra_args='--lang=de'", "error: env_kwargs: extra_args is a sequence of "),
    ],
)
def test_env_kwargs_the_env_does_not_take_are_refused_in_one_line(tmp_path, override, message):
    """The env's TypeError was a traceback with status 1, leaving a run dir."""
    from _commands import python_m

    out = python_m(
        "browser_env.record", override, "env=miniwob.click-test", "headless=true", cwd=tmp_path
    )
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(message), out.stderr
    assert list((tmp_path / "outputs").rglob("*")) == []  # no run dir left


def test_stdin_ending_before_the_answer_keeps_the_episode_and_says_so_in_one_line(tmp_path):
    """Run with stdin at its end (``< /dev/null``): the recording stops at once,
    the answer cannot be read; that was EOFError's traceback with status 1."""
    from _commands import python_m

    episodes = tmp_path / "episodes"
    out = python_m(
        "browser_env.record",
        "env=miniwob.click-test",
        "headless=true",
        f"episodes_dir={episodes}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    (path,) = episodes.iterdir()
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: stdin ended before the final answer: {path} is kept as an incomplete "
        "episode (interrupted)"
    ]
    assert out.stdout.endswith("final answer (empty for none): \n"), out.stdout
    episode = load_episode(path)
    assert not episode.complete and episode.outcome.reason == "interrupted"


def test_ctrl_c_while_recording_keeps_the_episode_and_says_so_in_one_line(tmp_path):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it)
    while the person acts: status 130, one line on stderr, no traceback, the
    episode kept as incomplete."""
    import signal
    import subprocess
    import time

    from _commands import start_m

    episodes = tmp_path / "episodes"
    proc = start_m(
        "browser_env.record",
        "env=miniwob.click-test",
        "headless=true",
        f"episodes_dir={episodes}",
        f"hydra.run.dir={tmp_path / 'run'}",
        stdin=subprocess.PIPE,  # open: the recording waits for Enter
    )
    try:
        deadline = time.monotonic() + 120
        while not list(episodes.glob("*/episode.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # past the start, in the loop that waits for the person
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "record: stopped by Ctrl-C; the episode so far is kept as incomplete (interrupted)"
    ]
    (path,) = episodes.iterdir()
    episode = load_episode(path)
    assert not episode.complete and episode.outcome.reason.startswith("interrupted")


def test_hydra_config_matches_record_config():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(
        config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"
    ):
        cfg = compose(config_name="record", overrides=["url=http://127.0.0.1:1/", "goal=g"])
    assert set(cfg) == set(RecordConfig.__dataclass_fields__)
    assert RecordConfig(**cfg).url == "http://127.0.0.1:1/"


@pytest.mark.parametrize(
    ("override", "key"), [("seed=abc", "seed"), ("headless=maybe", "headless")]
)
def test_a_value_of_the_wrong_kind_is_hydras_error_naming_the_key(override, key):
    """``conf/record.yaml`` builds on :class:`RecordConfig` (``record_schema``):
    Hydra refuses a wrong kind or a misspelt key while it composes."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    conf = str(Path(__file__).resolve().parents[2] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as raised:
            compose(config_name="record", overrides=[override])
        assert f"full_key: {key}" in str(raised.value.__cause__)
        with pytest.raises(ConfigCompositionException, match="Could not override 'sead'"):
            compose(config_name="record", overrides=["sead=3"])
