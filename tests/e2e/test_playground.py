"""The playground page at / in headless Chromium, driven by Selenium through Debian's chromedriver: a
review typed and sent from the keyboard at a phone's width, a heatmap drawn for every layer and head,
and an access token asked for, used, and kept out of storage and the URL."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver import Chrome, ChromeOptions
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from sentiment_client._render import shown_words
from tests.e2e.conftest import RunningServer, launch

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# a bound against hangs on a busy machine, not a speed target
WAIT_S = 60.0
# Chromium's windows are at least 500 px wide, headless too: a phone's width is emulated instead
NARROWEST_WINDOW = 500
TOKEN = "playground-token-5f1c"
# long enough that its heatmaps are wider than a phone
REVIEW = (
    "The film was wonderful, the acting brilliant and moving; I laughed, I cried, and I would gladly "
    "watch every minute of it again with my whole family."
)
COMEDY, DRAMA = "A delightful, clever comedy.", "Tedious and dull."

T = TypeVar("T")

# every `.result` on the page, read in one call so that no element goes stale between reads: the
# picture shown (contributions or attention) and its words with their colours
RESULTS = """
return [...document.querySelectorAll('#results .result')].map((result) => ({
  label: result.querySelector('.label').textContent,
  score: result.querySelector('.score').textContent,
  pictures: [...result.querySelectorAll('.picture')].filter((p) => !p.hidden).map((p) => p.dataset.picture),
  words: [...result.querySelectorAll('.picture:not([hidden]) .words span.word')].map(
    (word) => [word.textContent, getComputedStyle(word).backgroundColor]),
}));
"""
# the heatmaps of the first result: whether each canvas differs from a blank one of its size, and the
# token labels along each map's columns and rows
HEATMAPS = """
const result = document.querySelector('#results .result');
return [...result.querySelectorAll('.heatmap')].map((figure) => {
  const canvas = figure.querySelector('canvas');
  const blank = document.createElement('canvas');
  [blank.width, blank.height] = [canvas.width, canvas.height];
  const labels = (axis) => [...figure.querySelectorAll(axis + ' span')].map((span) => span.textContent);
  return {drawn: canvas.width > 0 && canvas.toDataURL() !== blank.toDataURL(),
          keys: labels('.keys'), queries: labels('.queries')};
});
"""
# whether the first heatmap is wider than its box, and so scrolls inside it
MAP_SCROLLS = "const box = document.querySelector('.map-scroll'); return box.scrollWidth > box.clientWidth"


@pytest.fixture(scope="module")
def guarded_server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server that answers only callers bearing TOKEN."""
    running = launch(model_root, tmp_path_factory.mktemp("playground"), "--auth-token", TOKEN)
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()


@pytest.fixture
def browser() -> Iterator[Callable[[int], Chrome]]:
    """Opens headless Chromium `width` CSS pixels wide, its console log kept; quits whatever it opened,
    however the test ends."""
    assert CHROMIUM.is_file(), "Debian's chromium is needed (scripts/setup installs it)"
    assert CHROMEDRIVER.is_file(), "Debian's chromium-driver is needed (scripts/setup installs it)"
    opened: list[Chrome] = []

    def open_browser(width: int) -> Chrome:
        options = ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         f"--window-size={max(width, NARROWEST_WINDOW)},900"):  # fmt: skip
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # the driver named here, Selenium Manager never looks for one (on the network)
        driver = Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
        opened.append(driver)
        if width < NARROWEST_WINDOW:
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": True},
            )
        return driver

    try:
        yield open_browser
    finally:
        for driver in opened:
            driver.quit()


def call(server: RunningServer, path: str, body: dict[str, Any] | None = None, token: str = "") -> Any:
    """The HTTP API's JSON answer, outside the browser."""
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(
        server.http + path, data=None if body is None else json.dumps(body).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=WAIT_S) as response:
        return json.load(response)


def shown_error(driver: Chrome) -> str:
    text: str = driver.execute_script("return document.getElementById('error').textContent")
    return text


