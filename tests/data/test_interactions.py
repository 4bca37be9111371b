"""Helpers on the CSR event arrays."""

from __future__ import annotations

import numpy as np

from modalrec.data.interactions import concat_ranges


def test_concat_ranges_against_a_loop() -> None:
    starts, lengths = np.array([5, 0, 9, 2]), np.array([2, 0, 3, 1])
    expected = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])
    assert concat_ranges(starts, lengths).tolist() == expected.tolist() == [5, 6, 9, 10, 11, 2]
    assert concat_ranges(starts[:0], lengths[:0]).dtype == np.int64
