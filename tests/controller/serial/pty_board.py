"""A small scripted board for link tests: the real codec and link rules behind the master side of a
real pty, with faults the simulator cannot produce on demand (a silent board, another protocol
version, an ERROR reply, a lost reply, a board that never ACKs)."""

from __future__ import annotations

import os
import select
import threading
import tty
from dataclasses import dataclass, field

from firmware_py import codec


@dataclass
class Script:
    """What the scripted board does; tests change it while it runs."""

    protocol: int = codec.PROTOCOL_VERSION  # the highest this board speaks; 1 behaves like the v1 firmware
    silent: bool = False  # reads, never answers (a board that is off)
    ack: bool = True  # answers ACK to reliable frames
    refuse_version: bool = False  # answers HELLO with ERROR(ERR_VERSION)
    reply_protocol: int | None = None  # HELLO_REPLY names this protocol whatever was asked (a broken board)
    error_for: set[int] = field(default_factory=set)  # message types answered with ERROR(ERR_BAD_PAYLOAD)
    swallow_replies: int = 0  # this many replies are never sent (the board gave up on them)
    hold_dispense: bool = False  # dispense results wait until release() is called
    outcome: int = codec.DROPPED


class PtyPeer:
    """Board side of a pty pair. `path` is the slave device the controller opens."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self._deframer = codec.Deframer()
        self._tx_seq = 0
        self.version = 1  # the session's frame version (2 after a HELLO that asked for it)
        self._rx_last: int | None = None
        self._stop = threading.Event()
        self._held: list[codec.DispenseResult] = []
        self._lock = threading.Lock()
        self.journal: dict[int, int] = {}
        self.spins: dict[int, int] = {}
        self.received: list[codec.Message] = []
        self.acks_seen: list[int] = []
        self.naks_seen = 0
        self.frames_seen: list[codec.Frame] = []  # every good reliable frame, duplicates included
        self.got = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="pty-peer", daemon=True)

    def __enter__(self) -> PtyPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self._slave)

    # ---------------------------------------------------------------- test hooks

    def send_event(self, msg: codec.Message) -> None:
        """An unsolicited board frame (no retransmission: tests that need it use the simulator)."""
        self._send_reliable(msg)

    def send_raw(self, data: bytes) -> None:
        os.write(self.master, data)

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for result in held:
            self._send_reliable(result)

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
        with self.got:
            return self.got.wait_for(predicate, timeout)

    # ---------------------------------------------------------------- board loop

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                continue
            errors = self._deframer.errors
            for frame in self._deframer.feed(data):
                self._on_frame(frame)
            for _ in range(self._deframer.errors - errors):
                self._write(codec.Frame(0, codec.NAK), self.version)

    def _on_frame(self, frame: codec.Frame) -> None:
        with self.got:
            if frame.type == codec.ACK:
                self.acks_seen.append(frame.seq)
            elif frame.type == codec.NAK:
                self.naks_seen += 1
            else:
                self.frames_seen.append(frame)
            self.got.notify_all()
        if frame.type in (codec.ACK, codec.NAK) or self.script.silent:
            return
        if self.script.ack:
            self._write(codec.Frame(frame.seq, codec.ACK), frame.version)
        if frame.seq == self._rx_last and frame.type != codec.HELLO:
            return
        self._rx_last = frame.seq
        msg = codec.decode_message(frame)
        with self.got:
            self.received.append(msg)
            self.got.notify_all()
        reply = self._answer(msg)
        if reply is None:
            return
        if self.script.swallow_replies > 0:
            self.script.swallow_replies -= 1
            return
        self._send_reliable(reply)

    def _answer(self, msg: codec.Message) -> codec.Message | None:
        s = self.script
        if msg.TYPE in s.error_for:
            return codec.Error(codec.ERR_BAD_PAYLOAD, "scripted error")
        if isinstance(msg, codec.Hello):
            offered = msg.protocol  # type: ignore[attr-defined]
            if s.refuse_version:
                return codec.Error(codec.ERR_VERSION, "board speaks protocol 9")
            if s.protocol == 1 and offered != 1:  # the v1 firmware's answer
                return codec.Error(codec.ERR_VERSION, f"protocol: board speaks 1, controller sent {offered}")
            self.version = min(offered, s.protocol)
            if s.reply_protocol is not None:
                self.version = 1
                return codec.HelloReply(s.reply_protocol, "peer-1.0", "peer-board", 6, 3)
            if self.version >= 2:
                return codec.HelloReply2(self.version, "peer-1.0", "peer-board", 6, 3, "peer-model")
            return codec.HelloReply(self.version, "peer-1.0", "peer-board", 6, 3)
        if isinstance(msg, codec.Ping):
            return codec.Pong(msg.nonce)  # type: ignore[attr-defined]
        if isinstance(msg, codec.StatusRequest):
            return codec.Status(1, 2150, 0b101, bytes([0, 1, 0, 0, 0, 2]), bytes([0, 0, 1, 0, 0, 0]))
        if isinstance(msg, codec.Dispense):
            return self._dispense(msg)
        if isinstance(msg, codec.QueryResult):
            cid = msg.command_id  # type: ignore[attr-defined]
            return codec.DispenseResult(cid, 0, self.journal.get(cid, codec.UNKNOWN_COMMAND))
        if isinstance(msg, codec.MotorTest):
            return codec.MotorTestResult(msg.column, codec.OK, 420)  # type: ignore[attr-defined]
        return None

    def _dispense(self, msg: codec.Message) -> codec.Message | None:
        cid, col = msg.command_id, msg.column  # type: ignore[attr-defined]
        if cid not in self.journal:
            self.journal[cid] = self.script.outcome
            self.spins[cid] = self.spins.get(cid, 0) + 1
        result = codec.DispenseResult(cid, col, self.journal[cid])
        if self.script.hold_dispense:
            with self._lock:
                self._held.append(result)
            return None
        return result

    def _send_reliable(self, msg: codec.Message) -> None:
        self._tx_seq = self._tx_seq % 255 + 1
        version = 1 if msg.TYPE == codec.BOOT else self.version
        self._write(codec.message_frame(self._tx_seq, msg), version)

    def _write(self, frame: codec.Frame, version: int | None = None) -> None:
        try:
            os.write(self.master, codec.encode_frame(frame, version or self.version))
        except OSError:
            pass
