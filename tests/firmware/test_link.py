"""Board side of the link layer: ACK/NAK, retransmission, give-up, event backoff, duplicates, seq wrap."""

from __future__ import annotations

from firmware_py import codec
from firmware_py.hal import ticks_add, ticks_diff
from firmware_py.link import Link
from tests.firmware.harness import FakeUart


def frames_written(uart: FakeUart) -> list[codec.Frame]:
    data = bytes(uart.tx)
    uart.tx.clear()
    return codec.Deframer().feed(data)


def test_reliable_frame_is_acked_and_delivered_once():
    uart = FakeUart()
    link = Link(uart)
    wire = codec.encode_frame(codec.message_frame(4, codec.Ping(1)))
    uart.rx.extend(wire)
    got = link.poll(0)
    assert [m for m, _, _ in got] == [codec.Ping(1)]
    uart.rx.extend(wire)
    assert link.poll(1) == []
    assert frames_written(uart) == [codec.Frame(4, codec.ACK), codec.Frame(4, codec.ACK)]
    assert link.counters["duplicates"] == 1


def test_hello_and_boot_always_delivered():
    uart = FakeUart()
    link = Link(uart)
    hello = codec.encode_frame(codec.message_frame(1, codec.Hello(1)))
    uart.rx.extend(hello + hello)
    assert len(link.poll(0)) == 2
    assert link.counters["duplicates"] == 0
    assert link.last_rx_seq == 1


def test_bad_frame_gets_nak_and_nak_triggers_retransmission():
    uart = FakeUart()
    link = Link(uart)
    link.send(codec.Pong(5))
    link.service(0)
    first = frames_written(uart)
    assert len(first) == 1
    uart.rx.extend(b"\x07\x01\x02\x00")  # garbage then a delimiter
    assert link.poll(1) == []
    assert frames_written(uart) == [codec.Frame(0, codec.NAK)]
    uart.rx.extend(codec.encode_frame(codec.Frame(0, codec.NAK)))
    link.poll(2)
    assert frames_written(uart) == first, "retransmitted unchanged, same seq"
    assert link.counters["retransmissions"] == 1


def test_ack_timeout_retransmits_and_stale_ack_is_ignored():
    uart = FakeUart()
    link = Link(uart, ack_timeout_ms=100)
    link.send(codec.Pong(5))
    link.service(0)
    sent = frames_written(uart)[0]
    link.service(99)
    assert frames_written(uart) == []
    link.service(100)
    assert frames_written(uart) == [sent]
    uart.rx.extend(codec.encode_frame(codec.Frame(sent.seq + 1, codec.ACK)))
    link.poll(101)
    assert link.out is not None and link.counters["acks_stale"] == 1
    uart.rx.extend(codec.encode_frame(codec.Frame(sent.seq, codec.ACK)))
    link.poll(102)
    assert link.out is None


def test_stop_and_wait_one_outstanding_frame():
    uart = FakeUart()
    link = Link(uart)
    link.send(codec.Pong(1))
    link.send(codec.Pong(2))
    link.service(0)
    link.service(1)
    assert [codec.decode_message(f) for f in frames_written(uart)] == [codec.Pong(1)]
    uart.rx.extend(codec.encode_frame(codec.Frame(1, codec.ACK)))
    link.poll(2)
    link.service(2)
    assert [codec.decode_message(f) for f in frames_written(uart)] == [codec.Pong(2)]


def test_reply_gives_up_after_twenty_tries_but_event_never_does():
    uart = FakeUart()
    link = Link(uart, ack_timeout_ms=100, reply_tries=20, max_backoff_ms=1000)
    link.send(codec.Pong(1))
    now = 0
    link.service(now)
    for _ in range(40):
        now += 100
        link.service(now)
    sends = [f for f in frames_written(uart) if f.type == codec.PONG]
    assert len(sends) == 20
    assert link.counters["give_ups"] == 1
    link.send(codec.Button(0), persistent=True)
    link.service(now)
    assert frames_written(uart)
    gaps = []
    last = now
    for _ in range(60000):
        now += 10
        link.service(now)
        if frames_written(uart):
            gaps.append(now - last)
            last = now
    assert link.out is not None, "an event is never given up"
    assert gaps[:6] == [100, 200, 400, 800, 1000, 1000], "timeout doubles up to 1 s"


