"""The link's retransmission timer: adapts to the measured round trip as TCP does (RFC 6298: smoothed
RTT and its variance, Karn's rule, exponential backoff), never below the line's own wire time.

Karn's rule: a round trip is sampled only from a frame ACKed after its first transmission (an ACK
after a retransmission could belong to either copy). A timeout doubles the timer until the next
valid sample; a sample brings it back to SRTT + 4 x RTTVAR.

Unlike TCP the back-off stops at one doubling: a serial line loses frames to noise, not to
congestion, and at 5 % byte noise a 20-byte frame needs 3 tries on average, 10 at the 99th
percentile (measured: a back-off to 8x put ping p99 at 200 ms, one doubling at a few tens of ms).
What Karn's back-off is for, a round trip that really grew past the timer, is caught otherwise:
AMBIGUOUS_LIMIT frames in a row ACKed only after a retransmission (so never timed) double the
estimate itself, until a frame gets through on its first try and is timed again.
"""

from __future__ import annotations

BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit


def wire_time(nbytes: int, baudrate: int) -> float:
    """Seconds the line needs to carry `nbytes` at `baudrate` (8N1)."""
    return nbytes * BITS_PER_BYTE / baudrate


class RetransmitTimer:
    """SRTT/RTTVAR estimator. `floor` is the least the timer may be (the frame's and its ACK's wire
    time: nothing can come back sooner); `ceiling` the most (the configured ack timeout); `initial`
    the timer before any sample (the ceiling: a slow line is not retransmitted into)."""

    ALPHA = 1 / 8
    BETA = 1 / 4
    K = 4
    GRANULARITY = 0.0002  # the least variance term: 0.2 ms of scheduling jitter

    MAX_BACKOFF = 2  # one doubling: a serial line has noise, not congestion
    AMBIGUOUS_LIMIT = 4

    def __init__(self, floor: float, ceiling: float, initial: float | None = None) -> None:
        if not 0 < floor <= ceiling:
            raise ValueError(f"expected 0 < floor <= ceiling, got floor={floor} ceiling={ceiling}")
        self.floor, self.ceiling = floor, ceiling
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._backoff = 1
        self._ambiguous = 0
        self._base = min(ceiling, max(floor, initial if initial is not None else ceiling))

    @property
    def timeout(self) -> float:
        """Seconds to wait for an ACK before sending the frame again."""
        return self.timeout_at(self.floor)

    def timeout_at(self, floor: float) -> float:
        """The timeout for a frame whose own wire time (with its ACK) is `floor`: the estimate, capped
        by the ceiling, but never under the wire time (nothing can come back sooner)."""
        return max(floor, self.floor, min(self.ceiling, self._base * self._backoff))

    def sample(self, rtt: float) -> None:
        """A round trip measured on a frame ACKed after its first transmission (Karn's rule: the
        caller never samples a retransmitted frame)."""
        rtt = max(0.0, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - rtt)
            self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * rtt
        self._base = self.srtt + max(self.GRANULARITY, self.K * self.rttvar)
        self._backoff = 1
        self._ambiguous = 0

    def ambiguous(self) -> None:
        """A frame ACKed only after a retransmission (not timed, Karn): AMBIGUOUS_LIMIT in a row mean
        the round trip outgrew the estimate, which doubles (up to the ceiling)."""
        self._ambiguous += 1
        if self._ambiguous >= self.AMBIGUOUS_LIMIT:
            self._ambiguous = 0
            self._base = min(self.ceiling, self._base * 2)

    def expired(self) -> None:
        """No ACK within the timeout: back off (doubling, up to MAX_BACKOFF times the estimate and
        the ceiling) until the next valid sample."""
        if self.timeout < self.ceiling and self._backoff < self.MAX_BACKOFF:
            self._backoff *= 2
