"""Property-based fuzzing of the reader and the record parser (issue 11).

Random bytes, random JSON values (lone surrogates, huge integers and deep nesting included) and
mutated real records from tests/data (and ../shared/data where it exists) go in; the invariants:

* no exception escapes the reader (:func:`transforms.reading.iter_records`, and the job's file
  reader with compression, :func:`pipeline.engines.beam.sources.read_file`) or the parser
  (:func:`pipeline.engines.beam.build.parse_raw_record` around ``parse_record`` / ``to_conversation``);
* records read = parsed + rejected, indexes are 0..n-1 in order;
* every rejection has a known reason code and is a writable UTF-8 JSON line; every record crosses
  the spill step (pickle).

Run time stays small: 200 examples per property (``FUZZ``), 60 for the damaged-gzip property (each example
writes a file), no deadline.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import pickle
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatshards_testing import SHARED_DATA, TEST_DATA
from pipeline.steps.reading import read_file
from pipeline.steps.records import parse_raw_record
from pipeline.steps.rejected import rejected_line
from transforms import errors
from transforms.formats import FormatOptions
from transforms.reading import iter_records
from transforms.rows import PARSED, REJECTED

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTIONS = (FormatOptions(), FormatOptions(format="sharegpt"), FormatOptions(format="alpaca"))


def check_invariants(records, options: FormatOptions = OPTIONS[0]) -> tuple[int, int]:
    """Parse every record as the job does; assert the invariants; ``(parsed, rejected)``."""
    assert [r.index for r in records] == list(range(len(records)))
    parsed = rejected = 0
    for raw in records:
        pickle.loads(pickle.dumps(raw, protocol=pickle.HIGHEST_PROTOCOL))  # the spill step
        kind, item = parse_raw_record(raw, options)
        if kind == PARSED:
            parsed += 1
            assert item[0] is raw
        else:
            assert kind == REJECTED
            rejected += 1
            assert item["reason"] in errors.ALL_REASONS and item["index"] == raw.index
            line = rejected_line(item).encode("utf-8")
            assert json.loads(line)["reason"] == item["reason"]
    assert parsed + rejected == len(records)
    return parsed, rejected


@contextlib.contextmanager
def time_limit(seconds: float = 20.0):
    """Fail (instead of hanging CI) when reading one example takes longer than ``seconds``."""
    def expired(signum, frame):
        raise AssertionError(f"reading one fuzz example took more than {seconds} s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_bytes(data: bytes, source: str = "fuzz.jsonl") -> list:
    with time_limit():
        return list(iter_records(io.BytesIO(data), source=source))


# -- random bytes ------------------------------------------------------------------------------

JSONISH = st.sampled_from([b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"\\u", b"d800", b"\n", b" ",
                           b'"messages"', b'"role"', b'"content"', b'"user"', b'"assistant"', b"null", b"1e999",
                           b"9" * 50, b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\x00", b"\r\n"])


@FUZZ
@given(st.one_of(st.binary(max_size=2000), st.lists(JSONISH, max_size=200).map(b"".join)))
def test_random_bytes_never_escape_and_reconcile(data):
    check_invariants(read_bytes(data))


# -- random JSON values -----------------------------------------------------------------------------

ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30)  # surrogates too
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), ANY_TEXT,
                    st.integers(min_value=10 ** 4300, max_value=10 ** 4400))
JSON_VALUES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(ANY_TEXT, children, max_size=5)), max_leaves=40)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "bot", 3]),
                                 "content": st.one_of(ANY_TEXT, JSON_VALUES)})
RECORDS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=4)}, optional={"tools": JSON_VALUES}),
    st.fixed_dictionaries({"conversations": st.lists(st.fixed_dictionaries(
        {"from": st.sampled_from(["human", "gpt", "system"]), "value": ANY_TEXT}), max_size=4)}),
    st.fixed_dictionaries({"instruction": ANY_TEXT, "output": JSON_VALUES}),
)


def deep(depth: int) -> str:
    return '{"messages": [], "x": ' + "[" * depth + "]" * depth + "}"


def serialise(values, layout: str) -> bytes:
    """``values`` as a file of the given layout (ensure_ascii: lone surrogates become escapes)."""
    texts = []
    for value in values:
        try:
            texts.append(value if isinstance(value, str) and value.startswith('{"messages": [], "x"')
                         else json.dumps(value, ensure_ascii=True))
        except ValueError:  # an integer json.dumps itself refuses to write: write its digits
            texts.append('{"n": ' + "9" * 4400 + "}")
    if layout == "jsonl":
        return "\n".join(texts).encode()
    if layout == "array":
        return ("[" + ",\n".join(texts) + "]").encode()
    return "\n".join(texts).encode()  # concatenated (pretty-printed values one after another)


@FUZZ
@given(st.lists(st.one_of(RECORDS, st.integers(min_value=90, max_value=1200).map(deep)), max_size=8),
       st.sampled_from(["jsonl", "array", "concatenated"]), st.sampled_from(OPTIONS))
def test_random_json_values_never_escape_and_reconcile(values, layout, options):
    records = read_bytes(serialise(values, layout))
    check_invariants(records, options)
    lines = [t for t in serialise(values, layout).splitlines() if t.strip()]
    if layout == "jsonl" and len(lines) > 1:  # JSON Lines: one record per non-blank line, whatever it holds
        assert len(records) == len(lines)


# -- mutated real records ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _real_samples() -> tuple[bytes, ...]:
    roots = [TEST_DATA] + ([SHARED_DATA] if SHARED_DATA.is_dir() else [])
    samples = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix not in (".json", ".jsonl") or not path.is_file() or path.stat().st_size > 5_000_000:
                continue
            data = path.read_bytes()
            samples.append(b"".join(data.splitlines(keepends=True)[:40]) if path.suffix == ".jsonl" else data[:20_000])
    return tuple(samples)


def real_samples() -> tuple[bytes, ...]:
    """Up to 40 records' worth of text from each JSON / JSONL file of tests/data (and of ../shared/data where it
    exists)."""
    samples = _real_samples()
    if not samples:
        pytest.fail("no JSON files in tests/data (they ship with the repository)")
    return samples


MUTATIONS = st.lists(st.tuples(st.sampled_from(["cut", "delete", "insert", "flip", "truncate"]),
                               st.floats(min_value=0, max_value=1), st.binary(min_size=1, max_size=8)),
                     min_size=1, max_size=4)


def mutate(data: bytes, mutations) -> bytes:
    for kind, where, payload in mutations:
        at = int(where * len(data))
        if kind == "truncate":
            data = data[:at]
        elif kind == "cut":
            data = data[:at] + data[at + 200:]
        elif kind == "delete":
            data = data[:at] + data[at + len(payload):]
        elif kind == "insert":
            data = data[:at] + payload + data[at:]
        elif data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ payload[0]]) + data[at + 1:]
    return data


@pytest.fixture(scope="module")
def with_samples():
    real_samples()  # fails when tests/data holds no JSON file


def draw_sample(data) -> bytes:
    """One real sample, drawn by index (so that failure reports stay short)."""
    samples = _real_samples()
    index = data.draw(st.integers(min_value=0, max_value=len(samples) - 1), label="sample index")
    return samples[index]


@FUZZ
@given(st.data(), MUTATIONS)
def test_mutated_real_records_never_escape_and_reconcile(with_samples, data, mutations):
    sample = draw_sample(data)
    records = read_bytes(mutate(sample, mutations))
    check_invariants(records, data.draw(st.sampled_from(OPTIONS)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.data(), st.floats(min_value=0, max_value=1), st.booleans())
def test_cut_or_corrupt_gzip_of_real_records_is_accounted_for(with_samples, tmp_path, data, where, flip):
    """The job's file reader: a damaged .gz never raises and never reads short without saying so."""
    packed = gzip.compress(draw_sample(data))
    at = int(where * len(packed))
    damaged = (packed[:at] + bytes([packed[at] ^ 0x55]) + packed[at + 1:]) if flip and at < len(packed) else packed[:at]
    path = tmp_path / f"d{at}.jsonl.gz"
    path.write_bytes(damaged)
    with time_limit():
        records = list(read_file(str(path)))
    check_invariants(records)
    if damaged and damaged != packed and not flip:  # cut short (not to nothing): the last record says so
        assert records and records[-1].reason in (errors.TRUNCATED_INPUT, errors.UNREADABLE_INPUT)
