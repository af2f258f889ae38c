"""Codec: known bytes, CRC check value, COBS, and typed messages (examples and hypothesis properties)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_py import codec


def test_crc_check_value():
    assert codec.crc16_ccitt(b"123456789") == 0x29B1


def test_known_ping_bytes():
    wire = codec.encode_frame(codec.message_frame(1, codec.Ping(1)))
    assert wire == bytes.fromhex("04 01 01 12 01 01 04 01 5c f7 00")


def test_ack_and_nak_are_bare_frames():
    assert codec.decode_body(codec.encode_frame(codec.Frame(9, codec.ACK))[:-1]) == codec.Frame(9, codec.ACK)
    assert codec.encode_frame(codec.Frame(0, codec.NAK)).count(0) == 1


@given(st.binary(max_size=600))
def test_cobs_roundtrip_and_no_zero(data):
    encoded = codec.cobs_encode(data)
    assert 0 not in encoded
    assert codec.cobs_decode(encoded) == data
    assert len(encoded) <= len(data) + len(data) // 254 + 1


@given(st.binary(max_size=300))
def test_decode_body_never_raises_anything_but_codec_error(data):
    try:
        codec.decode_body(data)
    except codec.CodecError:
        pass


def test_payload_too_long_refused():
    with pytest.raises(codec.CodecError, match="at most 200 bytes, got 201"):
        codec.encode_frame(codec.Frame(1, 0x20, b"x" * 201))


def test_wrong_version_is_refused_with_both_numbers():
    body = bytes((3, 1, codec.PING, 0, 0, 0, 1))
    crc = codec.crc16_ccitt(body)
    wire = codec.cobs_encode(body + bytes((crc >> 8, crc & 0xFF)))
    with pytest.raises(codec.CodecError, match=r"version expected one of \(1, 2\), got 3"):
        codec.decode_body(wire)
    v2 = codec.encode_frame(codec.Frame(1, codec.PING, b"\0\0\0\1"), 2)[:-1]
    with pytest.raises(codec.CodecError, match=r"version expected one of \(1,\), got 2"):
        codec.decode_body(v2, (1,))


# ---------------------------------------------------------------- messages

FIELD_STRATEGIES = {
    "B": st.integers(0, 0xFF),
    "H": st.integers(0, 0xFFFF),
    "h": st.integers(-0x8000, 0x7FFF),
    "I": st.integers(0, 0xFFFFFFFF),
    "s": st.text(max_size=40),
    "y": st.binary(max_size=40),
}
ALL_MESSAGES = sorted(set(codec.MESSAGE_TYPES.values()) | set(codec.MESSAGE_TYPES_V1.values()),
                      key=lambda c: (c.TYPE, c.__name__))


def version_of(message) -> int:
    """The protocol whose table holds this class (HelloReply is protocol 1's, HelloReply2 protocol 2's)."""
    return 2 if codec.MESSAGE_TYPES.get(message.TYPE) is type(message) else 1


def message_of(cls):
    return st.builds(cls, *(FIELD_STRATEGIES[code] for _, code in cls.FIELDS))


def messages():
    return st.one_of([message_of(cls) for cls in ALL_MESSAGES])


@given(messages(), st.integers(1, 255))
def test_message_roundtrip_through_a_frame(message, seq):
    wire = codec.encode_frame(codec.message_frame(seq, message), version_of(message))
    frames = codec.Deframer().feed(wire)
    assert len(frames) == 1
    assert frames[0].seq == seq
    assert codec.decode_message(frames[0]) == message


@given(st.integers(0, 255), st.integers(-10, 200_000), st.integers(-10, 200_000), st.integers(1, 255))
def test_button_event_frames_age_and_hold_saturating_and_v1_unchanged(index, hold, age, seq):
    """Protocol 2: a press is framed with its age as the copy leaves and its hold, both saturating at
    65535 ms; protocol 1: the one-byte v1 BUTTON, as before."""
    event = codec.ButtonEvent(index, hold, 0)
    v2 = codec.decode_message(codec.Deframer().feed(
        codec.encode_frame(codec.message_frame(seq, event.at_send(2, age)), 2))[0])
    assert v2 == codec.Button2(index, min(max(age, 0), 0xFFFF), min(max(hold, 0), 0xFFFF))
    assert v2.encode() == bytes((index,)) + min(max(age, 0), 0xFFFF).to_bytes(2, "big") + min(
        max(hold, 0), 0xFFFF).to_bytes(2, "big")
    v1_wire = codec.encode_frame(codec.message_frame(seq, event.at_send(1, age)), 1)
    v1_frame = codec.Deframer().feed(v1_wire)[0]
    assert v1_frame.payload == bytes((index,))
    assert codec.decode_message(v1_frame) == codec.Button(index)


def test_a_v1_button_payload_is_refused_in_a_v2_frame():
    with pytest.raises(codec.CodecError, match="Button2"):
        codec.decode_message(codec.Frame(1, codec.BUTTON, b"\x01", 2))


@given(st.sampled_from(ALL_MESSAGES), st.binary(max_size=60))
def test_decode_of_any_payload_is_a_message_or_codec_error(cls, payload):
    try:
        message = cls.decode(payload)
    except codec.CodecError:
        return
    assert message.encode() == payload


@given(st.sampled_from([c for c in ALL_MESSAGES if c.FIELDS]), st.integers(min_value=2**32))
def test_out_of_range_field_is_a_codec_error(cls, big):
    values = [big] + [0 if code not in "sy" else "" for _, code in cls.FIELDS[1:]]
    if cls.FIELDS[0][1] in "sy":
        values[0] = "x" * 300 if cls.FIELDS[0][1] == "s" else b"x" * 300
    with pytest.raises(codec.CodecError, match=cls.__name__):
        cls(*values).encode()


def test_unknown_type_names_it():
    with pytest.raises(codec.CodecError, match="0x7e"):
        codec.decode_message(codec.Frame(1, 0x7E, b""))


def test_message_constructor_errors_say_what_is_wrong():
    with pytest.raises(TypeError, match="missing field 'column'"):
        codec.Dispense(command_id=1)
    with pytest.raises(TypeError, match="unexpected fields"):
        codec.Ping(nonce=1, extra=2)
