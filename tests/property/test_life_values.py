"""The planner's batch of best lives (`life_values`) equals `life_value` row by row, bit
for bit: the value rule decides on equalities (a start that nets as much one bucket
later), so a rounding difference would change allocations."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowdns.allocator.planner import life_value, life_values

values = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
rows = st.tuples(st.lists(values, max_size=12), st.integers(0, 14),
                 st.floats(min_value=0.0, max_value=1e4, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, min_size=1, max_size=20), st.booleans())
def test_the_batch_is_life_value_of_each_row(batch: list[tuple[list[float], int, float]],
                                             same_length: bool) -> None:
    if same_length:  # the common case: every path as long (lead + lookahead buckets)
        width = max(len(p) for p, _, _ in batch)
        batch = [((p + [1.0] * width)[:width], s, c) for p, s, c in batch]
    paths = [tuple(p) for p, _, _ in batch]
    starts = np.array([s for _, s, _ in batch], dtype=np.int64)
    prices = np.array([c for _, _, c in batch], dtype=np.float64)
    got = life_values(paths, starts, prices)
    want = [life_value(np.asarray(p, dtype=np.float64), s, c) for p, s, c in batch]
    assert got.tolist() == want
