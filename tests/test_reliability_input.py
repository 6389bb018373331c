"""Issue 11, input side: every input byte is accounted for and no single record ends a job.

Truncated or corrupt compressed files and unterminated documents become rejections with their own
reason codes; lone surrogates, huge integers and deep nesting are rejected per record, and every
rejection is writable. Each test builds its inputs in a temp folder.
"""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import pickle
import zlib

import pytest

from pipeline.io.input_files import CheckedDecompression, CorruptInput, TruncatedInput, open_input
from pipeline.io.spill import read_spilled, spill_batches
from pipeline.steps.reading import read_file
from pipeline.steps.records import parse_raw_record
from pipeline.steps.rejected import rejected_line, writable_rejection
from transforms import errors
from transforms.formats import FormatOptions
from transforms.reading import MAX_NESTING, RawRecord, iter_records
from transforms.rows import PARSED, REJECTED


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def outcomes(records: list[RawRecord]) -> list[tuple[str, dict]]:
    """Parse every record as the job does; each rejection must be a writable UTF-8 line."""
    results = [parse_raw_record(raw, FormatOptions()) for raw in records]
    for kind, item in results:
        if kind == REJECTED:
            json.loads(rejected_line(item).encode("utf-8"))
    return results


def reasons(records) -> list[str]:
    return [item["reason"] for kind, item in outcomes(records) if kind == REJECTED]


def compress_zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def compress_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj()
    return compressor.compress(data) + compressor.flush()


COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress, ".zst": compress_zstd,
               ".deflate": compress_deflate}


# -- truncated / corrupt compressed files --------------------------------------------------------

