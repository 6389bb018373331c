"""transforms.truncation as pure functions: windows around protected spans, exchange cuts, modes."""
from __future__ import annotations

import numpy as np
import pytest

from transforms import errors
from transforms.errors import RecordRejected
from transforms.truncation import TokenArrays, exchange_cuts, fit_window, truncate


def arrays(n, trained, protected=(), items=(), num_messages=2):
    mask = np.zeros(n, dtype=bool)
    for lo, hi in trained:
        mask[lo:hi] = True
    return TokenArrays(input_ids=np.arange(n, dtype=np.int32), mask=mask, turn_ranges=list(trained),
                       reasoning=np.zeros(n, dtype=bool), num_messages=num_messages, protected=protected,
                       protected_items=items)


def test_windows_never_split_a_protected_span():
    assert fit_window(10, 6, "right") == (0, 6)
    assert fit_window(10, 6, "left") == (4, 10)
    assert fit_window(10, 6, "right", [(4, 8)]) == (0, 4)
    assert fit_window(10, 6, "left", [(2, 6)]) == (6, 10)
    assert fit_window(10, 6, "right", [(0, 3), (6, 9)]) == (0, 6)  # a span ending at the cut stays


def test_exchange_cuts_keep_system_messages_and_the_last_exchange():
    roles = ["system", "user", "assistant", "user", "assistant", "tool", "user", "assistant"]
    cuts = list(exchange_cuts([{"role": r} for r in roles]))
    assert cuts == [[0, 3, 4, 5, 6, 7], [0, 6, 7]]
    assert list(exchange_cuts([{"role": "user"}, {"role": "assistant"}])) == []


def test_modes():
    row = arrays(10, [(6, 10)], protected=[(1, 3)], items=[0])
    kept = truncate(row, max_length=None, mode="right")
    assert kept.window == (0, 10) and kept.kept_items == (0,) and kept.full_length == 10
    left = truncate(row, max_length=5, mode="left")
    assert left.window == (5, 10) and left.kept_items == ()
    with pytest.raises(RecordRejected) as info:
        truncate(row, max_length=5, mode="drop")
    assert info.value.reason == errors.TOO_LONG
    with pytest.raises(RecordRejected) as info:
        truncate(row, max_length=5, mode="right")  # the trained tokens are all at the end
    assert info.value.reason == errors.NO_LOSS_TOKENS


def test_turns_takes_the_first_shorter_row_that_fits_and_stops_at_one_without_loss():
    full = arrays(12, [(10, 12)], num_messages=6)
    shorter = [arrays(9, [(7, 9)], num_messages=4), arrays(5, [(3, 5)], num_messages=2)]
    result = truncate(full, max_length=6, mode="turns", shorter=lambda: iter(shorter))
    assert result.arrays is shorter[1] and result.window == (0, 5) and result.full_length == 12
    early = [arrays(9, [(2, 4)], num_messages=4), arrays(5, [], num_messages=2)]
    result = truncate(full, max_length=6, mode="turns", shorter=lambda: iter(early))
    assert result.arrays is early[0] and result.window == (0, 6)  # then cut on the right
    late = [arrays(9, [(7, 9)], num_messages=4), arrays(5, [], num_messages=2)]
    with pytest.raises(RecordRejected) as info:  # the right cut of the last usable version trains nothing
        truncate(full, max_length=6, mode="turns", shorter=lambda: iter(late))
    assert info.value.reason == errors.NO_LOSS_TOKENS
