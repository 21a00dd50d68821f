"""The `sentiment` command line against a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningServer

SENTIMENT = str(Path(sys.executable).with_name("sentiment"))


def run(
    server: RunningServer, *args: str, stdin: str | None = None, http: bool = False
) -> subprocess.CompletedProcess[str]:
    target = server.http if http else server.target
    return subprocess.run(
        [SENTIMENT, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "SENTIMENT_TARGET": target},
    )  # fmt: skip


def test_the_same_commands_over_http(server: RunningServer) -> None:
    over_grpc = run(server, "predict", "What a lovely film.", "Dreadful.", "--priority", "low")
    over_http = run(server, "predict", "What a lovely film.", "Dreadful.", "--priority", "low", http=True)
    assert over_http.returncode == 0, over_http.stderr
    labels = [[json.loads(line)["label"] for line in r.stdout.splitlines()] for r in (over_grpc, over_http)]
    assert labels[0] == labels[1] and len(labels[0]) == 2
    long = " ".join(["the plot wandered but the cast was lovely"] * 40)
    cut, whole = (json.loads(run(server, "predict", long, *flag).stdout) for flag in ((), ("--read-whole",)))
    assert cut["truncated"] and cut["windows"] == 1 and not whole["truncated"] and whole["windows"] > 1
    refused = run(server, "predict", "   ", http=True)
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr + refused.stdout


def test_predict_texts_file_and_stdin(server: RunningServer, tmp_path: Path) -> None:
    result = run(server, "predict", "What a lovely film.", "Dreadful.")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == ["What a lovely film.", "Dreadful."]
    assert all(r["label"] in {"positive", "negative"} and "batch" in r for r in records)
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text('id,text\n1,great\n2,"awful, truly"\n3,fine\n')
    from_csv = run(server, "predict", "--file", str(csv_file))
    assert [json.loads(line)["text"] for line in from_csv.stdout.splitlines()] == [
        "great",
        "awful, truly",
        "fine",
    ]
    lines = "\n".join(f"line {i}" for i in range(50)) + "\n"
    from_stdin = run(server, "predict", "--file", "-", "--output", "table", stdin=lines)
    assert from_stdin.returncode == 0 and "line 49" in from_stdin.stdout and "label" in from_stdin.stdout


def test_info_health_and_errors(server: RunningServer) -> None:
    info = run(server, "info")
    assert json.loads(info.stdout)["name"] == "sentiment"
    health = run(server, "health")
    assert health.returncode == 0 and health.stdout.strip() == "SERVING"
    bad = run(server, "predict", " ")
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr and "empty" in bad.stderr


def test_explain_writes_png_and_self_contained_html(server: RunningServer, tmp_path: Path) -> None:
    png, page = tmp_path / "attention.png", tmp_path / "attention.html"
    result = run(server, "explain", "The acting was wonderful", "--png", str(png), "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert "acting" in result.stdout and result.stdout.startswith(("positive", "negative"))
    # the terminal and the page's coloured words are the words alone by default; [CLS] and [SEP] on request
    words = re.compile(r'<span class="tok"[^>]*>([^<]*)</span>')
    assert "[CLS]" not in result.stdout and "[SEP]" not in result.stdout
    assert not {"[CLS]", "[SEP]"} & set(words.findall(page.read_text()))
    special_page = tmp_path / "special.html"
    with_specials = run(
        server, "explain", "The acting was wonderful", "--special-tokens", "--html", str(special_page)
    )
    assert "[CLS]" in with_specials.stdout and "[SEP]" in with_specials.stdout
    assert {"[CLS]", "[SEP]"} <= set(words.findall(special_page.read_text()))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    content = page.read_text()
    assert "acting" in content and "layer 1, head 1" in content
    assert "http://" not in content and "https://" not in content and "<script" not in content


def test_explain_why_colours_the_words_that_moved_the_answer(server: RunningServer, tmp_path: Path) -> None:
    text = "The flight was delayed four hours and the staff were rude."
    why = run(server, "explain", text, "--why")
    assert why.returncode == 0, why.stderr
    assert "how far each word moved the answer, shapley" in why.stdout and "rude" in why.stdout
    assert "faithful explanation" in why.stderr
    strongest = re.search(r"most: (.*)", why.stdout)
    assert strongest is not None and re.fullmatch(r"(\S+ [+-]\d\.\d\d(, )?)+", strongest.group(1).strip())
    looked = run(server, "explain", text)
    assert (
        "attention rollout" in looked.stdout and "--why shows which words moved the answer" in looked.stderr
    )
    occlusion = run(server, "explain", text, "--why", "--method", "occlusion", http=True)
    assert occlusion.returncode == 0 and "occlusion" in occlusion.stdout
    page = tmp_path / "why.html"
    assert run(server, "explain", text, "--why", "--html", str(page)).returncode == 0
    content = page.read_text()
    assert content.index("What moved the answer (shapley") < content.index("<h2>rollout</h2>")
    assert re.findall(r'title="([+-]\d\.\d{4})">rude<', content), "rude is not among the coloured words"
    assert "http://" not in content and "<script" not in content


def test_html_page_renders_in_headless_chromium(server: RunningServer, tmp_path: Path) -> None:
    import matplotlib.image

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (scripts/setup installs it)"
    page, shot = tmp_path / "attention.html", tmp_path / "shot.png"
    run(server, "explain", "A gripping, beautifully acted story", "--html", str(page))
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,800", f"--screenshot={shot}",
         page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.std() > 0.02  # not a blank page
    colourful = np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])
    assert (colourful > 0.1).mean() > 0.001  # the tokens' attention colours are drawn


@pytest.mark.parametrize("command", ["predict", "explain", "info", "health"])
def test_every_command_documents_target(command: str) -> None:
    result = subprocess.run([SENTIMENT, command, "--help"], capture_output=True, text=True, check=True)
    assert "Usage" in result.stdout
    top = subprocess.run([SENTIMENT, "--help"], capture_output=True, text=True, check=True)
    assert "--target" in top.stdout and "SENTIMENT_TARGET" in top.stdout