def test_seq_wraps_from_255_to_1_never_0():
    uart = FakeUart()
    link = Link(uart)
    seqs = []
    for i in range(300):
        link.send(codec.Pong(i))
        link.service(i)
        frame = frames_written(uart)[0]
        seqs.append(frame.seq)
        uart.rx.extend(codec.encode_frame(codec.Frame(frame.seq, codec.ACK)))
        link.poll(i)
    assert 0 not in seqs
    assert seqs[254:257] == [255, 1, 2]


def test_queue_is_bounded():
    link = Link(FakeUart(), queue_max=3)
    assert all(link.send(codec.Pong(i)) for i in range(3))
    assert link.send(codec.Pong(9)) is False
    assert link.counters["queue_overflows"] == 1


def test_full_queue_drops_the_oldest_event_not_a_reply():
    link = Link(FakeUart(), queue_max=3)
    link.send(codec.Button(0), persistent=True)
    link.send(codec.Button(1), persistent=True)
    link.send(codec.Door(1), persistent=True)
    reply = codec.HelloReply(1, "0.1.0", "b", 6, 1)
    assert link.send(reply) is True
    assert [m for m, _ in link.queue] == [codec.Button(1), codec.Door(1), reply]


def test_ticks_diff_across_wrap():
    near_end = (1 << 30) - 5
    assert ticks_diff(ticks_add(near_end, 10), near_end) == 10
    assert ticks_diff(near_end, ticks_add(near_end, 10)) == -10


def test_backed_off_event_is_resent_as_soon_as_the_peer_speaks():
    uart = FakeUart()
    link = Link(uart, ack_timeout_ms=100, max_backoff_ms=1000)
    link.send(codec.Boot(1, "power_on"), persistent=True)
    for now in range(0, 2000, 10):
        link.service(now)
    assert link.out[5] == 1000
    frames_written(uart)
    uart.rx.extend(codec.encode_frame(codec.message_frame(1, codec.Hello(1))))
    link.poll(2001)
    sent = frames_written(uart)
    assert sent[0] == codec.Frame(1, codec.ACK)
    assert codec.decode_message(sent[1]) == codec.Boot(1, "power_on"), "BOOT resent at once"
    assert link.out[5] == 100


def test_ack_timeout_adapts_to_the_round_trip_with_karns_rule():
    """Replies' ACK timeout: the cap (100 ms) until a round trip is timed, then SRTT + 4 RTTVAR but
    never under the wire time at the baud rate; a frame ACKed after a retransmission is not timed."""
    uart = FakeUart()
    link = Link(uart, ack_timeout_ms=100, baudrate=115200)
    now = 0
    for n in range(20):  # round trips of 1 ms, each ACKed at the first try
        link.send(codec.Pong(n))
        link.service(now)
        sent = frames_written(uart)[0]
        uart.rx.extend(codec.encode_frame(codec.Frame(sent.seq, codec.ACK)))
        now += 1
        link.poll(now)
        assert link.out is None
    link.send(codec.Pong(99))
    link.service(now)
    wire = frames_written(uart)[0]
    floor = ((len(codec.encode_frame(wire)) + 8) * 10 * 1000 + 115199) // 115200 + 1
    assert floor <= link.out[5] <= 4, f"expected a timeout of a few ms, got {link.out[5]}"
    timeout = link.out[5]
    link.service(now + timeout)  # no ACK: retransmitted, the estimate backs off once
    assert frames_written(uart) == [wire] and link.out[5] == max(floor, 2 * link.rto_base)
    before = (link.srtt8, link.rttvar4)
    uart.rx.extend(codec.encode_frame(codec.Frame(wire.seq, codec.ACK)))
    link.poll(now + timeout + 50)  # ACKed after a retransmission: ambiguous, not a sample
    assert (link.srtt8, link.rttvar4) == before and link.rto_untimed == 1
    slow = Link(FakeUart(), ack_timeout_ms=100, baudrate=1200)  # a slow line: the wire time rules
    slow.srtt8, slow.rto_base = 8, 1
    slow.send(codec.Pong(1))
    slow.service(0)
    assert slow.out[5] >= (len(slow.out[1]) + 8) * 10 * 1000 // 1200
