"""Tests for transforms.reading: layout sniffing, robustness, and real public data files."""
from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import pytest

from chatshards_testing import SHARED_DATA, TEST_DATA
from transforms.reading import RawRecord, iter_raw_records_from_path
from transforms.reading.json_layouts import iter_json_records

# Real files: the committed subsets in tests/data (every run) and, where ../shared/data exists, the whole
# public files (the larger matrix; not collected without it).
DATA_ROOTS = {"sample": TEST_DATA, **({"shared": SHARED_DATA} if SHARED_DATA.is_dir() else {})}
ROOTS = list(DATA_ROOTS)


def read(data: bytes | str, source: str = "mem.jsonl") -> list[RawRecord]:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return list(iter_json_records(io.BytesIO(data), source=source))


def values(records: list[RawRecord]) -> list:
    return [r.value for r in records]


class NoReadStream(io.BytesIO):
    """A stream that fails if someone tries to slurp it whole (JSONL must be streamed)."""

    def read(self, *args, **kwargs):  # noqa: D401
        raise AssertionError("JSON Lines input must be read line by line, not read() whole")


# --------------------------------------------------------------------------------------------
# JSON Lines


def test_jsonl_basic_indexes_and_source():
    recs = read('{"a": 1}\n{"b": 2}\n[{"role": "user", "content": "x"}]\n', source="f.jsonl")
    assert values(recs) == [{"a": 1}, {"b": 2}, [{"role": "user", "content": "x"}]]
    assert [r.index for r in recs] == [0, 1, 2]
    assert all(r.source == "f.jsonl" and r.raw is None and r.error is None and r.ok for r in recs)


def test_jsonl_blank_lines_are_not_records():
    recs = read('\n\n{"a": 1}\n\n   \n{"b": 2}\n\n')
    assert values(recs) == [{"a": 1}, {"b": 2}]
    assert [r.index for r in recs] == [0, 1]


def test_jsonl_crlf_and_bom():
    recs = read(b'\xef\xbb\xbf{"a": "x\\r\\ny"}\r\n{"b": 2}\r\n')
    assert values(recs) == [{"a": "x\r\ny"}, {"b": 2}]


def test_jsonl_no_trailing_newline():
    assert values(read('{"a": 1}\n{"b": 2}')) == [{"a": 1}, {"b": 2}]


def test_jsonl_bad_line_becomes_unparseable_record():
    recs = read('{"a": 1}\n{"b": \n{"c": 3}\n')
    assert [r.index for r in recs] == [0, 1, 2]
    assert recs[0].value == {"a": 1} and recs[2].value == {"c": 3}
    bad = recs[1]
    assert bad.value is None and bad.raw == '{"b": ' and "invalid JSON" in bad.error
    assert not bad.ok


def test_jsonl_broken_first_line_still_streams():
    stream = NoReadStream(b'{"a": 1, "b"\n{"c": 3}\n{"d": 4}\n')
    recs = list(iter_json_records(stream, source="s"))
    assert recs[0].value is None and recs[0].raw == '{"a": 1, "b"'
    assert values(recs[1:]) == [{"c": 3}, {"d": 4}]


def test_jsonl_is_streamed_not_read_whole():
    lines = b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(1000))
    recs = list(iter_json_records(NoReadStream(lines), source="s"))
    assert [r.value["i"] for r in recs] == list(range(1000))


def test_jsonl_extra_data_and_scalars_are_rejected():
    recs = read('{"a": 1} {"b": 2}\n42\nnull\n"text"\n{"ok": true}\n')
    assert [r.ok for r in recs] == [False, False, False, False, True]
    assert "extra data" in recs[0].error
    assert "number" in recs[1].error and "null" in recs[2].error and "string" in recs[3].error
    assert recs[2].raw == "null"


def test_jsonl_invalid_utf8_line():
    recs = read(b'{"a": 1}\n{"b": "\xff\xfe bad"}\n{"c": 3}\n')
    assert values(recs)[0] == {"a": 1} and values(recs)[2] == {"c": 3}
    assert recs[1].value is None
    assert "invalid UTF-8" in recs[1].error and "0xff" in recs[1].error
    assert "\ufffd" in recs[1].raw


def test_jsonl_raw_control_characters_tolerated():
    recs = read(b'{"a": "tab\there"}\n{"b": 1}\n')
    assert values(recs) == [{"a": "tab\there"}, {"b": 1}]


def test_gzip_path(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"a": 1}\n\n{"b": 2}\n')
    recs = list(iter_raw_records_from_path(str(path)))
    assert values(recs) == [{"a": 1}, {"b": 2}]
    assert recs[0].source == str(path)


def test_plain_path(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps([{"a": 1}, {"b": 2}], indent=2))
    assert values(iter_raw_records_from_path(str(path))) == [{"a": 1}, {"b": 2}]


# --------------------------------------------------------------------------------------------
# whole-document layouts


def test_empty_and_blank_files():
    assert read(b"") == []
    assert read(b"\n \r\n\t\n") == []
    assert read(b"\xef\xbb\xbf") == []


