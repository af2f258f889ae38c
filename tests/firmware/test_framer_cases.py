"""Framer robustness cases in the style of zigpy-znp's UART tests: each good frame arrives exactly once."""

from __future__ import annotations

from firmware_py import codec

PING = codec.message_frame(3, codec.Ping(0x01020304))
RESULT = codec.message_frame(4, codec.DispenseResult(77, 2, codec.DROPPED))


def test_byte_by_byte():
    deframer = codec.Deframer()
    got = []
    for byte in codec.encode_frame(PING) + codec.encode_frame(RESULT):
        got += deframer.feed(bytes([byte]))
    assert got == [PING, RESULT]


def test_stray_delimiters_before_between_after():
    data = b"\x00\x00" + codec.encode_frame(PING) + b"\x00\x00\x00" + codec.encode_frame(RESULT) + b"\x00"
    deframer = codec.Deframer()
    assert deframer.feed(data) == [PING, RESULT]
    assert deframer.errors == 0


def test_bad_crc_dropped_next_frame_delivered_once():
    body = bytearray(codec.cobs_decode(codec.encode_frame(PING)[:-1]))
    body[-1] ^= 0xFF
    deframer = codec.Deframer()
    got = deframer.feed(codec.cobs_encode(bytes(body)) + b"\x00" + codec.encode_frame(RESULT))
    assert got == [RESULT]
    assert deframer.errors == 1
    assert "CRC expected" in deframer.last_error


def test_truncated_frame_then_good_frame():
    wire = codec.encode_frame(PING)
    deframer = codec.Deframer()
    got = deframer.feed(wire[:5] + b"\x00" + codec.encode_frame(RESULT))
    assert got == [RESULT]
    assert deframer.errors == 1


def test_frame_split_across_feeds_arrives_once():
    wire = codec.encode_frame(PING)
    deframer = codec.Deframer()
    assert deframer.feed(wire[:4]) == []
    assert deframer.feed(wire[4:]) == [PING]
    assert deframer.feed(b"") == []


def test_overlong_run_without_delimiter_resyncs():
    deframer = codec.Deframer()
    got = deframer.feed(b"\x55" * (codec.MAX_WIRE * 3) + b"\x00" + codec.encode_frame(PING))
    assert got == [PING]
    assert deframer.resyncs == 1


def test_lost_delimiter_costs_at_most_two_frames():
    stream = codec.encode_frame(PING)[:-1] + codec.encode_frame(RESULT) + codec.encode_frame(PING)
    assert codec.Deframer().feed(stream) == [PING]


def test_same_frame_twice_is_delivered_twice_by_the_framer():
    """Duplicates are the link layer's job (seq), not the framer's."""
    wire = codec.encode_frame(PING)
    assert codec.Deframer().feed(wire + wire) == [PING, PING]
