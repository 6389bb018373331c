"""Issue 11, cases 6 and 7 for chat templates: a template can neither hang the launch check nor a worker,
nor build huge values, and a template that reads the clock renders a date pinned in the manifest, so
reruns are byte-identical. Every template and record is built in a temp folder."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from chatshards_testing import run_job
from transforms import errors
from transforms import shard_format as sf

CHATML_TAIL = ("<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NEVER_ENDS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def chat(content: str) -> dict:
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": f"re: {content}"}]}


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def jsonl(path: Path, records) -> str:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("chatshards: error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_template_that_never_ends_is_refused_at_launch(tmp_path, capsys):
    template = write(tmp_path / "loop.jinja", "{% for m in messages %}" + NEVER_ENDS + CHATML_TAIL)
    data = jsonl(tmp_path / "a.jsonl", [chat("hi")])
    started = time.monotonic()
    code = run_job(["--input", data, "--output", str(tmp_path / "o"), "--chat-template", template,
                    "--template-timeout", "0.5"])
    assert code == 2
    assert time.monotonic() - started < 60
    assert "launch check" in one_line_error(capsys) and not (tmp_path / "o").exists()
    assert not [t for t in threading.enumerate() if t.name == "chatshards-launch-check"]  # interrupted, gone


def test_a_template_building_a_huge_value_is_refused_at_launch(tmp_path, capsys):
    template = write(tmp_path / "big.jinja", "{% for m in messages %}{{ 'x' * 100000000 }}" + CHATML_TAIL)
    data = jsonl(tmp_path / "a.jsonl", [chat("hi")])
    assert run_job(["--input", data, "--output", str(tmp_path / "o"), "--chat-template", template]) == 2
    error = one_line_error(capsys)
    assert "cannot be used for training" in error
    assert "builds a value of 100000000 items" in error and "took more than" not in error  # says which limit


def test_records_that_make_the_template_loop_or_grow_are_rejected_one_by_one(tmp_path):
    template = write(tmp_path / "picky.jinja",
                     "{% for m in messages %}{% if m.content == 'slow' %}" + NEVER_ENDS + "{% endif %}"
                     "{% if m.content == 'big' %}{{ 'x' * 100000000 }}{% endif %}" + CHATML_TAIL)
    data = jsonl(tmp_path / "a.jsonl", [chat("hi"), chat("slow"), chat("big"), chat("bye")])
    out = tmp_path / "o"
    assert run_job(["--input", data, "--output", str(out), "--chat-template", template, "--template-timeout", "1"]) == 0
    manifest = sf.load_manifest(str(out))
    assert manifest["counts"] == {"read": 4, "written": 2, "rejected": 2, "rows": 2}
    assert manifest["rejected_by_reason"] == {errors.TEMPLATE_LIMIT: 2}
    details = {json.loads(line)["record"]["messages"][0]["content"]: json.loads(line)["detail"]
               for path in (out / "rejected").glob("*.jsonl") for line in path.read_text().splitlines()}
    assert "builds a value" in details["big"] and "took more than 1 s" in details["slow"]  # each names its limit


def test_randomness_in_a_template_is_refused_at_launch(tmp_path, capsys):
    template = write(tmp_path / "rand.jinja", "{% for m in messages %}{{ range(10) | random }}" + CHATML_TAIL)
    data = jsonl(tmp_path / "a.jsonl", [chat("hi")])
    assert run_job(["--input", data, "--output", str(tmp_path / "o"), "--chat-template", template]) == 2
    assert "randomness" in one_line_error(capsys)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / sf.DATA_DIR).glob("*.arrow"))}


def test_a_template_reading_the_clock_renders_the_pinned_date(tmp_path):
    from transforms.template_env import today_iso
    from transforms.tokenizer_loading import bundled_tokenizer

    template = write(tmp_path / "clock.jinja",
                     "{% for m in messages %}{% if loop.first %}<|im_start|>system\nToday is "
                     "{{ strftime_now('%d %B %Y') }}.<|im_end|>\n{% endif %}" + CHATML_TAIL)
    data = jsonl(tmp_path / "a.jsonl", [chat(f"q{i}") for i in range(5)])
    runs = {}
    for name, extra in (("first", []), ("again", []), ("dated", ["--template-date", "2024-07-01"])):
        out = tmp_path / name
        assert run_job(["--input", data, "--output", str(out), "--chat-template", template, *extra]) == 0
        runs[name] = (sf.load_manifest(str(out)), shard_bytes(out))
    first, again, dated = runs["first"], runs["again"], runs["dated"]
    assert first[0]["config"]["tokenize"]["template_date"] == today_iso()  # recorded in the manifest
    assert first[1] == again[1] and first[0]["config_fingerprint"] == again[0]["config_fingerprint"]
    assert dated[0]["config"]["tokenize"]["template_date"] == "2024-07-01"
    assert dated[1] != first[1] and dated[0]["config_fingerprint"] != first[0]["config_fingerprint"]
    ids = ShardRows(tmp_path / "dated").first_input_ids()
    assert "Today is 01 July 2024." in bundled_tokenizer().decode(ids)


def test_a_template_without_clock_records_no_date(tmp_path):
    template = write(tmp_path / "plain.jinja", "{% for m in messages %}" + CHATML_TAIL)
    data = jsonl(tmp_path / "a.jsonl", [chat("hi")])
    assert run_job(["--input", data, "--output", str(tmp_path / "o"), "--chat-template", template]) == 0
    assert sf.load_manifest(str(tmp_path / "o"))["config"]["tokenize"]["template_date"] is None


class ShardRows:
    def __init__(self, root: Path):
        from transforms.runtime import ShardDataset

        self.dataset = ShardDataset(str(root))

    def first_input_ids(self) -> list[int]:
        return self.dataset[0]["input_ids"].tolist()


def test_call_with_time_limit_interrupts_and_propagates():
    from pipeline.launch.time_limit import LaunchCheckTimeout, call_with_time_limit

    def spin():
        while True:
            pass

    started = time.monotonic()
    with pytest.raises(LaunchCheckTimeout):
        call_with_time_limit(spin, 0.2)
    assert time.monotonic() - started < 5
    assert call_with_time_limit(lambda: 41 + 1, 5) == 42
    with pytest.raises(KeyError):
        call_with_time_limit(lambda: {}["missing"], 5)


@pytest.mark.parametrize("operator", ["+", "~"])
def test_a_loop_doubling_a_string_stops_at_the_size_limit(operator):
    """``ns.x ~ ns.x`` (and ``+``) in a loop would double a string past memory before the time limit: the
    size limit stops it at once, whichever operator builds it."""
    from transforms.template_env import ChatTemplate, TemplateLimitExceeded

    template = ChatTemplate("{% set ns = namespace(x='x') %}{% for i in range(60) %}"
                            f"{{% set ns.x = ns.x {operator} ns.x %}}{{% endfor %}}{{{{ ns.x|length }}}}")
    started = time.monotonic()
    with pytest.raises(TemplateLimitExceeded, match="builds a value of"):
        template.render(messages=[], variables={})
    assert time.monotonic() - started < 5
