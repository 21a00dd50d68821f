"""How long the playground page takes, in a real headless Chromium, from pressing Classify to the
coloured words on screen, against this server on a model directory. Prints one JSON line.

    python -m bench.page --model-dir models/sentiment [--runs 30]

Needs Debian's chromium and chromedriver (scripts/setup installs them) and the dev extra (selenium).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

from selenium.webdriver import Chrome, ChromeOptions
from selenium.webdriver.chrome.service import Service

from bench.report import start_ours
from bench.run import stop

REVIEWS = [
    "The film was wonderful, the acting brilliant and moving; I would gladly watch it again.",
    "A tedious, overlong mess with a plot that goes nowhere and characters I stopped caring about.",
    "Not bad at all: the first hour drags, but the ending is worth the wait.",
]
# sets the text box, presses Classify, and answers how many milliseconds passed until the page
# showed a result with its coloured words
CLASSIFY = """
const [text, done] = arguments;
const results = document.querySelector('#results');
results.replaceChildren();
const box = document.querySelector('#texts');
box.value = text;
box.dispatchEvent(new Event('input', {bubbles: true}));
const started = performance.now();
const watch = new MutationObserver(() => {
  if (results.querySelector('.result .words span.word')) {
    watch.disconnect();
    requestAnimationFrame(() => done(performance.now() - started));  // once it is painted
  }
});
watch.observe(results, {childList: true, subtree: true});
document.querySelector('#submit').click();
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    server, _, _, http_port = start_ours([str(args.model_dir)])
    options = ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        driver.set_script_timeout(60)
        driver.get(f"http://127.0.0.1:{http_port}/")
        driver.execute_async_script(CLASSIFY, REVIEWS[0])  # the first call warms the page up
        times = [driver.execute_async_script(CLASSIFY, REVIEWS[i % len(REVIEWS)]) for i in range(args.runs)]
    finally:
        driver.quit()
        stop(server)
    times.sort()
    print(
        json.dumps(
            {
                "model_dir": str(args.model_dir),
                "runs": len(times),
                "submit_to_coloured_words_ms": {
                    "p50": statistics.median(times),
                    "p90": times[int(0.9 * (len(times) - 1))],
                    "max": times[-1],
                },
                "chromium": subprocess.run(
                    ["/usr/bin/chromium", "--version"], capture_output=True, text=True
                ).stdout.strip(),
            }
        )
    )


if __name__ == "__main__":
    main()
