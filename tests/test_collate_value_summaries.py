"""The collator checks rows of a ShardDataset against per-column value summaries once a quarter of a
column went through per-batch checks (transforms/runtime/value_summaries.py): the cheap path must
never let a bad value through and never trust rows of other origin."""
from __future__ import annotations

import gc
import re

import numpy as np
import pytest

from transforms.runtime import Collator, ShardDataset
from transforms.runtime import collate as collate_module
from transforms.runtime import value_summaries as vs
from transforms.runtime.synthetic import write_synthetic_dataset

MODES = {"padded": dict(pad_token_id=0), "padding_free": dict(padding_free=True)}


def read_only_column(values) -> np.ndarray:
    """A registered read-only column (as ShardDataset makes them: a flat view of a 2-D read-only base)."""
    base = np.asarray(values, dtype=np.int32).reshape(1, -1).copy()
    base.setflags(write=False)
    column = base.reshape(-1)
    vs.register_column(column)
    return column


def rows_of(ids: np.ndarray, labels: np.ndarray, width: int) -> list[dict]:
    return [{"input_ids": ids[s:s + width], "labels": labels[s:s + width]} for s in range(0, len(ids), width)]


def no_batch_scan(monkeypatch):
    """Fail if a batch is checked the per-batch way (its tokens reduced) instead of by summaries."""
    def scanned(*args, **kwargs):
        raise AssertionError("the batch was scanned although its columns are summarised")

    monkeypatch.setattr(collate_module, "_ids_ok", scanned)
    monkeypatch.setattr(collate_module, "_labels_ok", scanned)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_dataset_rows_are_checked_by_summaries_after_a_quarter(tmp_path, monkeypatch, mode):
    write_synthetic_dataset(tmp_path, num_rows=64, num_shards=2, vocab_size=100)
    ds = ShardDataset(str(tmp_path))
    collator = Collator.from_manifest(str(tmp_path), **({"padding_free": True} if mode == "padding_free" else {}))
    rows = [ds[i] for i in range(len(ds))]
    columns = vs.summaries([r["input_ids"] for r in rows])
    assert columns is not None and len(columns) == 2 and not any(c.ready for c in columns)
    expected = [collator(rows[i:i + 8]) for i in range(0, 64, 8)]  # every token checked per batch once
    assert all(c.ready for c in vs.summaries([r["input_ids"] for r in rows]))
    assert all(c.ready for c in vs.summaries([r["labels"] for r in rows]))
    no_batch_scan(monkeypatch)
    for i, batch in zip(range(0, 64, 8), expected):  # the same batches again: same tensors, no scan
        again = collator(rows[i:i + 8])
        assert all(np.array_equal(again[k], batch[k]) for k in batch)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_summary_that_shows_bad_values_keeps_the_per_batch_check(tmp_path, mode):
    write_synthetic_dataset(tmp_path, num_rows=32, num_shards=1, vocab_size=100)
    ds = ShardDataset(str(tmp_path))
    rows = [ds[i] for i in range(len(ds))]
    top = max(int(r["input_ids"].max()) for r in rows)
    bad = next(i for i, r in enumerate(rows) if int(r["input_ids"].max()) == top)
    collator = Collator(**MODES[mode], vocab_size=top)  # the largest id of the shard is now out of range
    good = [r for i, r in enumerate(rows) if int(r["input_ids"].max()) < top and int(r["labels"].max()) < top]
    for _ in range(8):
        collator(good)  # credits the column until it is summarised
    assert all(c.ready and not c.ids_ok(top - 1) for c in vs.summaries([r["input_ids"] for r in rows]))
    position = rows[bad]["input_ids"].tolist().index(top)
    message = f"input_ids has id {top} at position {position}, beyond the vocabulary"
    with pytest.raises(ValueError, match=re.escape(message)):
        collator(rows[bad:bad + 1])


def test_labels_with_other_negative_values_are_never_trusted(monkeypatch):
    ids = np.arange(3, 43, dtype=np.int32)
    labels = ids.copy()
    labels[::5] = -100
    labels[7] = -1  # not an ignore value
    ids_column, labels_column = read_only_column(ids), read_only_column(labels)
    summary = vs.summaries([labels_column[:4]])[0]
    summary.summarise()
    assert summary.negative is None and not summary.labels_ok(2**31 - 1, (-100,))
    vs.summaries([ids_column[:4]])[0].summarise()
    rows = rows_of(ids_column, labels_column, 10)
    for mode in MODES.values():
        with pytest.raises(ValueError, match=re.escape("row 0: labels has -1 at position 7")):
            Collator(**mode)(rows)
        Collator(**mode, label_pad_token_id=-1)(rows)  # -1 is an ignore value for this collator


def test_rows_of_other_origin_are_always_scanned(monkeypatch):
    ids = np.arange(3, 43, dtype=np.int32)
    column = read_only_column(ids)
    vs.summaries([column])[0].summarise()
    writable = ids.copy()  # same values, but a plain array the user could change: never registered
    vs.register_column(writable)
    assert vs.summaries([writable[:4]]) is None
    copied = [{"input_ids": column[:10].copy()}]
    assert vs.summaries([copied[0]["input_ids"]]) is None
    scans = []
    real = collate_module._ids_ok
    monkeypatch.setattr(collate_module, "_ids_ok", lambda *a: scans.append(1) or real(*a))
    Collator(pad_token_id=0)([{"input_ids": column[:10]}])
    assert scans == []  # registered and summarised: no scan
    Collator(pad_token_id=0)(copied)
    assert scans == [1]
    copied[0]["input_ids"][3] = -7  # a bad value in a copy is still found
    with pytest.raises(ValueError, match=re.escape("row 0: input_ids has a negative id (-7 at position 3)")):
        Collator(pad_token_id=0)(copied)


def test_an_entry_goes_when_its_column_is_freed():
    column = read_only_column(np.arange(3, 13))
    key = id(column.base)
    assert key in vs._COLUMNS
    del column
    gc.collect()
    assert key not in vs._COLUMNS