def test_gzip_with_its_second_member_cut_short_is_a_truncated_input_rejection(tmp_path):
    records = [chat(i) for i in range(2000)]
    first, second = gzip.compress(jsonl(records[:1000])), gzip.compress(jsonl(records[1000:]))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(first + second[: len(second) // 2])
    read = list(read_file(str(path)))
    assert [r.index for r in read] == list(range(len(read)))  # every record counted, in order
    assert read[-1].reason == errors.TRUNCATED_INPUT and "truncated" in read[-1].error
    good = [r for r in read if r.ok]
    assert 1000 < len(good) < 2000 and [r.value for r in good] == records[:len(good)]
    found = reasons(read)
    assert found.count(errors.TRUNCATED_INPUT) == 1 and set(found) <= {errors.TRUNCATED_INPUT, errors.INVALID_JSON}
    assert len(read) == len(good) + len(found)  # read = parsed + rejected


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_every_compression_detects_a_cut_stream(tmp_path, suffix):
    data = jsonl(chat(i) for i in range(300))
    packed = COMPRESSORS[suffix](data)
    whole = tmp_path / f"whole.jsonl{suffix}"
    whole.write_bytes(packed)
    assert [r.value for r in read_file(str(whole))] == [chat(i) for i in range(300)]
    cut = tmp_path / f"cut.jsonl{suffix}"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    read = list(read_file(str(cut)))
    assert read[-1].reason == errors.TRUNCATED_INPUT, (suffix, read[-1])
    assert sum(r.ok for r in read) < 300


def test_corrupt_compressed_bytes_are_an_unreadable_input_rejection(tmp_path):
    data = gzip.compress(jsonl(chat(i) for i in range(500)))
    middle = len(data) // 2
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    read = list(read_file(str(path)))
    assert read[-1].reason in (errors.UNREADABLE_INPUT, errors.TRUNCATED_INPUT)
    assert reasons(read).count(read[-1].reason) >= 1 and len(read) < 502


def test_checked_decompression_raises_on_a_cut_and_on_garbage():
    import io

    packed = gzip.compress(b"x" * 100_000)
    with pytest.raises(TruncatedInput):
        io.BufferedReader(CheckedDecompression(io.BytesIO(packed[:-20]), "gzip", name="t")).read()
    with pytest.raises(CorruptInput):
        io.BufferedReader(CheckedDecompression(io.BytesIO(b"not gzip at all"), "gzip", name="t")).read()
    with pytest.raises(CorruptInput):  # garbage after a complete member
        io.BufferedReader(CheckedDecompression(io.BytesIO(packed + b"garbage!"), "gzip", name="t")).read()


def test_a_non_regular_file_is_rejected_without_being_opened(tmp_path):
    import os

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    read = list(read_file(str(fifo)))  # opening a FIFO would block forever
    assert len(read) == 1 and read[0].reason == errors.UNREADABLE_INPUT and "FIFO" in read[0].error
    assert reasons(read) == [errors.UNREADABLE_INPUT]


def test_an_input_that_cannot_be_opened_is_an_unreadable_input_rejection(tmp_path, monkeypatch):
    path = tmp_path / "locked.jsonl"
    path.write_bytes(jsonl([chat(0)]))

    def denied(p):
        raise PermissionError(13, "Permission denied", p)

    monkeypatch.setattr("pipeline.steps.reading.open_input", denied)
    read = list(read_file(str(path)))
    assert [r.reason for r in read] == [errors.UNREADABLE_INPUT] and "Permission denied" in read[0].error


# -- unterminated documents -------------------------------------------------------------------------

def records_of(data: bytes, source: str = "t.json") -> list[RawRecord]:
    import io

    return list(iter_records(io.BytesIO(data), source=source))


def test_json_array_cut_between_elements_reports_the_missing_tail():
    text = json.dumps([chat(i) for i in range(100)], indent=1)
    cut = text[: text.index(json.dumps("question 60")[:-1]) - 40]  # inside the array, before element 60
    cut = cut[: cut.rindex("},") + 2]  # right after element 59's comma
    read = records_of(cut.encode())
    assert [r.value for r in read if r.ok] == [chat(i) for i in range(60)]
    assert [r.reason for r in read if not r.ok] == [errors.TRUNCATED_INPUT]
    assert reasons(read) == [errors.TRUNCATED_INPUT]


def test_json_array_cut_inside_an_element_and_object_cut_short_are_truncated_input():
    text = json.dumps([chat(i) for i in range(10)])
    read = records_of(text[: len(text) - 30].encode())
    assert sum(r.ok for r in read) == 9 and read[-1].reason == errors.TRUNCATED_INPUT
    single = json.dumps(chat(0), indent=2)
    read = records_of(single[:-10].encode())
    assert [r.reason for r in read] == [errors.TRUNCATED_INPUT]
    pretty = "\n".join(json.dumps(chat(i), indent=2) for i in range(3))
    read = records_of(pretty[:-5].encode())
    assert [r.ok for r in read] == [True, True, False] and read[-1].reason == errors.TRUNCATED_INPUT


def test_bare_message_list_cut_short_is_never_trained_as_a_whole_conversation():
    messages = chat(0)["messages"] * 3
    text = json.dumps(messages, indent=1)
    read = records_of(text[: text.rindex("}") + 1].encode())  # the closing ] is missing
    assert len(read) == 1 and read[0].reason == errors.TRUNCATED_INPUT


def test_last_jsonl_line_cut_inside_its_value_is_truncated_input():
    data = jsonl(chat(i) for i in range(5))
    read = records_of(data[:-12])
    assert [r.ok for r in read] == [True] * 4 + [False] and read[-1].reason == errors.TRUNCATED_INPUT
    read = records_of(data.replace(b'"answer 1"}]}', b'"answer 1"}]'))  # broken in the middle: plain invalid JSON
    assert [r.reason for r in read if not r.ok] == [None]


# -- records no later stage could carry ---------------------------------------------------------------

SURROGATE_PLACES = {
    "content": lambda r: r["messages"][0].__setitem__("content", "x\ud800y"),
    "metadata": lambda r: r.__setitem__("meta", {"note": "\udfff"}),
    "role": lambda r: r["messages"][0].__setitem__("role", "\ud800"),
    "system": lambda r: r.__setitem__("system", "sys\ud800"),
    "tools": lambda r: r.__setitem__(
        "tools", [{"type": "function", "function": {"name": "f\ud800", "parameters": {}}}]),
    "tool_call_arguments": lambda r: r["messages"].append(
        {"role": "assistant",
         "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": "\udc80"}}}]}),
    "key": lambda r: r.__setitem__("k\ud800", 1),
}


@pytest.mark.parametrize("place", sorted(SURROGATE_PLACES))
@pytest.mark.parametrize("layout", ["jsonl", "array", "one_line_array", "pretty"])
def test_lone_surrogate_anywhere_is_one_writable_invalid_content_rejection(place, layout):
    bad = chat(1)
    SURROGATE_PLACES[place](bad)
    values = [chat(0), bad, chat(2)]
    data = {"jsonl": lambda: jsonl(values), "array": lambda: json.dumps(values, indent=1).encode(),
            "one_line_array": lambda: json.dumps(values).encode(),
            "pretty": lambda: "\n".join(json.dumps(v, indent=2) for v in values).encode()}[layout]()
    read = records_of(data)
    assert [r.ok for r in read] == [True, False, True]
    assert read[1].reason == errors.INVALID_CONTENT and "surrogate" in read[1].error
    assert "\\ud" in read[1].raw.lower() and not any(0xD800 <= ord(c) <= 0xDFFF for c in read[1].raw)
    assert reasons(read) == [errors.INVALID_CONTENT]
    pickle.dumps(read)  # crosses the spill step and Beam's coders


