"""The per-record hot path's shortcuts give exactly what the plain code gives: control-token counting over one
joined string, the shared canonical JSON encoder, the audit's default-system-prompt check on lists."""
from __future__ import annotations

import json
import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.audit.accumulator import AuditAccumulator
from transforms.audit.probe import TemplateProbe
from transforms.control_tokens import ControlTokens
from transforms.shard_format import canonical_json

TOKEN_SETS = [
    ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<tool_call>"),
    ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
    ("<s>", "</s>", "[INST]", "[/INST]"),
    ("a\x00b", "<x>"),          # a token holding the first separator: another one is used
    ("a\x00b", "c\nd", "e\ufdd2f"),  # every separator is in a token: strings are searched one by one
]
ALPHABET = "<|>/abcdefimnstx_[]\x00\n\ufdd2 "
texts = st.text(alphabet=ALPHABET, max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4)
    | st.tuples(children, children),
    max_leaves=20)


def plain_count(tokens, value) -> int:
    """Occurrences counted string by string (the definition)."""
    pattern = re.compile("|".join(map(re.escape, tokens)))
    if isinstance(value, str):
        return len(pattern.findall(value))
    if isinstance(value, dict):
        return sum(plain_count(tokens, v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(plain_count(tokens, v) for v in value)
    return 0


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TOKEN_SETS), json_values)
def test_control_tokens_are_counted_as_string_by_string(tokens, value):
    # make token occurrences likely: splice tokens into every string of the value
    seen = [0]

    def spliced(v):
        if isinstance(v, str):
            seen[0] += 1
            t = tokens[seen[0] % len(tokens)]
            return v[: len(v) // 2] + t + v[len(v) // 2:] + (t[:-1] if seen[0] % 3 == 0 else "")
        if isinstance(v, dict):
            return {key: spliced(x) for key, x in v.items()}
        if isinstance(v, list):
            return [spliced(x) for x in v]
        if isinstance(v, tuple):
            return tuple(spliced(x) for x in v)
        return v

    for candidate in (value, spliced(value)):
        assert ControlTokens(tokens).count(candidate) == plain_count(tokens, candidate)


def test_control_token_count_sees_tokens_only_inside_one_string():
    tokens = ("<|im_end|>",)
    # the joined search must not find a token made of two strings' ends
    assert ControlTokens(tokens).count(["<|im_", "end|>"]) == 0
    assert ControlTokens(tokens).count({"a": "<|im_end|><|im_end|>", "b": ("x<|im_end|>",)}) == 3
    assert ControlTokens(()).count(["<|im_end|>"]) == 0


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_canonical_json_is_json_dumps_with_its_arguments(value):
    assert canonical_json(value) == json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def test_the_default_system_prompt_check_takes_arrays_and_lists():
    prefix = [151644, 8948, 198, 2610]
    probe = TemplateProbe(default_system_prefix=tuple(prefix))
    row = {"length": 6, "num_loss_tokens": 1, "prompt_tokens": 5, "truncated": False, "format": "openai",
           "source": "s", "index": 0, "num_turns": 2, "num_trained_turns": 1, "turn": -1}
    for ids, expected in (([*prefix, 5, 6], 1), ([*prefix[:-1], 7, 5, 6], 0), ([prefix[0]] * 6, 0)):
        for kind in (list, lambda v: np.asarray(v, dtype=np.int32), lambda v: np.asarray(v, dtype=np.int64)):
            acc = AuditAccumulator(probe)
            acc.add_row({**row, "input_ids": kind(ids), "labels": kind([-100] * 5 + [ids[-1]])})
            assert acc.counters["default_system_prompt_rows"] == expected, (ids, kind)