def test_pretty_array():
    data = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    recs = read(json.dumps(data, indent=2))
    assert values(recs) == data and [r.index for r in recs] == [0, 1]


def test_pretty_array_crlf_bom():
    data = [{"instruction": "a\r\n", "output": "b"}, {"x": [1, 2]}]
    text = json.dumps(data, indent=4).replace("\n", "\r\n")
    assert values(read(b"\xef\xbb\xbf" + text.encode())) == data


def test_single_line_array_of_records():
    data = [{"messages": []}, {"messages": [{"role": "user", "content": "x"}]}]
    assert values(read(json.dumps(data))) == data


def test_array_of_messages_is_one_bare_list_record():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert values(read(json.dumps(msgs))) == [msgs]
    assert values(read(json.dumps(msgs, indent=2))) == [msgs]


def test_trailing_comma_in_array():
    assert values(read('[\n {"a": 1},\n {"b": 2},\n]\n')) == [{"a": 1}, {"b": 2}]
    assert values(read('[{"a": 1},]')) == [{"a": 1}]


def test_array_bad_element_resyncs():
    text = '[\n  {"a": 1},\n  {"b": tru, "c": [1, {"d": "],"}]},\n  {"e": 5}\n]\n'
    recs = read(text)
    assert [r.index for r in recs] == [0, 1, 2]
    assert recs[0].value == {"a": 1} and recs[2].value == {"e": 5}
    assert recs[1].value is None and recs[1].raw == '{"b": tru, "c": [1, {"d": "],"}]}'
    assert "line 3" in recs[1].error


def test_array_unrecoverable_rest_is_one_record():
    recs = read('[\n {"a": 1},\n {"b": "unterminated\n')
    assert recs[0].value == {"a": 1}
    assert len(recs) == 2 and recs[1].value is None
    assert recs[1].raw.startswith('{"b": "unterminated')


def test_array_scalar_elements_rejected():
    recs = read('[\n {"a": 1},\n 7\n]')
    assert recs[0].value == {"a": 1} and recs[1].value is None and "number" in recs[1].error


def test_array_invalid_utf8_only_affects_its_element():
    text = b'[\n {"a": 1},\n {"b": "bad \xc3\x28 byte"},\n {"c": 3}\n]\n'
    recs = read(text)
    assert [r.index for r in recs] == [0, 1, 2]
    assert recs[0].value == {"a": 1} and recs[2].value == {"c": 3}
    assert recs[1].value is None and "invalid UTF-8" in recs[1].error
    assert "\ufffd" in recs[1].raw and "\udcc3" not in recs[1].raw


def test_single_pretty_object():
    obj = {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}
    assert values(read(json.dumps(obj, indent=2))) == [obj]
    assert values(read(json.dumps(obj))) == [obj]


def test_concatenated_pretty_objects_with_control_chars():
    a = json.dumps({"m": "one"}, indent=4)
    b = '{\n    "m": "raw\nnewline and\ttab"\n}'
    recs = read(a + "\n" + b + "\n" + a)
    assert values(recs) == [{"m": "one"}, {"m": "raw\nnewline and\ttab"}, {"m": "one"}]


def test_concatenated_bad_object_resyncs_at_next_top_level_value():
    text = '{\n  "a": 1\n}\n{\n  "b": oops\n}\n{\n  "c": 3\n}'
    recs = read(text)
    assert values(recs)[0] == {"a": 1} and values(recs)[2] == {"c": 3}
    assert recs[1].value is None and recs[1].raw == '{\n  "b": oops\n}'
    assert [r.index for r in recs] == [0, 1, 2]


def test_concatenated_garbage_tail_is_one_record():
    recs = read('{\n  "a": 1\n}\n{\n  "b": [1, 2\n')
    assert recs[0].value == {"a": 1}
    assert len(recs) == 2 and recs[1].raw == '{\n  "b": [1, 2' and recs[1].error


def test_utf16_file_is_rejected_clearly():
    recs = read('{"a": 1}\n'.encode("utf-16"))
    assert len(recs) == 1 and recs[0].value is None and "UTF-16" in recs[0].error


def test_garbage_never_raises():
    for blob in (b"\x00\x01\x02", b"}{][", b"[", b"{", b"[\n{\n", b"not json at all\n\xff",
                 b'{"a":\n', b"[1, 2, 3]", b"[[[[", b"\xef\xbb\xbf\xef\xbb\xbf{}"):
        recs = read(blob)
        assert all(isinstance(r, RawRecord) for r in recs)
        assert all((r.value is None) == (r.error is not None) for r in recs)


# --------------------------------------------------------------------------------------------
# shared sample data: counts computed independently of the reader


def _count_expected(path: Path) -> list:
    """Values the file should yield, computed with plain json (not with the reader)."""
    text = path.read_text(encoding="utf-8")
    name = path.name
    if name == "openai_cookbook_01-testing-example_multiline.jsonl":
        # pretty-printed objects; each starts with '{' alone in column 0
        chunks = re.split(r"\n(?=\{\n)", text)
        return [json.loads(c, strict=False) for c in chunks]
    if name == "qwen3vl_single_images_trailing_comma.json":
        return json.loads(re.sub(r",\s*\]\s*$", "]", text))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    value = json.loads(text)
    return value if isinstance(value, list) else [value]


