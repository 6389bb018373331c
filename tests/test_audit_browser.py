"""audit/report.html in a real headless browser (Debian's chromium): loads offline without script
errors, has the expected elements, and its screenshot shows the histograms.

Needs ``/usr/bin/chromium`` (CI: ``apt-get install -y chromium``); skipped with a message otherwise.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest

from chatshards_testing import run_job, sample

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
BAR_RGB = (0x3B, 0x6F, 0xB6)  # transforms/audit/svg.py BAR

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) "
           "to test the report in a browser",
)


def chromium(tmp_path, *args, timeout=120):
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser_job") / "out"
    args = []
    for relative in ("sharegpt/fastchat_dummy_conversation.json", "openai/openai_cookbook_toy_chat_fine_tuning.jsonl",
                     "alpaca/llamafactory_identity.json", "edge_cases/axolotl_conversation.missingturns.json",
                     "edge_cases/qwen3vl_single_images_trailing_comma.json"):
        args += ["--input", str(sample(relative))]
    assert run_job([*args, "--output", str(out), "--max-length", "256"]) == 0
    return out / "audit" / "report.html", json.loads((out / "audit" / "stats.json").read_text())


def test_report_is_self_contained(report):
    page = report[0].read_text()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page), "the report must not load anything"
    assert "<link" not in page and "@import" not in page


def test_report_loads_without_script_errors_and_has_the_sections(report, tmp_path):
    path, stats = report
    dom = chromium(tmp_path, "--dump-dom", path.as_uri()).stdout
    status = re.search(r'<div id="js-status" data-errors="(-?\d+)" data-plots="(\d+)">([^<]*)</div>', dom)
    assert status, "the status script did not run"
    assert status.group(1) == "0" and status.group(3) == "ok", status.group(0)
    # every histogram is an inline <svg class="hist">; the two image plots only for data with images
    assert int(status.group(2)) == (8 if stats["totals"]["images"] else 6)
    for section in ("summary", "sources", "formats", "rejections", "distributions", "truncation", "duplicates",
                    "template", "samples", "bins"):
        assert f'<section id="{section}">' in dom, section
    for reason in stats["rejections"]["by_reason"]:
        assert f'<span class="reason">{reason}</span>' in dom
    assert dom.count('class="sample"') == len(stats["samples"]) >= 2
    assert '<span class="trained">' in dom and "&lt;|im_end|&gt;</span>" in dom
    assert len(re.findall(r'<rect class="bar"', dom)) > 20


def test_screenshot_shows_the_plots(report, tmp_path):
    from PIL import Image

    path, _ = report
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,3000", path.as_uri())
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[:2] == (3000, 1280)
    assert image.std() > 20, "the page looks blank"
    bars = (np.abs(image - np.array(BAR_RGB)).sum(axis=2) < 30)
    rows, cols = np.nonzero(bars)
    assert bars.mean() > 0.005, f"too few bar pixels: {bars.mean():.4f}"
    # the bars of the histograms spread over both columns of the plot grid and several plot rows
    assert cols.min() < 500 and cols.max() > 700 and rows.max() - rows.min() > 600
    # inside the plot area (bounding box of the bars) the page is far from blank
    area = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert (area.sum(axis=2) < 3 * 240).mean() > 0.05
