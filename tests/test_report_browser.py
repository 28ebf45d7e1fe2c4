"""The report in a real headless Chromium (Debian `chromium` + `chromium-driver`, selenium):
every image decodes, the console stays clean, the numbers shown are the evaluation's.

selenium-manager never runs (it would download a driver): the browser and the driver are
given by path. Skipped, with the reason shown, only where /usr/bin/chromium is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from report_fixtures import TAGGER_LABELS, predicted_run, realistic_evaluation
from taggingbackends.cli import main
from taggingbackends.report import number

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package chromium)")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver  # a test dependency: missing is a failure, not a skip
    from selenium.webdriver.chrome.service import Service

    if not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMIUM} is installed but {CHROMEDRIVER} is not (Debian package chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,2000", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium reach the network
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    predicted = predicted_run(folder, n_larvae=3, duration=15.0, seed=8)
    evaluation = realistic_evaluation(seed=11)
    (folder / "evaluation.json").write_text(json.dumps(evaluation))
    out = folder / "report.html"
    try:
        main(["report", str(predicted), str(folder / "evaluation.json"), "-o", str(out)])
    except SystemExit as done:
        assert not done.code
    return out, evaluation


def test_report_renders_in_chromium(driver, report_page):
    from selenium.webdriver.common.by import By

    path, evaluation = report_page
    driver.get(path.as_uri())
    assert driver.title == "Behaviour report"
    images = driver.find_elements(By.TAG_NAME, "img")
    assert len(images) == 8
    for img in images:
        width, height, complete = driver.execute_script(
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight, arguments[0].complete];", img)
        assert complete and width > 0 and height > 0, img.get_attribute("alt")
        assert img.size["width"] > 0 and img.size["height"] > 0  # laid out, not hidden

    problems = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert problems == []

    shown = {}
    for cell in driver.find_elements(By.CSS_SELECTOR, "#evaluation-1-per-class td[data-metric]"):
        shown[cell.get_attribute("data-label"), cell.get_attribute("data-metric")] = cell.text
    assert len(shown) == 4 * len(TAGGER_LABELS)
    for name in TAGGER_LABELS:
        for metric in ("precision", "recall", "f1", "support"):
            assert shown[name, metric] == number(evaluation["per_class"][name][metric]), (name, metric)
    accuracy = driver.find_element(By.CSS_SELECTOR, '#evaluation-1-overall td[data-metric="accuracy"]')
    assert accuracy.text == f"{evaluation['accuracy']:.3f}"
    for kind in ("macro", "weighted"):
        for metric in ("precision", "recall", "f1"):
            cell = driver.find_element(
                By.CSS_SELECTOR, f'#evaluation-1-averages td[data-average="{kind}"][data-metric="{metric}"]')
            assert cell.text == f"{evaluation[kind][metric]:.3f}"
    counts = evaluation["confusion"]["counts"]
    for i, truth in enumerate(TAGGER_LABELS):
        for j, predicted in enumerate(TAGGER_LABELS):
            cell = driver.find_element(By.CSS_SELECTOR, f'#evaluation-1-confusion-counts '
                                                        f'td[data-truth="{truth}"][data-predicted="{predicted}"]')
            assert cell.text == str(counts[i][j])
    for name in TAGGER_LABELS:
        cell = driver.find_element(By.CSS_SELECTOR, f'#evaluation-1-bouts td[data-label="{name}"]'
                                                    '[data-metric="bouts.recall"]')
        assert cell.text == number(evaluation["bouts"]["per_class"][name]["recall"])


def test_a_broken_image_would_be_caught(driver, tmp_path):
    """The check above can fail: an undecodable image has naturalWidth 0."""
    from selenium.webdriver.common.by import By

    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"><title>b</title></head>'
                    '<body><img src="data:image/png;base64,iVBORw0KGgoAAAAA"></body></html>')
    driver.get_log("browser")  # drop earlier entries
    driver.get(page.as_uri())
    img = driver.find_element(By.TAG_NAME, "img")
    assert driver.execute_script("return arguments[0].naturalWidth;", img) == 0

