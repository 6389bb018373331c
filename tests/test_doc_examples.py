"""Every command and code block of README.md and docs/*.md runs, and shows what that run prints
(conventions: tests/doc_examples.py and docs/testing.md)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chatshards_testing import REPO
from doc_examples import blocks, commands, matches, run_document, with_this_python

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_block_of_the_document_runs_and_prints_what_it_shows(document, tmp_path):
    problems, ran = run_document(document, REPO, tmp_path / "work")
    assert not problems, "\n\n".join(problems)


# -- the harness itself ------------------------------------------------------------------------------------------

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_blocks_are_read_with_their_language_reason_and_output(tmp_path):
    doc = write(tmp_path, """\
        # Title
        <!-- not run: needs a Google Cloud project -->
        ```console
        $ gcloud dataflow flex-template run x
        ```

        ```python
        print("hi")
        ```
        ```text output
        hi
        ```

        ```yaml
        a: 1
        ```
        """)
    found = blocks(doc)
    assert [(b.language, b.not_run) for b in found] == [("console", "needs a Google Cloud project"),
                                                        ("python", None), ("yaml", None)]
    assert found[1].output is not None and found[1].output.text == "hi\n"
    assert found[0].line == 3


def test_console_commands_continue_over_backslashes_and_own_their_output():
    text = "$ python -m pipeline \\\n    --input a \\\n    --output b\nline one\nline two\n$ ls\n"
    assert commands(text) == [("python -m pipeline  --input a  --output b", "line one\nline two"), ("ls", "")]
    with pytest.raises(ValueError):
        commands("output first\n$ ls\n")


def test_output_matching_ignores_wrapping_times_and_rates_but_not_figures():
    shown = ("chatshards: read 15 records, wrote 9 rows (770 tokens, 203 trained) in 1 shard(s), rejected 6\n"
             "(empty_turn=1) in 3.0s (5 records/s) -> out/demo")
    printed = ("chatshards: read 15 records, wrote 9 rows (770 tokens, 203 trained) in 1 shard(s), rejected 6 "
               "(empty_turn=1) in 1.2s (13 records/s) -> out/demo\n")
    assert matches(shown, printed)
    assert not matches(shown, printed.replace("770 tokens", "771 tokens"))
    assert not matches(shown, printed.replace("1 shard(s)", "2 shard(s)"))
    assert matches("first ... last", "first anything at all\nover lines last")
    assert not matches("first ... last", "first anything at all")


def test_python_is_this_interpreter(monkeypatch):
    import sys

    assert with_this_python("python -m pipeline --x").startswith(sys.executable)
    assert with_this_python(".venv/bin/python -m pytest -q").startswith(sys.executable)
    assert with_this_python("cd a && python3 x.py").endswith(f"&& {sys.executable} x.py")
    assert with_this_python("ls pythonic") == "ls pythonic"
    assert with_this_python("CHATSHARDS_CACHE=c A=1 python -m x") == f"CHATSHARDS_CACHE=c A=1 {sys.executable} -m x"
    assert with_this_python("cd a; python x.py").endswith(f"; {sys.executable} x.py")


def test_a_document_runs_in_order_and_reports_what_differs(tmp_path):
    doc = write(tmp_path, """\
        ```console
        $ python -c "open('made.txt', 'w').write('x')"
        $ python -c "print(open('made.txt').read() * 3)"
        xxx
        ```

        ```python
        print(2 + 2)
        ```
        ```text output
        5
        ```

        ```json
        {"a": [1, 2}
        ```

        ```
        a plain block
        ```
        """)
    problems, ran = run_document(doc, REPO, tmp_path / "work")
    assert ran == 3
    assert len(problems) == 3, problems
    assert "printed:\n4\n" in problems[0] and "does not parse" in problems[1]
    assert "neither run nor marked" in problems[2]
