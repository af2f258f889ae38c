"""Differential: the codec, the journal, the board's link state machine, and the update receiver with
the boot selector on the real MicroPython 1.27 VM and on CPython, on the same hypothesis-generated
inputs, give the same bytes and the same state.

One VM serves the whole module; every hypothesis example is a batch of cases sent in one call
(simulator/mpvm/vm/mp_diff.py runs on both interpreters).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_py import codec
from simulator.mpvm import VM_SIDE, MicroPythonVM

_spec = importlib.util.spec_from_file_location("mp_diff", VM_SIDE / "mp_diff.py")
assert _spec is not None and _spec.loader is not None
mp_diff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp_diff)


@pytest.fixture(scope="module")
def vm() -> Iterator[MicroPythonVM]:
    with MicroPythonVM() as machine:
        assert "micropython" in machine.exec("import sys\nprint(sys.implementation.name)")
        yield machine


def same_on_both(vm: MicroPythonVM, function: str, cases: list) -> list:
    text = json.dumps(cases)
    on_cpython = getattr(mp_diff, function)(text)
    on_micropython = vm.call("mp_diff", function, text)
    assert json.loads(on_micropython) == json.loads(on_cpython)
    assert on_micropython == on_cpython  # byte for byte, key order included
    result: list = json.loads(on_cpython)
    return result


def test_the_vm_is_micropython_1_27(vm):
    out = vm.exec("import sys\nprint(sys.implementation.name, sys.implementation.version[:2])")
    assert out.strip() == "micropython (1, 27)"


# ---------------------------------------------------------------- codec

ALL_TYPES = sorted(set(codec.MESSAGE_TYPES) | {codec.ACK, codec.NAK, 0x7E})
FIELD = {"B": st.integers(0, 0xFF), "H": st.integers(0, 0xFFFF), "h": st.integers(-0x8000, 0x7FFF),
         "I": st.integers(0, 0xFFFFFFFF), "s": st.text(max_size=12), "y": st.binary(max_size=12)}
ALL_CLASSES = sorted(set(codec.MESSAGE_TYPES.values()) | set(codec.MESSAGE_TYPES_V1.values()),
                     key=lambda c: (c.TYPE, c.__name__))
valid_messages = st.sampled_from(ALL_CLASSES).flatmap(
    lambda cls: st.builds(cls, *(FIELD[code] for _, code in cls.FIELDS)))
frames = st.tuples(st.sampled_from([1, 2]), st.integers(0, 255), st.sampled_from(ALL_TYPES),
                   st.binary(max_size=codec.MAX_PAYLOAD))


def damaged(wire: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(wire)
    for where, value in edits:
        if out:
            out[where % len(out)] = value
    return bytes(out)


@st.composite
def deframe_case(draw):
    stream = b""
    for version, seq, ftype, payload in draw(st.lists(frames, max_size=4)):
        wire = codec.encode_frame(codec.Frame(seq, ftype, payload), version)
        if draw(st.booleans()):
            hits = draw(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=3))
            wire = damaged(wire, hits)
        stream += draw(st.binary(max_size=6)) + wire
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunks = [stream[a:b].hex() for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    accept = draw(st.sampled_from([[1, 2], [2], [1]]))
    return ["deframe", accept, chunks]


@st.composite
def message_case(draw):
    if draw(st.booleans()):
        message = draw(valid_messages)
        return ["message", message.TYPE, message.encode().hex()]
    return ["message", draw(st.sampled_from(ALL_TYPES)), draw(st.binary(max_size=24)).hex()]


encode_case = frames.map(lambda f: ["encode", f[0], f[1], f[2], f[3].hex()]) | st.tuples(
    st.sampled_from([1, 2, 3]), st.integers(-1, 300), st.integers(0, 255), st.binary(max_size=210)).map(
    lambda f: ["encode", f[0], f[1], f[2], f[3].hex()])
crc_case = st.binary(max_size=64).map(lambda b: ["crc", b.hex()])


@st.composite
def button_case(draw):
    """A button pin's readings over time (debounce 50 ms), then each press framed as the link would
    frame a copy sent `send_delay` ms after the poll that ended it (protocol 1: Button, 2: Button2)."""
    t, script = 0, []
    for gap, level in draw(st.lists(st.tuples(st.integers(1, 40_000), st.integers(0, 1)), max_size=12)):
        t += gap
        script.append([t, level])
    script.append([t + 100, 0])
    script.append([t + 200, 0])
    return ["button", script, draw(st.sampled_from([1, 2])), draw(st.integers(0, 200_000))]


codec_cases = st.lists(encode_case | deframe_case() | message_case() | crc_case | button_case(),
                       min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(codec_cases)
def test_codec_same_bytes_on_micropython(vm, cases):
    results = same_on_both(vm, "codec_batch", cases)
    assert len(results) == len(cases)


def test_button_press_same_frame_on_micropython(vm):
    """Held 1.6 s, sent 70 s after the release: both interpreters frame hold 1600 and the age saturated."""
    case = ["button", [[100, 1], [1700, 0], [1800, 0]], 2, 70_000 - 100]
    (index, hold, released_at, wire), = same_on_both(vm, "codec_batch", [case])[0]
    assert (index, hold, released_at) == (0, 1600, 1700)
    frame, = codec.Deframer().feed(bytes.fromhex(wire))
    assert codec.decode_message(frame) == codec.Button2(0, codec.AGE_MAX_MS, 1600)


def test_codec_diff_catches_a_difference(vm):
    """The comparison can fail: the VM's answer for another input is not CPython's for this one."""
    ours = mp_diff.codec_batch(json.dumps([["crc", "00"]]))
    theirs = vm.call("mp_diff", "codec_batch", json.dumps([["crc", "01"]]))
    assert ours != theirs


# ---------------------------------------------------------------- journal

cids = st.integers(1, 12)
journal_ops = st.lists(
    st.tuples(st.just("begin"), cids, st.integers(1, 6)).map(list)
    | st.tuples(st.just("finish"), cids, st.integers(0, 9)).map(list)
    | st.tuples(st.just("lookup"), cids).map(list)
    | st.just(["reboot"]),
    max_size=30,
)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), journal_ops).map(list), min_size=1, max_size=6))
def test_journal_same_state_on_micropython(vm, cases):
    results = same_on_both(vm, "journal_batch", cases)
    for (size, _ops), (_seen, state) in zip(cases, results, strict=True):
        assert len(state[0]) <= size  # the ring never holds more than its size


# ---------------------------------------------------------------- link


@st.composite
def link_ops(draw):
    ops: list = []
    now = 1000
    for _ in range(draw(st.integers(1, 25))):
        now += draw(st.integers(0, 400))
        kind = draw(st.sampled_from(["rx", "rx", "send", "service", "service", "version"]))
        if kind == "rx":
            seq = draw(st.integers(0, 255))
            version = draw(st.sampled_from([1, 2]))
            ftype = draw(st.sampled_from([codec.ACK, codec.NAK, codec.HELLO, codec.PING, codec.LIGHT, 0x7E]))
            payloads = {codec.HELLO: b"\x02", codec.PING: b"\x00\x00\x00\x07", codec.LIGHT: b"\x01"}
            payload = payloads.get(ftype, b"")
            wire = codec.encode_frame(codec.Frame(seq, ftype, payload), version)
            if draw(st.integers(0, 4)) == 0:
                wire = damaged(wire, [(draw(st.integers(0, 40)), draw(st.integers(0, 255)))])
            ops.append(["rx", now, wire.hex()])
        elif kind == "send":
            ops.append(["send", now, draw(st.integers(0, 2**32 - 1)), draw(st.booleans())])
        elif kind == "version":
            ops.append(["version", draw(st.sampled_from([1, 2]))])
        else:
            ops.append(["service", now])
    return ops


@settings(max_examples=120, deadline=None)
@given(st.lists(link_ops(), min_size=1, max_size=5))
def test_link_state_machine_same_on_micropython(vm, cases):
    results = same_on_both(vm, "link_batch", cases)
    for trace, state in results:
        assert state[1] <= 32  # the queue stays bounded
        assert len(trace) >= 1


# ---------------------------------------------------------------- firmware update and boot selector

FILE_NAMES = ["firmware_py/a.py", "firmware_py/b.py", "firmware_py/__init__.py", "firmware_py/Bad.py", "x.py"]


@st.composite
def update_ops(draw):
    """A plausible update (files announced with their true hashes, chunks in order) with random
    mistakes mixed in: a wrong hash, a chunk out of order, a repeated chunk, boots and confirms."""
    import hashlib

    count = draw(st.integers(1, 3))
    announced = count if draw(st.integers(0, 5)) else draw(st.integers(0, 4))
    model = "m1" if draw(st.integers(0, 9)) else "m2"
    ops: list = [["begin", model, announced, bool(draw(st.integers(0, 9)))]]
    for index in range(count):
        data = draw(st.binary(max_size=400))
        sha = hashlib.sha256(data).digest() if draw(st.integers(0, 5)) else b"\0" * 32
        name = f"firmware_py/f{index}.py" if draw(st.integers(0, 5)) else draw(st.sampled_from(FILE_NAMES))
        ops.append(["file", index, name, len(data), sha.hex()])
        offset = 0
        while offset < len(data):
            size = draw(st.integers(1, 180))
            start = offset if draw(st.integers(0, 6)) else max(0, offset - size)  # sometimes a repeat
            ops.append(["chunk", index, start, data[start:start + size].hex()])
            offset = max(offset, start + len(data[start:start + size]))
    ops.append(["commit"])
    ops += draw(st.lists(st.sampled_from([["boot"], ["confirm"]]), max_size=4))
    return ops


@settings(max_examples=100, deadline=None)
@given(st.lists(update_ops(), min_size=1, max_size=4))
def test_update_receiver_and_boot_selector_same_on_micropython(vm, cases):
    results = same_on_both(vm, "update_batch", cases)
    assert len(results) == len(cases)