def wait_for(driver: Chrome, what: str, condition: Callable[[Chrome], T | None]) -> T:
    """`condition`'s first truthy answer within WAIT_S; fails at once if the page shows an error."""

    def check(driver: Chrome) -> T | Literal[False]:
        if error := shown_error(driver):
            raise AssertionError(f"the page shows an error while waiting for {what}: {error}")
        found = condition(driver)
        return False if found is None else found

    return WebDriverWait(driver, WAIT_S).until(check, f"gave up after {WAIT_S:.0f} s waiting for {what}")


def results(driver: Chrome, count: int) -> list[dict[str, Any]] | None:
    """The results shown, once there are `count` of them."""
    shown: list[dict[str, Any]] = driver.execute_script(RESULTS)
    return shown if len(shown) == count else None


def heatmaps(driver: Chrome, count: int) -> list[dict[str, Any]] | None:
    """The first result's heatmaps, once there are `count` of them."""
    shown: list[dict[str, Any]] = driver.execute_script(HEATMAPS)
    return shown if len(shown) == count else None


def open_page(driver: Chrome, server: RunningServer, info: dict[str, Any]) -> None:
    """The page, once it shows the model's name and version (from GET /v1/model)."""
    driver.get(server.http + "/")
    model = f"{info['name']} v{info['version']}"
    wait_for(driver, "the model's name", lambda d: model in d.find_element(By.ID, "model").text)


def console_errors(driver: Chrome) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_a_review_typed_and_sent_from_the_keyboard_at_a_phones_width(
    server: RunningServer, browser: Callable[[int], Chrome], tmp_path: Path
) -> None:
    info = call(server, "/v1/model")
    driver = browser(390)
    open_page(driver, server, info)
    assert driver.execute_script("return window.innerWidth") == 390
    assert results(driver, 0) == [], "results before anything was sent"
    driver.find_element(By.ID, "texts").send_keys(REVIEW)
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()

    [result] = wait_for(driver, "the result", lambda d: results(d, 1))
    assert result["label"] in info["labels"]
    assert 0.5 <= float(result["score"]) <= 1.0
    # by default the words are coloured by what moved the answer: the explanation's words, as written
    assert result["pictures"] == ["contributions"]
    asked = {"texts": [REVIEW], "attention": "ATTENTION_MODE_SUMMARY", "explain": "EXPLAIN_MODE_SHAPLEY"}
    answer = call(server, "/v1/predict", asked)["predictions"][0]
    explained = [word["text"] for word in answer["explanation"]["words"]]
    assert [text for text, _ in result["words"]] == explained
    assert "wonderful" in explained and ";" in explained
    colours = {colour for _, colour in result["words"]}
    assert len(colours) > 2, "the words are not coloured by their contributions"
    legend = driver.find_element(By.ID, "legend").text
    assert "faithful picture" in legend and "green towards positive" in legend
    # the switch shows attention instead, with no call to the server
    driver.find_element(By.CSS_SELECTOR, "#colour-by input[value='attention']").click()
    [result] = wait_for(
        driver,
        "the attention picture",
        lambda d: [r for r in results(d, 1) or [] if r["pictures"] == ["attention"]] or None,
    )
    words = [text for text, _ in result["words"]]
    assert "wonderful" in words and "acting" in words
    # the same words as the terminal's: WordPiece pieces joined, [CLS] and [SEP] left out
    attention = answer["attention"]
    assert words == [word.text for word in shown_words(attention["tokens"], attention["rollout"])]
    assert len({colour for _, colour in result["words"]}) > 1, "every word has the same colour"
    assert "where the model looked, not why" in driver.find_element(By.ID, "legend").text
    assert shown_error(driver) == ""

    driver.find_element(By.CSS_SELECTOR, "#results .result details.heatmaps summary").click()
    count = info["numLayers"] * info["numHeads"]
    wait_for(driver, f"{count} heatmaps", lambda d: heatmaps(d, count))
    # a map wider than the phone scrolls inside its own box; the page does not scroll sideways
    assert driver.execute_script(MAP_SCROLLS), "the map is not wider than its box: nothing was checked"
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 390, "scrolls sideways"
    shot = tmp_path / "playground.png"
    assert driver.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64) / 255
    assert pixels.std() > 0.02, "a blank screenshot"
    colourful = np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])
    assert (colourful > 0.1).mean() > 0.001, "no attention colour on the screen"
    assert console_errors(driver) == []


