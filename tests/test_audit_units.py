"""Audit building blocks without Beam: histograms, the accumulator, duplicate groups, mask rendering."""
from __future__ import annotations

import math
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest

from chatshards_testing import REPO
from transforms.audit.accumulator import AuditAccumulator
from transforms.audit.dump import stats_json_bytes
from transforms.audit.duplicates import DuplicateSummary, HashGroups
from transforms.audit.histogram import FractionHistogram, IntHistogram, display_bins, int_bucket
from transforms.audit.masks import decoded_row, mask_runs, render_html, render_terminal
from transforms.audit.probe import TemplateProbe
from transforms.audit.stats import build_stats
from transforms.shard_format import IGNORE_INDEX, row_sort_key


def nearest_rank(values, p):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def test_int_buckets_are_fixed_and_cover_every_integer():
    for value in range(0, 70000):
        lo, hi = int_bucket(value)
        assert lo <= value <= hi and int_bucket(lo) == int_bucket(hi) == (lo, hi)
        assert int_bucket(hi + 1)[0] == hi + 1  # contiguous, no gaps
        if value < 64:
            assert lo == hi == value
        else:
            assert (hi - lo + 1) * 32 <= lo  # bucket width at most 1/32 of its values


def test_int_percentiles_within_documented_precision_and_merge_order_free():
    rng = random.Random(7)
    values = [int(rng.lognormvariate(5, 1.2)) for _ in range(5000)] + [0, 1, 2]
    whole = IntHistogram()
    for v in values:
        whole.add(v)
    parts = [IntHistogram() for _ in range(4)]
    for i, v in enumerate(values):
        parts[i % 4].add(v)
    merged_a = IntHistogram().merge(parts[0]).merge(parts[1]).merge(parts[2]).merge(parts[3])
    merged_b = IntHistogram().merge(parts[3]).merge(parts[1]).merge(parts[0]).merge(parts[2])
    assert whole.to_json() == merged_a.to_json() == merged_b.to_json()
    out = whole.to_json()
    assert out["count"] == len(values) and out["sum"] == sum(values)
    assert out["min"] == min(values) and out["max"] == max(values)
    assert out["mean"] == round(sum(values) / len(values), 6)
    for p in (50, 90, 95, 99):
        true = nearest_rank(values, p)
        reported = out[f"p{p}"]
        assert true <= reported <= max(true, true + true / 32), (p, true, reported)
        if true < 64:
            assert reported == true
    assert sum(b[2] for b in out["buckets"]) == len(values)
    assert sum(b[2] for b in display_bins(out["buckets"])) == len(values)


def test_fraction_histogram_integer_binning():
    h = FractionHistogram()
    pairs = [(1, 3), (2, 3), (3, 3), (0, 5), (99, 100), (1, 100)]
    for num, den in pairs:
        h.add(num, den)
    out = h.to_json()
    assert out["min"] == 0.0 and out["max"] == 1.0
    assert {tuple(b[:2]): b[2] for b in out["buckets"]}[(0.99, 1.0)] == 2  # 0.99 and 1.0 share the last bin
    fractions = [n / d for n, d in pairs]
    for p in (50, 90):
        true = nearest_rank(fractions, p)
        assert true - 1e-6 <= out[f"p{p}"] <= true + 0.01 + 1e-6
    with pytest.raises(ValueError):
        h.add(4, 3)


BOS, EOS, IM_START = 7, 9, 5


def make_row(source, index, ids, trained_from, *, fmt="openai", truncated=0, conv="h"):
    ids = np.asarray(ids, dtype=np.int32)
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
    labels[trained_from:] = ids[trained_from:]
    trained = int((labels != IGNORE_INDEX).sum())
    return {"input_ids": ids, "labels": labels, "length": len(ids), "num_loss_tokens": trained,
            "truncated": truncated > 0, "source": source, "index": index, "record_id": "r", "format": fmt,
            "num_turns": 2, "num_trained_turns": 1, "prompt_tokens": len(ids) - trained,
            "truncated_tokens": truncated, "conversation_hash": conv, "sort_key": row_sort_key(source, index)}


