"""Golden files for the shipped examples: the demo job's output on ``examples/data/*`` is pinned.

``tests/golden/examples_rows.txt`` holds, per record (by file name and index, in that order), either each
of its rows decoded with the bundled tokenizer and the trained tokens between ``⟦`` and ``⟧``, or the
record's rejection reason; ``tests/golden/examples_manifest.json`` holds the demo manifest's counts.
The job runs exactly as README's demo command (``python -m pipeline --input 'examples/data/*' ...``).

After an intended change of the output, regenerate them and review the diff::

    CHATSHARDS_REGENERATE_GOLDEN=1 python -m pytest -q tests/test_golden_examples.py
    git diff tests/golden/

A mismatch fails with a unified diff of the expected and the produced text.
"""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from chatshards_testing import run_job
from doc_examples import blocks as doc_blocks
from doc_examples import matches as doc_matches

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE_ENV = "CHATSHARDS_REGENERATE_GOLDEN"
IGNORE = -100
OPEN, CLOSE = "⟦", "⟧"


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden") / "demo"
    cwd = os.getcwd()
    os.chdir(ROOT)  # the demo command's relative glob, as README gives it
    try:
        assert run_job(["--input", "examples/data/*", "--output", str(out)]) == 0
    finally:
        os.chdir(cwd)
    return out


def marked_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """The row decoded run by run, trained runs (``labels != -100``) between ``⟦`` and ``⟧``."""
    parts, start = [], 0
    for end in range(1, len(input_ids) + 1):
        if end == len(input_ids) or (labels[end] != IGNORE) != (labels[start] != IGNORE):
            text = tokenizer.decode(input_ids[start:end], skip_special_tokens=False)
            parts.append(f"{OPEN}{text}{CLOSE}" if labels[start] != IGNORE else text)
            start = end
    return "".join(parts)


def rows_view(out: Path, tokenizer) -> str:
    """Every example record, by (file name, index): its rows with the trained spans marked, or its rejection."""
    entries: list[tuple[tuple, str]] = []
    for shard in sorted((out / "data").glob("*.arrow")):
        for row in pa.ipc.open_stream(shard.read_bytes()).read_all().to_pylist():
            name = os.path.basename(row["source"])
            header = (f"== {name} #{row['index']} row {row['row_of_record']} ({row['format']}, {row['length']} tokens, "
                      f"{row['num_loss_tokens']} trained, turn {row['turn']}, truncated {row['truncated']})")
            text = marked_text(tokenizer, row["input_ids"], row["labels"])
            entries.append(((name, row["index"], row["row_of_record"]), f"{header}\n{text}\n"))
    for path in sorted((out / "rejected").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            name = os.path.basename(item["source"])
            entries.append(((name, item["index"], -1), f"== {name} #{item['index']} rejected: {item['reason']}\n"))
    return "".join(text for _, text in sorted(entries))


def counts_view(out: Path) -> str:
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    pinned = {
        "counts": manifest["counts"],
        "rejected_by_reason": manifest["rejected_by_reason"],
        "totals": manifest["totals"],
        "num_shards": manifest["num_shards"],
        "shards": [{k: shard[k] for k in ("path", "rows", "records", "tokens", "loss_tokens")}
                   for shard in manifest["shards"]],
        "rejected_files": [{k: entry[k] for k in ("path", "rows")} for entry in manifest["rejected_files"]],
        "audit_counts": manifest.get("audit", {}).get("counts"),
    }
    return json.dumps(pinned, indent=2, sort_keys=True) + "\n"


def check_golden(name: str, produced: str, *, folder: Path = GOLDEN) -> None:
    path = folder / name
    if os.environ.get(REGENERATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(produced, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path} is missing; create it with {REGENERATE_ENV}=1 and review it")
    expected = path.read_text(encoding="utf-8")
    if produced != expected:
        diff = difflib.unified_diff(expected.splitlines(keepends=True), produced.splitlines(keepends=True),
                                    fromfile=f"golden/{name}", tofile="produced")
        pytest.fail(f"the demo output differs from tests/golden/{name} (if intended: {REGENERATE_ENV}=1, then review "
                    "git diff tests/golden/):\n" + "".join(diff), pytrace=False)


def test_every_example_record_decodes_to_its_golden_trained_view(demo_output, qwen_tokenizer):
    view = rows_view(demo_output, qwen_tokenizer)
    assert view.count(OPEN) >= 9  # every written row has trained tokens
    check_golden("examples_rows.txt", view)


def test_the_demo_manifest_counts_are_golden(demo_output):
    check_golden("examples_manifest.json", counts_view(demo_output))


def test_a_golden_mismatch_fails_with_a_readable_diff(tmp_path, monkeypatch):
    monkeypatch.delenv(REGENERATE_ENV, raising=False)
    (tmp_path / "x.txt").write_text("a\nb\n", encoding="utf-8")
    check_golden("x.txt", "a\nb\n", folder=tmp_path)  # equal: passes
    with pytest.raises(pytest.fail.Exception) as failure:
        check_golden("x.txt", "a\nc\n", folder=tmp_path)
    assert "-b\n" in str(failure.value) and "+c\n" in str(failure.value) and REGENERATE_ENV in str(failure.value)


def test_marked_text_brackets_exactly_the_trained_runs(qwen_tokenizer):
    ids = qwen_tokenizer.encode("hello world again", add_special_tokens=False)
    assert len(ids) == 3
    assert marked_text(qwen_tokenizer, ids, [IGNORE, ids[1], ids[2]]) == f"hello{OPEN} world again{CLOSE}"
    assert marked_text(qwen_tokenizer, ids, [ids[0], IGNORE, ids[2]]) == f"{OPEN}hello{CLOSE} world{OPEN} again{CLOSE}"
    assert marked_text(qwen_tokenizer, ids, [IGNORE] * 3) == "hello world again"


def test_the_worked_example_of_the_labels_page_is_what_its_code_prints(demo_output, capsys):
    """docs/labels.md's "Worked example" runs its own python block on the demo output and shows what it prints
    (the doc harness runs the whole page in the slow tier; this keeps the example in the quick tier): the block
    is run here on this run's demo folder and its output compared with the page's ``text output`` block."""
    page = ROOT / "docs" / "labels.md"
    text = page.read_text(encoding="utf-8")
    start = text.index("## Worked example: which tokens are trained")
    section = text[start:]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    first_line = text[:start].count("\n") + 1
    example = next(block for block in doc_blocks(page)
                   if block.line > first_line and block.language == "python" and block.output is not None)
    exec(compile(example.text.replace("out/demo/", f"{demo_output}/"), "docs/labels.md worked example", "exec"),
         {})  # noqa: S102
    printed = capsys.readouterr().out
    assert doc_matches(example.output.text, printed), printed  # the harness's rule: whitespace runs are one space
    table = pa.ipc.open_stream(pa.memory_map(str(demo_output / "data" / "shard-00000-of-00001.arrow"))).read_all()
    row = [r for r in table.to_pylist() if r["source"].endswith("faq_sharegpt.json") and r["index"] == 1][0]
    trained = sum(1 for label in row["labels"] if label != IGNORE)
    assert f"{len(row['input_ids'])} tokens, {trained} trained" in section