def test_two_texts_and_a_heatmap_for_every_layer_and_head(
    server: RunningServer, browser: Callable[[int], Chrome]
) -> None:
    info = call(server, "/v1/model")
    driver = browser(1200)
    open_page(driver, server, info)
    texts, submit = driver.find_element(By.ID, "texts"), driver.find_element(By.ID, "submit")

    # more lines than a request takes are refused before anything is sent
    too_many = info["maxTextsPerRequest"] + 1
    driver.execute_script("arguments[0].value = arguments[1]", texts, "\n".join(["fine"] * too_many))
    submit.click()
    refusal = f"{too_many} texts; the limit is {info['maxTextsPerRequest']}"
    WebDriverWait(driver, WAIT_S).until(lambda d: refusal in shown_error(d), "the refusal of too many lines")
    assert results(driver, 0) == []

    # blank lines are dropped
    driver.execute_script("arguments[0].value = ''", texts)
    texts.send_keys(COMEDY, Keys.ENTER, Keys.ENTER, "   ", Keys.ENTER, DRAMA)
    submit.click()
    shown = wait_for(driver, "two results", lambda d: results(d, 2))
    assert all(result["label"] in info["labels"] and result["words"] for result in shown)

    # the full weights are fetched for the text whose heatmaps are opened, from the keyboard
    driver.find_element(By.CSS_SELECTOR, "#results .result details.heatmaps summary").send_keys(Keys.ENTER)
    count = info["numLayers"] * info["numHeads"]
    maps = wait_for(driver, f"{count} heatmaps", lambda d: heatmaps(d, count))
    assert all(heatmap["drawn"] for heatmap in maps), "a blank heatmap"
    answer = call(server, "/v1/predict", {"texts": [COMEDY], "attention": "ATTENTION_MODE_SUMMARY"})
    tokens = answer["predictions"][0]["attention"]["tokens"]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert all(heatmap["keys"] == heatmap["queries"] == tokens for heatmap in maps)
    assert driver.execute_script("return document.querySelectorAll('#results canvas').length") == count
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert shown_error(driver) == ""

    # more words than one request may have explained: the answers come with attention, and a note says why
    driver.execute_script("arguments[0].value = arguments[1]", texts, "\n".join([REVIEW] * 20))
    submit.click()
    shown = wait_for(driver, "twenty results", lambda d: results(d, 20))
    assert all(result["pictures"] == ["attention"] and result["words"] for result in shown)
    note = driver.find_element(By.CSS_SELECTOR, "#results .note").text
    assert "more than the server explains in one request (512)" in note and "Showing attention only" in note
    assert console_errors(driver) == []


def test_the_token_is_asked_for_used_and_kept_nowhere(
    guarded_server: RunningServer, browser: Callable[[int], Chrome]
) -> None:
    driver = browser(1200)
    driver.get(guarded_server.http + "/")
    wait_for(driver, "the token form", lambda d: d.find_element(By.ID, "token").is_displayed())
    driver.find_element(By.ID, "texts").send_keys(REVIEW)
    driver.find_element(By.ID, "submit").click()

    # a wrong token is refused and asked for again; the right one, typed and sent with Enter, is used
    driver.find_element(By.ID, "token").send_keys("not-the-token")
    driver.find_element(By.ID, "token-submit").click()
    wait_for(
        driver,
        "the token asked for again",
        lambda d: (
            "refused" in d.find_element(By.ID, "token-hint").text
            and d.find_element(By.ID, "token").is_displayed()
        ),
    )
    driver.find_element(By.ID, "token").send_keys(TOKEN, Keys.ENTER)
    [result] = wait_for(driver, "the result", lambda d: results(d, 1))
    assert result["words"]
    info = call(guarded_server, "/v1/model", token=TOKEN)
    model = f"{info['name']} v{info['version']}"
    wait_for(driver, "the model's name", lambda d: model in d.find_element(By.ID, "model").text)
    assert not driver.find_element(By.ID, "token").is_displayed()
    assert shown_error(driver) == ""

    kept = driver.execute_script(
        "return [JSON.stringify({...localStorage}), JSON.stringify({...sessionStorage}), document.cookie,"
        " location.href, document.getElementById('token').value]"
    )
    assert not [place for place in kept if TOKEN in place], kept