def test_accumulator_per_row_template_checks_and_merge_is_order_free():
    probe = TemplateProbe(bos_token_id=BOS, stop_token_ids=(EOS,), default_system_prefix=(IM_START, 1, 2))
    rows = [
        make_row("a.jsonl", 0, [BOS, BOS, 3, 4, EOS], 3),           # double BOS, ends with trained stop
        make_row("a.jsonl", 1, [BOS, 3, 4, 4, 4], 2, truncated=6),  # truncated: last trained is not a stop
        make_row("b.json", 0, [IM_START, 1, 2, 5, 6, EOS], 4, fmt="sharegpt"),  # default system prompt
        make_row("b.json", 1, [IM_START, 1, 3, 5, 6, EOS], 4, fmt="sharegpt"),  # different prefix
    ]
    rejections = [
        {"reason": "no_loss_tokens", "detail": "truncation to 8 tokens (right) removed every trained token",
         "source": "b.json", "index": 2, "record": {"conversations": []}},
        {"reason": "invalid_json", "detail": "bad", "source": "a.jsonl", "index": 2, "record": "{oops"},
        {"reason": "no_loss_tokens", "detail": "no token of this record is trained", "source": "a.jsonl",
         "index": 3, "record": {"messages": []}},
    ]
    whole = AuditAccumulator(probe)
    for row in rows:
        whole.add_row(row)
    for item in rejections:
        whole.add_rejection(item)
    parts = [AuditAccumulator(probe) for _ in range(3)]
    for i, row in enumerate(rows):
        parts[(i * 2) % 3].add_row(row)
    for i, item in enumerate(rejections):
        parts[i % 3].add_rejection(item)
    parts = [pickle.loads(pickle.dumps(part)) for part in parts]  # as Beam ships accumulators
    merged = AuditAccumulator(probe).merge(parts[2]).merge(parts[0]).merge(parts[1])
    manifest = {"config": {"tokenize": {"max_length": 8, "truncation": "right"}}}
    a = build_stats(whole, DuplicateSummary(), manifest=manifest, computed_by="t")
    b = build_stats(merged, DuplicateSummary(), manifest=manifest, computed_by="t")
    assert stats_json_bytes(a) == stats_json_bytes(b)
    t = a["template"]
    assert (t["rows_starting_with_bos"], t["rows_double_bos"]) == (2, 1)
    assert t["rows_with_default_system_prompt"] == 1
    assert (t["rows_last_trained_token_is_stop"], t["rows_last_trained_token_not_stop"]) == (3, 1)
    assert a["truncation"]["rows_truncated"] == 1 and a["truncation"]["tokens_removed"] == 6
    assert a["truncation"]["rejected_no_loss_after_truncation"] == 1
    assert a["by_format"] == {"(unparsed)": {"rejected": 1, "written": 0}, "openai": {"rejected": 1, "written": 2},
                              "sharegpt": {"rejected": 1, "written": 2}}
    assert a["by_source"]["a.jsonl"]["read"] == 4 and a["by_source"]["b.json"]["read"] == 3
    assert a["counts"] == {"read": 7, "written": 4, "rejected": 3, "rows": 4, "turns": 8, "trained_turns": 4}
    # the example of a reason is the rejection with the smallest sort key
    expected = min((i for i in rejections if i["reason"] == "no_loss_tokens"),
                   key=lambda i: row_sort_key(i["source"], i["index"]))
    assert a["rejections"]["examples"]["no_loss_tokens"]["index"] == expected["index"]


def test_duplicate_groups():
    rows = [{"source": "f", "index": i, "conversation_hash": h} for i, h in enumerate("aabcccd")]
    groups = HashGroups()
    for row in rows:
        groups.add_row(row)
    out = groups.summary().to_json()
    assert out["duplicate_groups"] == 2 and out["rows_in_duplicate_groups"] == 5 and out["redundant_rows"] == 3
    assert [g["rows"] for g in out["largest_groups"]] == [3, 2]


def test_mask_runs_and_rendering(qwen_tokenizer):
    text_ids = qwen_tokenizer.backend_tokenizer.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                                                       "Hello there<|im_end|>", add_special_tokens=False).ids
    start = len(qwen_tokenizer.backend_tokenizer.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                                                        add_special_tokens=False).ids)
    labels = [IGNORE_INDEX] * start + text_ids[start:]
    runs = mask_runs(text_ids, labels)
    assert [r.trained for r in runs] == [False, True]
    decoded, elided = decoded_row(qwen_tokenizer, text_ids, labels)
    assert elided == 0
    plain = render_terminal(decoded, color=False)
    assert plain.endswith("[Hello there<|im_end|>]")
    colored = render_terminal(decoded, color=True)
    assert "\x1b[1;32mHello there<|im_end|>\x1b[0m" in colored and "[" not in colored.replace("\x1b[", "")
    page = render_html(decoded)
    assert '<span class="trained">Hello there&lt;|im_end|&gt;</span>' in page
    short, elided = decoded_row(qwen_tokenizer, text_ids, labels, max_tokens=4, tail_tokens=2)
    assert elided == len(text_ids) - 4 and None in short


def test_transforms_audit_imports_without_apache_beam():
    code = ("import sys; sys.modules['apache_beam'] = None\n"
            "import transforms.audit, transforms.audit.dataset, transforms.audit.report, transforms.audit.masks\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
