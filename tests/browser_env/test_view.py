"""The HTML viewer, checked in real headless Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from _episode_helpers import FakeBrowserEnv

from browser_env.episodes import AgentInfo, load_episode
from browser_env.view import main, write_reports
from browser_env.wrappers import AnnotatedAction, RecordEpisode

HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"


def _run(root, n_win=2, n_lose=1):
    env = RecordEpisode(
        FakeBrowserEnv(max_steps=3), root, agent=AgentInfo(name="llm", model=HOSTILE)
    )
    for seed in range(n_win):
        env.reset(seed=seed)
        env.step(
            AnnotatedAction(
                {"action": "TYPE", "element_id": "e3", "value": HOSTILE},
                prompt=f"prompt {HOSTILE}",
                raw_output=f"raw {HOSTILE}",
                guards=[HOSTILE],
            )
        )
        env.step(AnnotatedAction({"action": "CLICK", "element_id": "e2"}, raw_output="click ok"))
    env.close()
    other = RecordEpisode(FakeBrowserEnv(max_steps=2, task="other-task"), root)
    for seed in range(n_lose):
        other.reset(seed=100 + seed)
        other.step("nonsense " + HOSTILE)
        other.step({"action": "SCROLL", "value": "down"})
    other.close()
    return env.episode_dirs + other.episode_dirs


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def _open(browser, path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, dialogs


@pytest.mark.browser
def test_episode_report_in_chromium(tmp_path, browser):
    dirs = _run(tmp_path)
    report = write_reports(dirs[0])
    assert report == dirs[0] / "report.html"
    page, dialogs = _open(browser, report)
    try:
        assert page.evaluate("window.__pwned") is None and not dialogs
        body = page.inner_text("body")
        # hostile text is shown literally, never interpreted
        assert f"raw {HOSTILE}" in body
        assert page.locator("script").count() == 0
        assert page.locator("img[src=x]").count() == 0
        assert 'Click <b>OK</b> & "win" (seed 0)' in body
        assert "success" in body and '{"action": "CLICK", "element_id": "e2"}' in body
        steps = page.locator("section.step")
        assert steps.count() == 3  # two steps and the final page
        # the screenshot loaded and the acted element (e3 at step 0, e2 at step 1) is outlined at its bbox
        for index, (eid, x) in enumerate((("e3", 4.0), ("e2", 30.0))):
            section = page.locator(f"#step-{index}")
            img = section.locator("img")
            assert img.evaluate("i => i.complete && i.naturalWidth") == 64
            box = section.locator(".bbox")
            assert box.get_attribute("data-element-id") == eid
            ib, bb = img.bounding_box(), box.bounding_box()
            scale = ib["width"] / 64
            assert bb["x"] - ib["x"] == pytest.approx(x * scale, abs=1.5)
            assert bb["y"] - ib["y"] == pytest.approx(10.5 * scale, abs=1.5)
            assert bb["width"] == pytest.approx(20.0 * scale, abs=1.5)
        shot = page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert len(shot) > 10_000
        from io import BytesIO

        from PIL import Image

        pixels = np.asarray(Image.open(BytesIO(shot)).convert("RGB"))
        # the red outline is drawn
        assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 100)).sum() > 50
    finally:
        page.close()


@pytest.mark.browser
def test_run_index_in_chromium(tmp_path, browser, capsys):
    dirs = _run(tmp_path, n_win=2, n_lose=1)
    # an incomplete episode and a corrupt one are shown, not hidden
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "episode.json").write_text("{")
    assert main([str(tmp_path)]) == 0
    index = tmp_path / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    page, dialogs = _open(browser, index)
    try:
        assert page.evaluate("window.__pwned") is None and not dialogs
        rows = page.locator("#tasks tr.task")
        assert rows.count() == 2
        cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(2)]
        assert cells[0][:4] == ["fake-click", "2", "2", "100%"]
        assert cells[1][:4] == ["other-task", "1", "0", "0%"]
        assert page.locator("#episodes tr.episode").count() == 3
        assert "broken" in page.inner_text("body") and "episode.json" in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "index.png"))
        # links lead to the episode reports
        page.locator("#episodes a").first.click()
        page.wait_for_load_state("load")
        assert page.url.endswith("/report.html") and load_episode(
            dirs[0]
        ).meta.episode_id in page.inner_text("h1")
        assert page.locator("#step-0 img").evaluate("i => i.naturalWidth") == 64
    finally:
        page.close()


def test_main_reports_bad_path(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2  # a refusal, as browser_env.replay's
    assert "missing" in capsys.readouterr().err


def test_main_refuses_a_directory_without_episodes(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an episode")
    assert main([str(tmp_path)]) == 2
    assert "no episodes in" in capsys.readouterr().err
    assert not (tmp_path / "index.html").exists()


def _without_bboxes(directory):
    """Every element of every step as the format allows it: no ``bbox``."""
    steps = directory / "steps.jsonl"
    records = [json.loads(line) for line in steps.read_text().splitlines() if line.strip()]
    for record in records:
        for element in record["observation"]["elements"]:
            del element["bbox"]
    steps.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_an_element_without_a_bbox_is_shown_without_an_outline(tmp_path, capsys):
    """The format's bbox is optional; the report crashed on its absence (KeyError)."""
    (directory, *_) = _run(tmp_path, n_win=1, n_lose=0)
    _without_bboxes(directory)
    load_episode(directory)  # the loader takes it
    assert main([str(directory)]) == 0, capsys.readouterr().err
    report = (directory / "report.html").read_text()
    assert "id='step-0'" in report and "class='bbox'" not in report
    assert "<img src='screenshots/step_00000.png'" in report


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n cut off", b"not an image"])
def test_an_unreadable_screenshot_is_named_not_fatal(tmp_path, capsys, content):
    (directory, *_) = _run(tmp_path, n_win=1, n_lose=0)
    (directory / "screenshots" / "step_00000.png").write_bytes(content)
    load_episode(directory)  # the loader takes it
    assert main([str(directory)]) == 0, capsys.readouterr().err
    report = (directory / "report.html").read_text()
    assert "unreadable screenshot screenshots/step_00000.png" in report
    assert report.count("class='bbox'") == 1  # step 1's screenshot is read and outlined


def test_an_episode_that_cannot_be_read_is_listed_on_the_index(tmp_path, capsys):
    """One episode whose steps.jsonl is a directory (IsADirectoryError) aborted the
    whole index; it is listed under the unreadable episodes, the rest reported."""
    unreadable, *rest = _run(tmp_path, n_win=2, n_lose=1)
    (unreadable / "steps.jsonl").unlink()
    (unreadable / "steps.jsonl").mkdir()
    _without_bboxes(rest[0])
    (rest[1] / "screenshots" / "step_00000.png").write_bytes(b"")
    assert main([str(tmp_path)]) == 0, capsys.readouterr().err
    index = (tmp_path / "index.html").read_text()
    assert index.count("<tr class='episode'>") == 2
    (listed,) = re.findall(r"<h2>Unreadable episodes</h2><ul>(.*?)</ul>", index)
    assert unreadable.name in listed and "Is a directory" in listed
    assert all((d / "report.html").is_file() for d in rest)


def test_an_episode_dir_that_cannot_be_read_is_refused_in_one_line(tmp_path, capsys):
    (directory, *_) = _run(tmp_path, n_win=1, n_lose=0)
    (directory / "steps.jsonl").unlink()
    (directory / "steps.jsonl").mkdir()
    assert main([str(directory)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "steps.jsonl" in err[0], err
