"""Framer properties (hypothesis): roundtrip, any chunking, garbage around frames, corruption never
turns one frame into a different valid frame."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from firmware_py import codec

frames = st.builds(
    codec.Frame,
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=codec.MAX_PAYLOAD),
)


def wire_of(frame_list):
    return b"".join(codec.encode_frame(f) for f in frame_list)


def feed_chunks(data, cuts):
    deframer = codec.Deframer()
    out = []
    points = sorted(set(c % (len(data) + 1) for c in cuts))
    start = 0
    for point in [*points, len(data)]:
        out += deframer.feed(data[start:point])
        start = point
    return out, deframer


def is_garbage(run):
    """True when `run` (no 0x00 inside) does not decode as a frame on its own."""
    if not run:
        return True
    try:
        codec.decode_body(run)
    except codec.CodecError:
        return True
    return False


@given(frames)
def test_roundtrip_any_payload(frame):
    assert codec.Deframer().feed(codec.encode_frame(frame)) == [frame]


@given(st.lists(frames, max_size=8), st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_gives_the_same_frames(frame_list, cuts):
    got, deframer = feed_chunks(wire_of(frame_list), cuts)
    assert got == frame_list
    assert deframer.errors == 0


garbage = st.binary(min_size=1, max_size=60).filter(lambda g: all(is_garbage(r) for r in g.split(b"\x00")))


@given(st.lists(frames, min_size=1, max_size=5), st.lists(garbage, min_size=3, max_size=8),
       st.lists(st.integers(min_value=0), max_size=10))
def test_garbage_before_between_and_after(frame_list, junk, cuts):
    """Line garbage ended by a delimiter (a glitch, a half frame) costs no good frame."""
    stream = junk[0] + b"\x00"
    for i, frame in enumerate(frame_list):
        stream += codec.encode_frame(frame) + junk[(i + 1) % len(junk)] + b"\x00"
    stream += junk[-1]
    got, deframer = feed_chunks(stream, cuts)
    assert got == frame_list


corruptions = st.lists(
    st.tuples(st.sampled_from(["flip", "drop", "insert"]), st.integers(min_value=0), st.integers(0, 255)),
    min_size=1, max_size=3,
)


def corrupt(data, edits):
    out = bytearray(data)
    for kind, where, value in edits:
        i = where % len(out) if out else 0
        if kind == "flip" and out:
            out[i] ^= 1 << (value % 8)
        elif kind == "drop" and out:
            del out[i]
        else:
            out.insert(i, value)
    return bytes(out)


@given(frames, frames, corruptions)
def test_corrupted_frame_is_never_delivered_as_a_different_frame(frame, following, edits):
    wire = codec.encode_frame(frame)
    bad = corrupt(wire[:-1], edits)
    assume(bad != wire[:-1])
    got = codec.Deframer().feed(bad + b"\x00" + codec.encode_frame(following))
    for delivered in got:
        assert delivered in (frame, following), f"{delivered!r} is neither {frame!r} nor {following!r}"
    assert got[-1:] == [following] or following == frame


@given(frames, st.integers(min_value=0), st.integers(0, 7))
def test_any_single_bit_flip_is_detected(frame, where, bit):
    body = codec.cobs_decode(codec.encode_frame(frame)[:-1])
    flipped = bytearray(body)
    flipped[where % len(body)] ^= 1 << bit
    crc = (flipped[-2] << 8) | flipped[-1]
    assert codec.crc16_ccitt(bytes(flipped[:-2])) != crc
