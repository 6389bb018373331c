"""audit/report.html speaks plainly (transforms/audit/report.py): no image plots for text-only data, settings in
words (never Python's ``True``/``False``/``None`` or an empty cell), and a note on the template's default system
prompt that says what to do."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from pipeline.launch.main import main as default_command  # the local engine
from transforms.audit.report import IMAGE_PLOTS, PLOTS, render_report

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stats(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report") / "out"
    assert default_command(["--input", str(ROOT / "examples" / "data" / "*"), "--output", str(out), "--quiet"]) == 0
    return json.loads((out / "audit" / "stats.json").read_text())


def visible_text(page: str) -> str:
    page = re.sub(r"<(script|style)>.*?</\1>", "", page, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_text_only_data_has_no_image_plots(stats):
    page = render_report(stats, [])
    assert stats["totals"]["images"] == 0
    assert page.count('class="hist"') == len(PLOTS) - len(IMAGE_PLOTS)
    for name in IMAGE_PLOTS:
        assert f'id="plot-{name}"' not in page
    assert ">images<" not in page  # nor an images card
    with_images = copy.deepcopy(stats)
    with_images["totals"]["images"] = 3
    assert render_report(with_images, []).count('class="hist"') == len(PLOTS)


def test_settings_and_checks_are_words(stats):
    text = visible_text(render_report(stats, []))
    for python_value in ("True", "False", "None"):
        assert not re.search(rf"\b{python_value}\b", text), python_value
    assert "max length no limit" in text and "dedup off" in text
    assert re.search(r"max length / mode no limit / right", text)
    limited = copy.deepcopy(stats)
    limited["dataset"].update(max_length=512, dedup=True)
    text = visible_text(render_report(limited, []))
    assert "max length 512" in text and "dedup on" in text


def test_the_default_system_prompt_note_says_what_to_do(stats):
    template = stats["template"]
    assert template["injects_default_system_prompt"] and template["rows_with_default_system_prompt"] > 0
    page = render_report(stats, [])
    note = re.search(r'<div class="meta warn" id="default-system-prompt-note">([^<]*)</div>', page)
    assert note, "no note"
    text = note.group(1)
    assert template["default_system_prompt"] in text.replace("&#x27;", "'")
    assert f"to {template['rows_with_default_system_prompt']:,} row(s)" in text and "--system-prompt" in text
    quiet = copy.deepcopy(stats)
    quiet["template"]["rows_with_default_system_prompt"] = 0  # every record had its own system message
    assert 'id="default-system-prompt-note"' not in render_report(quiet, [])
