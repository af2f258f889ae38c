"""Differential driver: runs the firmware's codec, journal and link on a batch of cases and returns
what came out, as JSON text. The same file runs under CPython and inside the MicroPython VM; the
tests compare the two answers byte for byte (tests/firmware/test_micropython_diff.py).

Bytes travel as hex; errors are reported as the exception class name only (message texts may
differ between interpreters, what matters is that both refuse).
"""

import json
from binascii import hexlify, unhexlify

from firmware_py import codec
from firmware_py.buttons import Buttons
from firmware_py.journal import Journal
from firmware_py.link import Link
from firmware_py.nvs import MemoryStore


def _hex(data):
    return hexlify(bytes(data)).decode()


def _bin(text):
    return unhexlify(text.encode())


def _frame_out(frame):
    return [frame.seq, frame.type, _hex(frame.payload)]


# ---------------------------------------------------------------- codec


def _codec_case(case):
    kind = case[0]
    if kind == "encode":  # ["encode", version, seq, type, payload_hex]
        try:
            return _hex(codec.encode_frame(codec.Frame(case[2], case[3], _bin(case[4])), case[1]))
        except codec.CodecError:
            return "CodecError"
    if kind == "deframe":  # ["deframe", accept_versions, [chunk_hex, ...]]
        deframer = codec.Deframer(tuple(case[1]))
        frames = []
        for chunk in case[2]:
            frames += [_frame_out(f) + [f.version] for f in deframer.feed(_bin(chunk))]
        return [frames, deframer.errors, deframer.resyncs]
    if kind == "message":  # ["message", type, payload_hex]: decode, then encode again
        try:
            msg = codec.decode_message(codec.Frame(1, case[1], _bin(case[2])))
        except codec.CodecError:
            return "CodecError"
        return [msg.__class__.__name__, _hex(msg.encode())]
    if kind == "crc":  # ["crc", data_hex]
        data = _bin(case[1])
        return [codec.crc16_ccitt(data), codec.crc32(data)]
    if kind == "button":  # ["button", [[t, level], ...], version, send_delay]: driver, then the frame
        level = [0]
        pin = _Pin(level)
        buttons = Buttons([pin], 50)
        out = []
        for t, value in case[1]:
            level[0] = value
            for index, hold, released_at in buttons.poll(t):
                event = codec.ButtonEvent(index, hold, released_at)
                sent_at = t + case[3]
                msg = event.at_send(case[2], sent_at - released_at)
                wire = codec.encode_frame(codec.message_frame(1, msg), case[2])
                out.append([index, hold, released_at, _hex(wire)])
        return out
    raise ValueError("codec case: expected encode, deframe, message, crc or button, got %r" % (kind,))


class _Pin:
    def __init__(self, level):
        self.level = level

    def value(self):
        return self.level[0]


def codec_batch(text):
    return json.dumps([_codec_case(c) for c in json.loads(text)])


# ---------------------------------------------------------------- journal


def _journal_state(journal, store):
    keys = sorted(store.data)
    return [
        [[k, _hex(store.data[k])] for k in keys],
        sorted([cid, e[0], e[1], e[2], e[3]] for cid, e in journal.entries.items()),
        journal.next_slot,
        journal.order,
    ]


def journal_batch(text):
    """Each case: [size, [op, ...]]; op = ["begin", cid, col] | ["finish", cid, outcome] |
    ["lookup", cid] | ["reboot"] (reload from the store, then recover)."""
    results = []
    for size, ops in json.loads(text):
        store = MemoryStore()
        journal = Journal(store, size)
        seen = []
        for op in ops:
            if op[0] == "begin":
                journal.begin(op[1], op[2])
            elif op[0] == "finish":
                if journal.lookup(op[1]) is None:
                    seen.append("absent")
                    continue
                journal.finish(op[1], op[2])
            elif op[0] == "lookup":
                found = journal.lookup(op[1])
                seen.append(None if found is None else list(found))
            elif op[0] == "reboot":
                journal = Journal(store, size)
                seen.append(sorted(journal.recover()))
        results.append([seen, _journal_state(journal, store)])
    return json.dumps(results)


# ---------------------------------------------------------------- link


class _Uart:
    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()

    def read(self, n):
        data = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return data or None

    def write(self, data):
        self.tx.extend(data)
        return len(data)


def _link_state(link):
    out = link.out
    return [
        sorted([k, v] for k, v in link.counters.items()),
        len(link.queue),
        None if out is None else [out[0], _hex(out[1]), out[3], out[4], out[5]],
        link.tx_seq,
        link.last_rx_seq,
        link.version,
    ]


def link_batch(text):
    """Each case: [[op, ...]] on one board Link; op = ["rx", now, hex] (bytes arrive, then poll) |
    ["send", now, nonce, persistent] (queue a Pong) | ["service", now] | ["version", v].
    Per op the bytes the link wrote and what it delivered; at the end its whole state."""
    results = []
    for ops in json.loads(text):
        uart = _Uart()
        link = Link(uart, 100)
        trace = []
        for op in ops:
            if op[0] == "rx":
                uart.rx.extend(_bin(op[2]))
                got = []
                for message, error, frame in link.poll(op[1]):
                    got.append([repr(message), error is not None, _frame_out(frame)])
                trace.append(["rx", got])
            elif op[0] == "send":
                trace.append(["send", link.send(codec.Pong(op[2]), op[3])])
            elif op[0] == "service":
                link.service(op[1])
            elif op[0] == "version":
                link.set_version(op[1])
            trace.append(_hex(uart.tx))
            uart.tx = bytearray()
        results.append([trace, _link_state(link)])
    return json.dumps(results)


# ---------------------------------------------------------------- firmware update and boot selector


class _Msg:
    """A stand-in for a decoded update message: the receiver reads attributes only."""

    def __init__(self, **fields):
        for name in fields:
            setattr(self, name, fields[name])


def update_batch(text):
    """Each case: [[op, ...]] on one Receiver and its MemoryStore; op = ["begin", model, files, door] |
    ["file", index, name, size, sha_hex] | ["chunk", index, offset, data_hex] | ["commit"] |
    ["boot"] (bootsel.choose) | ["confirm"]. Per op the answer; at the end the store, hex."""
    from firmware_py import bootsel
    from firmware_py.update import Receiver

    results = []
    for ops in json.loads(text):
        store = MemoryStore()
        receiver = Receiver(store, "m1")
        trace = []
        for op in ops:
            kind = op[0]
            if kind == "begin":
                answer = receiver.begin(_Msg(version="0.3.0", model=op[1], files=op[2]), op[3])
            elif kind == "file":
                answer = receiver.file(_Msg(index=op[1], name=op[2], size=op[3], sha256=_bin(op[4])))
            elif kind == "chunk":
                answer = receiver.chunk(_Msg(index=op[1], offset=op[2], data=_bin(op[3])))
            elif kind == "commit":
                answer = receiver.commit(_Msg())
            elif kind == "boot":
                answer = list(bootsel.choose(store))
            else:
                answer = bootsel.confirm(store)
            trace.append([answer[0], answer[1]] if isinstance(answer, tuple) else answer)
        results.append([trace, [[k, _hex(store.data[k])] for k in sorted(store.data)]])
    return json.dumps(results)
