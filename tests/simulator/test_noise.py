"""Line noise: rate bounds, every kind of corruption, reproducible with a seed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.noise import Noise


@given(st.binary(max_size=200), st.floats(0, 1), st.integers(0, 1000))
def test_length_changes_only_by_dropped_and_inserted(data, rate, seed):
    noise = Noise(rate, seed)
    out = noise.corrupt(data)
    assert len(out) == len(data) - noise.dropped + noise.inserted


def test_zero_rate_is_identity_and_full_rate_touches_every_byte():
    data = bytes(range(256))
    assert Noise(0.0).corrupt(data) == data
    noise = Noise(1.0, seed=1)
    noise.corrupt(data)
    assert sum(noise.counts().values()) == 256
    assert all(v > 0 for v in noise.counts().values())


def test_rate_out_of_range_refused():
    with pytest.raises(ValueError, match="expected 0..1, got 1.5"):
        Noise(1.5)
