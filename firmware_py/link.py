"""Board side of the serial link layer: ACK/NAK, stop-and-wait retransmission, duplicate filter.

Rules (PROTOCOL.md, "Link layer"): every frame except ACK/NAK is reliable and numbered 1..255
(wrapping to 1). One reliable frame is outstanding at a time; the rest queue. A good reliable
frame is always ACKed with its seq, and delivered unless its seq equals the last delivered seq
(a duplicate); HELLO and BOOT are always delivered and reset that seq. A frame that fails to
decode is counted and answered with NAK (seq 0). NAK or ACK timeout retransmits the outstanding
frame unchanged (same seq), except that a press (codec.ButtonEvent) is framed again at each copy with
its age at that moment. Replies give up after `reply_tries`; events (persistent) retry forever with a
doubling timeout capped at `max_backoff_ms`; the first good frame from the peer ends the backoff
(the event is resent at once). A full queue drops its oldest event first.

The ACK timeout adapts to the measured round trip as TCP's does (RFC 6298 in integer milliseconds:
smoothed RTT and variance; Karn's rule: only a frame ACKed after its first transmission is timed; a
timeout doubles it once until the next sample, four untimed frames in a row double the estimate),
never below the frame's and its ACK's wire time at `baudrate` (and one tick), never above
`ack_timeout_ms` (see controller/serial/rto.py for why the back-off stops at one doubling).

Versions (PROTOCOL.md, "Version negotiation"): the session starts at protocol 1 after every
boot. BOOT is always sent in a v1 frame (whoever listens can read it); set_version(2), done by
the board when the controller's HELLO asks for 2, frames everything else as v2 from then on
(the outstanding frame too) and refuses v1 frames other than HELLO (a controller starting over)
and ACK/NAK (the answer to our v1 BOOT). An ACK goes out in the version of the frame it answers.
"""

from firmware_py import codec
from firmware_py.hal import ticks_diff

COUNTER_NAMES = (
    "frames_sent", "frames_received", "bytes_received", "decode_errors", "resyncs", "naks_sent",
    "naks_received", "acks_stale", "retransmissions", "duplicates", "give_ups", "queue_overflows",
    "version_refused",
)
SESSION_OPENERS = (codec.HELLO, codec.BOOT)  # always delivered, always framed v1 when sent
# v1 frames a v2 session still takes: a controller starting over, and the bare ACK/NAK answering
# our v1 BOOT (a damaged v2 frame never becomes one of these by gaining or losing bytes: its first
# byte stays 2).
V1_IN_V2 = (codec.HELLO, codec.ACK, codec.NAK)