def test_a_valid_surrogate_pair_escape_is_kept():
    read = records_of(b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}, '
                      b'{"role": "assistant", "content": "ok"}]}\n' * 2)
    assert all(r.ok for r in read) and read[0].value["messages"][0]["content"] == "\U0001F600"


def test_integer_literal_beyond_4300_digits_is_invalid_json_not_a_crash():
    line = b'{"messages": [], "n": ' + b"9" * 5000 + b"}\n"
    read = records_of(jsonl([chat(0)]) + line + jsonl([chat(2)]))
    assert [r.ok for r in read] == [True, False, True] and "4300" in read[1].error
    read = records_of(b"[" + json.dumps(chat(0)).encode() + b", {\"n\": " + b"1" * 5000 + b"}]")
    assert [r.ok for r in read] == [True, False]


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 500, 970, 5000])
def test_deep_nesting_is_rejected_per_record(depth):
    deep = "[" * depth + "]" * depth
    line = ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "m": '
            + deep + "}\n").encode()
    read = records_of(jsonl([chat(0)]) + line + jsonl([chat(2)]))
    assert [r.ok for r in read] == [True, False, True]
    assert "nest" in read[1].error and reasons(read) == [errors.INVALID_JSON]
    pickle.dumps(read)


def test_nesting_up_to_the_limit_is_kept():
    value = chat(0)
    inner: list = []
    value["m"] = inner
    for _ in range(MAX_NESTING - 3):
        inner.append([])
        inner = inner[0]
    read = records_of(jsonl([value, chat(1)]))
    assert all(r.ok for r in read)


def test_spill_replaces_a_record_too_deep_to_pickle(tmp_path):
    deep: list = []
    node = deep
    for _ in range(100_000):
        node.append([])
        node = node[0]
    batch = [RawRecord("s", 0, chat(0)), RawRecord("s", 1, {"x": deep}), RawRecord("s", 2, chat(2))]
    (ref,) = spill_batches([batch], folder=str(tmp_path))
    back = read_spilled(ref)
    assert [r.ok for r in back] == [True, False, True] and "nested too deep" in back[1].error


def test_writable_rejection_escapes_what_utf8_cannot_carry():
    item = {"reason": errors.INVALID_ROLE, "detail": "role \ud800", "source": "s", "index": 3,
            "record": {"messages": [{"role": "\ud800", "content": "hi"}]}}
    fixed = writable_rejection(item)
    line = rejected_line(fixed).encode("utf-8")
    back = json.loads(line)
    assert back["reason"] == errors.INVALID_ROLE and back["index"] == 3 and "\\ud800" in back["record"]
    assert writable_rejection(chat_rejection := {"reason": "x", "detail": "d", "source": "s", "index": 0,
                                                 "record": chat(0)}) is chat_rejection
    json.loads(rejected_line(item).encode("utf-8"))  # the line writer escapes on its own as well


def test_parse_raw_record_keeps_the_readers_reason():
    raw = RawRecord("s", 0, None, raw="", error="truncated input: ...", reason=errors.TRUNCATED_INPUT)
    kind, item = parse_raw_record(raw, FormatOptions())
    assert kind == REJECTED and item["reason"] == errors.TRUNCATED_INPUT
    kind, _ = parse_raw_record(RawRecord("s", 1, chat(1)), FormatOptions())
    assert kind == PARSED


def test_open_input_reads_plain_and_compressed_files(tmp_path):
    data = jsonl(chat(i) for i in range(3))
    (tmp_path / "a.jsonl").write_bytes(data)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data))
    for name in ("a.jsonl", "a.jsonl.gz"):
        with open_input(str(tmp_path / name)) as stream:
            assert stream.read() == data


def test_a_stray_closing_brace_in_an_array_is_one_rejection_not_an_endless_loop():
    """Found by the fuzz test: the reader looped forever (and grew without bound) on ``[{..} }, {..}]``."""
    for data in (b'[{"a": 1}, } {"b": 2}]', b'[{"a": 1} }, {"b": 2}]', b'[{"a": 1}, }}}}]'):
        read = records_of(data)
        assert read[0].ok and len(read) <= 6 and sum(not r.ok for r in read) >= 1
