"""The link's retransmission timer against RFC 6298's arithmetic, as properties: never below the wire
time, never above the ceiling, back-off doubles until a sample, a steady round trip converges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.serial.rto import RetransmitTimer, wire_time

rtts = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)
steps = st.lists(st.one_of(rtts, st.just(None)), max_size=60)  # None: a timeout


def test_wire_time_is_ten_bits_a_byte() -> None:
    assert wire_time(24, 115200) == pytest.approx(24 * 10 / 115200)
    assert wire_time(24, 9600) > 20 * wire_time(24, 115200) / 2


@given(floor=st.floats(1e-4, 0.01), steps=steps)
def test_timeout_stays_between_the_wire_time_and_the_ceiling(floor: float, steps: list[float | None]) -> None:
    t = RetransmitTimer(floor=floor, ceiling=0.1)
    for rtt in steps:
        if rtt is None:
            before, estimate, backoff = t.timeout, t._base * t._backoff, t._backoff
            t.expired()
            if backoff < RetransmitTimer.MAX_BACKOFF and before < 0.1:  # the estimate doubles
                assert t.timeout == pytest.approx(min(0.1, max(floor, 2 * estimate)))
            else:
                assert t.timeout == before
        else:
            t.sample(rtt)
        assert floor <= t.timeout <= 0.1


@given(rtt=st.floats(0.0002, 0.05))
def test_a_steady_round_trip_converges_to_it(rtt: float) -> None:
    t = RetransmitTimer(floor=1e-4, ceiling=1.0)
    for _ in range(200):
        t.sample(rtt)
    assert t.srtt == pytest.approx(rtt, rel=1e-6)
    assert t.timeout == pytest.approx(max(1e-4, rtt + RetransmitTimer.GRANULARITY), rel=1e-3)


def test_first_sample_and_rfc6298_update() -> None:
    t = RetransmitTimer(floor=0.001, ceiling=1.0)
    assert t.timeout == 1.0  # before any sample: the ceiling (nothing retransmitted into a slow line)
    t.sample(0.010)
    assert (t.srtt, t.rttvar) == (0.010, 0.005)
    assert t.timeout == pytest.approx(0.010 + 4 * 0.005)
    t.sample(0.020)
    assert t.rttvar == pytest.approx(0.75 * 0.005 + 0.25 * 0.010)
    assert t.srtt == pytest.approx(0.875 * 0.010 + 0.125 * 0.020)
    estimate = t.srtt + 4 * t.rttvar
    t.expired()
    assert t.timeout == pytest.approx(2 * estimate)
    for _ in range(10):
        t.expired()
    assert t.timeout == pytest.approx(RetransmitTimer.MAX_BACKOFF * estimate)  # one doubling at most
    t.sample(0.010)  # a valid sample ends the back-off
    assert t.timeout < 0.05
    estimate = t.timeout
    for _ in range(RetransmitTimer.AMBIGUOUS_LIMIT - 1):
        t.ambiguous()
    assert t.timeout == estimate
    t.ambiguous()  # frames keep needing a second try: the round trip outgrew the estimate
    assert t.timeout == pytest.approx(2 * estimate)
    with pytest.raises(ValueError, match="floor"):
        RetransmitTimer(floor=0.2, ceiling=0.1)
