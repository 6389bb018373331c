"""The row core without Beam: parse_records -> RowBuilder.build_rows, the task registry, a record of
several rows (--multi-turn split) kept together, and the format registry's detection order."""
from __future__ import annotations

import pytest

from transforms.config import TokenizeOptions
from transforms.formats import FormatOptions, detect_format
from transforms.formats.registry import DETECTION_ORDER, REGISTRY
from transforms.reading import RawRecord
from transforms.rows import PARSED, REJECTED, ROW, RowBuilder, parse_records
from transforms.tasks import TASKS, task_class


def chat(turns: int) -> dict:
    messages = []
    for i in range(turns):
        messages += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    return {"messages": messages}


def test_tasks_are_looked_up_by_name():
    assert task_class("chat") is TASKS["chat"]
    with pytest.raises(ValueError, match="unknown task 'no-such-task'"):
        task_class("no-such-task")


def test_split_records_give_all_their_rows_in_order(qwen_tokenizer):
    raws = [RawRecord("mem", 0, chat(3)), RawRecord("mem", 1, {"weird": 1}), RawRecord("mem", 2, chat(1))]
    builder = RowBuilder(tokenizer=qwen_tokenizer, format_options=FormatOptions(),
                         tokenize_options=TokenizeOptions(multi_turn="split"))
    parsed = parse_records(raws, builder.format_options)
    assert [kind for kind, _ in parsed] == [PARSED, REJECTED, PARSED]
    rows = builder.build_rows([item for kind, item in parsed if kind == PARSED])
    assert [(kind, item["index"], item["row_of_record"]) for kind, item in rows] == [
        (ROW, 0, 0), (ROW, 0, 1), (ROW, 0, 2), (ROW, 2, 0)]
    assert [item["turn"] for _, item in rows] == [1, 3, 5, 1]
    assert rows[0][1]["split_extra_tokens"] > 0 and rows[3][1]["split_extra_tokens"] == 0
    records = builder.build_records(raws)  # per record, in input order: its rows or its rejection
    assert [(kind, item["index"]) for kind, item in records] == [(ROW, 0)] * 3 + [(REJECTED, 1), (ROW, 2)]


def test_format_registry_detects_in_its_order():
    assert set(DETECTION_ORDER) == set(REGISTRY)
    both = {"messages": [], "conversations": [], "prompt": "p", "completion": "c", "instruction": "i"}
    assert detect_format(both) == "openai"
    assert detect_format({"prompt": "p", "completion": "c", "output": "o"}) == "prompt_completion"
    assert detect_format({"image": "a.png", "question": "q", "answer": "a"}, FormatOptions(images=True)) == "vqa"