class Link:
    def __init__(self, uart, ack_timeout_ms=100, reply_tries=20, max_backoff_ms=1000, queue_max=32,
                 baudrate=115200):
        self.uart = uart
        self.ack_timeout_ms = ack_timeout_ms
        self.baudrate = baudrate
        self.srtt8 = None  # smoothed round trip x 8 (ms), None before the first sample
        self.rttvar4 = 0  # round-trip variance x 4 (ms)
        self.rto_base = ack_timeout_ms
        self.rto_backoff = 1
        self.rto_untimed = 0  # frames in a row ACKed only after a retransmission
        self.reply_tries = reply_tries
        self.max_backoff_ms = max_backoff_ms
        self.queue_max = queue_max
        self.deframer = codec.Deframer()
        self.queue = []  # [(message, persistent)]
        self.out = None  # [seq, wire, sent_at, tries, persistent, timeout_ms, message]
        self.tx_seq = 0
        self.last_rx_seq = None
        self.last_rx_at = None  # ticks of the last good frame from the controller
        self.version = 1
        self.counters = dict((name, 0) for name in COUNTER_NAMES)

    def set_version(self, version, now=None):
        """Frame everything but BOOT as `version` from now on; the outstanding frame is re-framed."""
        self.version = version
        out = self.out
        if out is not None:
            out[1] = self._encode(out[0], out[6], out[2] if now is None else now)

    def _encode(self, seq, message, now=0):
        version = 1 if message.TYPE in SESSION_OPENERS else self.version
        if hasattr(message, "at_send"):  # a press: framed for the session, stamped with its age now
            message = message.at_send(version, ticks_diff(now, message.released_at))
        return codec.encode_frame(codec.message_frame(seq, message), version)

    # ------------------------------------------------------------ sending

    def send(self, message, persistent=False):
        """Queue a reliable message; persistent ones (events) are retried until acknowledged.

        When the queue is full (the controller has been away a long time) the oldest queued
        event makes room, so replies to a returning controller are never crowded out.
        """
        if len(self.queue) >= self.queue_max:
            self.counters["queue_overflows"] += 1
            oldest_event = None
            for i in range(len(self.queue)):
                if self.queue[i][1]:
                    oldest_event = i
                    break
            if oldest_event is None:
                return False
            self.queue.pop(oldest_event)
        self.queue.append((message, persistent))
        return True

    def idle(self):
        return self.out is None and not self.queue

    def _write(self, wire):
        self.uart.write(wire)

    # ------------------------------------------------------------ retransmission timer

    def _timeout(self, wire):
        """ms to wait for the ACK of `wire`: the estimate, capped, but never under its wire time."""
        nbytes = len(wire) + 8  # the frame and its ACK
        floor = (nbytes * 10 * 1000 + self.baudrate - 1) // self.baudrate + 1  # 8N1, plus one tick
        return max(floor, min(self.ack_timeout_ms, self.rto_base * self.rto_backoff))

    def _sample(self, rtt):
        if self.srtt8 is None:
            self.srtt8, self.rttvar4 = rtt * 8, rtt * 2
        else:
            delta = rtt - self.srtt8 // 8
            self.srtt8 += delta
            self.rttvar4 += abs(delta) - self.rttvar4 // 4
        self.rto_base = self.srtt8 // 8 + max(1, self.rttvar4)
        self.rto_backoff = 1
        self.rto_untimed = 0

    def _expired(self):
        if self.rto_backoff < 2:
            self.rto_backoff *= 2

    def _untimed(self):
        self.rto_untimed += 1
        if self.rto_untimed >= 4:
            self.rto_untimed = 0
            self.rto_base = min(self.ack_timeout_ms, self.rto_base * 2)

    def _next_seq(self):
        self.tx_seq = self.tx_seq % 255 + 1
        return self.tx_seq

    def service(self, now):
        """Retransmit on timeout, give up on replies, send the next queued frame."""
        out = self.out
        if out is not None and ticks_diff(now, out[2]) >= out[5]:
            if not out[4] and out[3] >= self.reply_tries:
                self.counters["give_ups"] += 1
                self.out = None
            else:
                self._expired()
                self._retransmit(now, backoff=True)
        if self.out is None and self.queue:
            message, persistent = self.queue.pop(0)
            seq = self._next_seq()
            wire = self._encode(seq, message, now)
            self.out = [seq, wire, now, 1, persistent, self._timeout(wire), message]
            self._write(wire)
            self.counters["frames_sent"] += 1

    def _retransmit(self, now, backoff):
        out = self.out
        if out is None:
            return
        out[2] = now
        out[3] += 1
        if hasattr(out[6], "at_send"):
            out[1] = self._encode(out[0], out[6], now)  # every copy of a press says its age as it leaves
        if backoff and out[4]:
            out[5] = min(out[5] * 2, self.max_backoff_ms)
        else:
            out[5] = self._timeout(out[1])
        self._write(out[1])
        self.counters["retransmissions"] += 1

    def _peer_is_back(self, now):
        """A good frame came: an event backed off while the peer was away is resent at once."""
        out = self.out
        if out is not None and out[5] > max(self.ack_timeout_ms, self._timeout(out[1])):
            self._retransmit(now, backoff=False)

    # ------------------------------------------------------------ receiving

    def poll(self, now):
        """Read what the UART has; return delivered items as (message or None, error text or None, frame)."""
        data = self.uart.read(256)
        if not data:
            return []
        self.counters["bytes_received"] += len(data)
        errors, resyncs = self.deframer.errors, self.deframer.resyncs
        frames = self.deframer.feed(data)
        bad = self.deframer.errors - errors + self.deframer.resyncs - resyncs
        self.counters["decode_errors"] += self.deframer.errors - errors
        self.counters["resyncs"] += self.deframer.resyncs - resyncs
        for _ in range(bad):
            self._nak()
        delivered = []
        for frame in frames:
            if frame.version < self.version and frame.type not in V1_IN_V2:
                self.counters["version_refused"] += 1  # a v1 frame inside a v2 session
                self._nak()
                continue
            item = self._receive(frame, now)
            if item is not None:
                delivered.append(item)
        return delivered

    def _nak(self):
        self._write(codec.encode_frame(codec.Frame(0, codec.NAK), self.version))
        self.counters["naks_sent"] += 1

    def _receive(self, frame, now):
        if frame.type == codec.ACK:
            if self.out is not None and frame.seq == self.out[0]:
                if self.out[3] == 1:  # Karn: only a frame sent once is timed
                    self._sample(ticks_diff(now, self.out[2]))
                else:
                    self._untimed()
                self.out = None
            else:
                self.counters["acks_stale"] += 1
            return None
        if frame.type == codec.NAK:
            self.counters["naks_received"] += 1
            if self.out is not None:
                self._retransmit(now, backoff=False)
            return None
        self.counters["frames_received"] += 1
        self.last_rx_at = now
        self._write(codec.encode_frame(codec.Frame(frame.seq, codec.ACK), frame.version))
        self._peer_is_back(now)
        resets = frame.type in SESSION_OPENERS
        if not resets and frame.seq == self.last_rx_seq:
            self.counters["duplicates"] += 1
            return None
        self.last_rx_seq = frame.seq
        try:
            return (codec.decode_message(frame), None, frame)
        except codec.CodecError as exc:
            return (None, str(exc), frame)
