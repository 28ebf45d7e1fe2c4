"""The web app end to end in a real headless Chromium (Debian's chromium + chromedriver, never
downloaded): open a predicted file, play, jump to the next review segment, relabel it by
keyboard, save, reload the page, then check the file on disk and the canvas pixels of the
edited larva."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from taggingbackends.data.labels import Labels

try:
    from selenium.webdriver.common.keys import Keys
except ImportError:  # pragma: no cover - selenium is a test dependency
    Keys = None

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()) or
                                shutil.which("chromium") is None,
                                reason="Debian chromium and chromium-driver are not installed")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """simulate + predict (tiny), then the server in a background thread."""
    from tagging_helpers import simulate_and_predict
    from taggingbackends.webapp.server import Server
    from taggingbackends.webapp.session import Session

    data = simulate_and_predict(tmp_path_factory.mktemp("browser"), larvae=3, duration=10.0, seed=5)
    server = Server(Session.open(data / "predicted.label")).start()
    yield data, server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                     "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait_for(predicate, timeout=15.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ready(driver):
    assert driver.execute_async_script(
        "const done = arguments[0]; window.app.ready.then(() => done(true), (e) => done(String(e)))") is True


def press(driver, *keys, control=False):
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    if control:
        chain.key_down(Keys.CONTROL)
    for key in keys:
        chain.send_keys(key)
    if control:
        chain.key_up(Keys.CONTROL)
    chain.perform()


def pixel_of_larva(driver, larva: int, t: float) -> tuple:
    """Seek to ``t`` (paused), wait for the frame, read the arena's pixel at the larva's spine midpoint."""
    return tuple(driver.execute_async_script("""
        const [larva, t, done] = arguments;
        const app = window.app;
        app.setPlaying(false);
        app.select(larva).then(() => { app.seek(t); return app.chunkReady(t); }).then(() => {
          requestAnimationFrame(() => requestAnimationFrame(() => {
            const [x, y] = app.screenPointOf(larva);
            const canvas = document.getElementById("arena");
            const ratio = canvas.width / canvas.getBoundingClientRect().width;
            const data = canvas.getContext("2d").getImageData(Math.round(x * ratio), Math.round(y * ratio), 1, 1).data;
            done([data[0], data[1], data[2]]);
          }));
        });
    """, larva, t))


def rgb(hex_color: str) -> tuple:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))


def close(a, b, tolerance=12) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


def test_review_relabel_save_reload(served, browser, tmp_path):
    data, server = served
    browser.get(server.url)
    ready(browser)
    state = lambda expression: browser.execute_script(f"return window.app.state.{expression}")  # noqa: E731
    names, colors = state("names"), state("colors")

    # play: time advances
    t_start = state("t")
    browser.find_element("id", "play").click()
    wait_for(lambda: state("t") > t_start + 0.3, what="playback")
    browser.find_element("id", "play").click()
    assert not state("playing")

    # click an ethogram row: that larva is selected; drag on its timeline: steps selected;
    # Del clears them, Ctrl+Z brings them back (and the page is clean again)
    from selenium.webdriver.common.action_chains import ActionChains

    ethogram = browser.find_element("id", "ethogram")
    row_height = browser.execute_script("return window.app.ethogram.rowHeight")
    height = ethogram.size["height"]
    row_1 = 2 + row_height * 1.5 - height / 2   # the middle of the second row, from the centre
    ActionChains(browser).move_to_element_with_offset(ethogram, 0, row_1).click().perform()
    second = browser.execute_script("return window.app.state.order[1]")
    wait_for(lambda: state("detail") is not None and state("detail.id") == second, what="selection by ethogram")
    timeline = browser.find_element("id", "timeline")
    ActionChains(browser).move_to_element_with_offset(timeline, -100, 0).click_and_hold() \
        .move_by_offset(80, 0).release().perform()
    first, last = wait_for(lambda: state("selection"), what="drag selection")
    assert last > first
    labels_before = state("detail.labels")
    press(browser, Keys.DELETE)
    wait_for(lambda: state("dirty"), what="clearing")
    assert state("detail.labels")[first:last + 1] == [-1] * (last - first + 1)
    press(browser, "z", control=True)
    wait_for(lambda: not state("dirty"), what="undo")
    assert state("detail.labels") == labels_before

    # next review segment (N): the larva is selected, the segment selected and looped
    press(browser, "n")
    wait_for(lambda: state("reviewIndex") == 0 and state("loop") is not None, what="review segment")
    segment = state("queue[0]")
    assert state("selected") == segment["larva"]
    assert state("selection") == [segment["first"], segment["last"]]
    assert state("loop")[0] <= segment["start"] and state("loop")[1] >= segment["end"]
    wait_for(lambda: state("playing"), what="the segment playing in a loop")
    times = browser.execute_script("return window.app.state.detail.t")
    middle = times[(segment["first"] + segment["last"]) // 2]
    old = names.index(segment["label"])
    assert close(pixel_of_larva(browser, segment["larva"], middle), rgb(colors[old]))

    # relabel by keyboard, save with Ctrl+S
    new = next(i for i in range(len(names)) if i != old and names[i].startswith(("roll", "hunch", "back")))
    press(browser, str(new + 1))
    wait_for(lambda: state("dirty"), what="the edit")
    assert not browser.find_element("id", "dirty").get_attribute("hidden")
    press(browser, "s", control=True)
    wait_for(lambda: not state("dirty"), what="the save")
    browser.save_screenshot(str(tmp_path / "edited.png"))

    saved = Labels.load(data / "predicted.edited.label")
    entries = saved.tracks[segment["larva"]].labels
    length = segment["last"] - segment["first"] + 1
    assert entries[segment["first"]:segment["last"] + 1] == [[names[new], "edited"]] * length
    before = entries[segment["first"] - 1] if segment["first"] else None
    assert before is None or "edited" not in before

    # reload: the page shows the saved edit; the edited larva is drawn in the new label's colour
    browser.refresh()
    ready(browser)
    assert state("dirty") is False
    assert close(pixel_of_larva(browser, segment["larva"], middle), rgb(colors[new]))
    detail_edited = browser.execute_script("return window.app.state.detail.edited")
    assert detail_edited[segment["first"]:segment["last"] + 1] == [1] * length
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