SOURCES_COUNTS = {
    "shared": {
        "alpaca/llamafactory_alpaca_en_demo.json": 999,
        "alpaca/llamafactory_identity.json": 91,
        "alpaca/axolotl_alpaca.json": 2,
        "sharegpt/fastchat_dummy_conversation.json": 500,
        "sharegpt/axolotl_conversation.json": 1,
        "openai/openai_cookbook_toy_chat_fine_tuning.jsonl": 5,
        "openai/llamafactory_v1_sft_demo.jsonl": 500,
        "tool_calling/llamafactory_glaive_toolcall_en_demo.json": 300,
        "tool_calling/openai_cookbook_drone_training_first5.jsonl": 5,
        "vlm/llamafactory/data/mllm_demo.json": 6,
        "vlm/llamafactory/data/v1_multimodal_demo.jsonl": 24,
        "vlm/torchtune/tests/assets/vqa_tiny.json": 1,
        "edge_cases/axolotl_conversation.missingturns.json": 1,
        # ../shared/data/SOURCES.md says "12 objects intended", but the stored copy holds 11 objects
        # (11 "messages" keys, 11 top-level '{' lines); the independent count below confirms 11.
        "edge_cases/openai_cookbook_01-testing-example_multiline.jsonl": 11,
        "edge_cases/qwen3vl_single_images_trailing_comma.json": 3,
        "edge_cases/xtuner_openai_sft_bare_lists.jsonl": 128,
    },
    "sample": {
        "alpaca/llamafactory_alpaca_en_demo.json": 30,
        "alpaca/llamafactory_identity.json": 20,
        "alpaca/axolotl_alpaca.json": 2,
        "sharegpt/fastchat_dummy_conversation.json": 36,
        "sharegpt/axolotl_conversation.json": 1,
        "openai/openai_cookbook_toy_chat_fine_tuning.jsonl": 5,
        "openai/llamafactory_v1_sft_demo.jsonl": 30,
        "tool_calling/llamafactory_glaive_toolcall_en_demo.json": 12,
        "tool_calling/openai_cookbook_drone_training_first3.jsonl": 3,
        "tool_calling/llamafactory_reason_tool_use_demo.jsonl": 6,
        "vlm/llamafactory/data/mllm_demo.json": 6,
        "vlm/llamafactory/data/v1_multimodal_demo.jsonl": 24,
        "vlm/torchtune/tests/assets/vqa_tiny.json": 1,
        "edge_cases/axolotl_conversation.missingturns.json": 1,
        "edge_cases/openai_cookbook_01-testing-example_multiline.jsonl": 3,
        "edge_cases/qwen3vl_single_images_trailing_comma.json": 3,
        "edge_cases/xtuner_openai_sft_bare_lists.jsonl": 30,
    },
}


def _path(root: str, rel: str) -> Path:
    path = DATA_ROOTS[root] / rel
    if not path.exists():
        pytest.fail(f"{rel} missing from {DATA_ROOTS[root]}")
    return path


@pytest.mark.parametrize("root,rel", [(root, rel) for root in ROOTS for rel in sorted(SOURCES_COUNTS[root])])
def test_real_file_counts_and_values(root, rel):
    path = _path(root, rel)
    recs = list(iter_raw_records_from_path(str(path)))
    expected = _count_expected(path)
    assert len(expected) == SOURCES_COUNTS[root][rel]
    assert [r.error for r in recs] == [None] * len(expected)
    assert values(recs) == expected
    assert [r.index for r in recs] == list(range(len(expected)))
    assert {r.source for r in recs} == {str(path)}


@pytest.mark.parametrize("root", ROOTS)
def test_multiline_cookbook_file_is_not_line_parseable_but_reads_whole(root):
    path = _path(root, "edge_cases/openai_cookbook_01-testing-example_multiline.jsonl")
    objects = SOURCES_COUNTS[root]["edge_cases/openai_cookbook_01-testing-example_multiline.jsonl"]
    text = path.read_text(encoding="utf-8")
    assert text.count('"messages"') == objects
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
    recs = list(iter_raw_records_from_path(str(path)))
    assert len(recs) == objects and all(r.ok for r in recs)
    # a raw TAB inside a string survived (strict=False)
    assert any("\t" in m["content"] for r in recs for m in r.value["messages"])


@pytest.mark.parametrize("root", ROOTS)
def test_trailing_comma_file_is_invalid_json_but_yields_three(root):
    path = _path(root, "edge_cases/qwen3vl_single_images_trailing_comma.json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text(encoding="utf-8"))
    recs = list(iter_raw_records_from_path(str(path)))
    assert [r.value["conversations"][1]["value"] for r in recs] == ["Yes", "6", "2014"]


@pytest.mark.parametrize("root", ROOTS)
def test_real_jsonl_files_gzipped(tmp_path, root):
    src = _path(root, "openai/llamafactory_v1_sft_demo.jsonl")
    gz = tmp_path / "v1.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    assert values(iter_raw_records_from_path(str(gz))) == _count_expected(src)
