"""A minimal controller side for simulator tests: ACKs what the board sends, retransmits its own frames.

Deliberately independent of controller/serial/board_link.py so the simulator is tested on its own.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from firmware_py import codec


class PeerError(AssertionError):
    pass


class Peer:
    def __init__(self, port: Any, ack_timeout: float = 0.1, tries: int = 30) -> None:
        self.port = port
        self.port.timeout = 0.02
        self.ack_timeout = ack_timeout
        self.tries = tries
        self.seq = 0
        self.messages: queue.Queue[codec.Message] = queue.Queue()
        self.seen: list[codec.Message] = []
        self.backlog: list[codec.Message] = []
        self._acked: dict[int, threading.Event] = {}
        self._nak = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_rx_seq: int | None = None
        self.version = 1  # frames this peer sends (HELLO always v1); 2 once the board answered HelloReply2
        self._thread = threading.Thread(target=self._read, name="test-peer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.port.close()

    def _read(self) -> None:
        deframer = codec.Deframer()
        while not self._stop.is_set():
            try:
                data = self.port.read(1)  # wait up to the port timeout for the first byte
                if data and self.port.in_waiting:
                    data += self.port.read(self.port.in_waiting)
            except (serial.SerialException, OSError):
                return
            errors = deframer.errors + deframer.resyncs
            frames = deframer.feed(data)
            for _ in range(deframer.errors + deframer.resyncs - errors):
                self.port.write(codec.encode_frame(codec.Frame(0, codec.NAK), self.version))
            for frame in frames:
                self._on_frame(frame)

    def _on_frame(self, frame: codec.Frame) -> None:
        if frame.type == codec.ACK:
            with self._lock:
                event = self._acked.get(frame.seq)
            if event is not None:
                event.set()
            return
        if frame.type == codec.NAK:
            self._nak.set()
            return
        self.port.write(codec.encode_frame(codec.Frame(frame.seq, codec.ACK), frame.version))
        if frame.type != codec.BOOT and frame.seq == self._last_rx_seq:
            return
        self._last_rx_seq = frame.seq
        message = codec.decode_message(frame)
        if isinstance(message, codec.HelloReply2):
            self.version = message.protocol
        self.seen.append(message)
        self.messages.put(message)

    def send(self, message: codec.Message) -> None:
        """Send reliably: retransmit on NAK or ACK timeout until ACKed."""
        self.seq = self.seq % 255 + 1
        event = threading.Event()
        with self._lock:
            self._acked = {self.seq: event}
        version = 1 if message.TYPE == codec.HELLO else self.version
        wire = codec.encode_frame(codec.message_frame(self.seq, message), version)
        for _ in range(self.tries):
            self._nak.clear()
            self.port.write(wire)
            deadline = time.monotonic() + self.ack_timeout
            while time.monotonic() < deadline and not event.is_set() and not self._nak.is_set():
                event.wait(0.005)
            if event.is_set():
                return
        raise PeerError(f"expected an ACK for {message!r}, got none after {self.tries} tries")

    def expect(self, match: Callable[[codec.Message], bool], timeout: float = 5.0,
               what: str = "a message") -> codec.Message:
        """The first message not yet taken that matches; others stay for later expects."""
        for i, message in enumerate(self.backlog):
            if match(message):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerError(f"expected {what} within {timeout} s; seen so far {self.seen[-10:]!r}")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if match(message):
                return message
            self.backlog.append(message)

    def expect_type(self, name: str, timeout: float = 5.0) -> Any:
        return self.expect(lambda m: type(m).__name__ == name, timeout, name)

    def hello(self, protocol: int = codec.PROTOCOL_VERSION) -> codec.HelloReply:
        self.version = 1  # a new session starts in v1 frames
        self.send(codec.Hello(protocol))
        reply: codec.HelloReply = self.expect(lambda m: isinstance(m, (codec.HelloReply, codec.HelloReply2)),
                                              what="HelloReply")
        return reply

    def dispense(self, cid: int, column: int, timeout: float = 5.0,
                 attempts: int = 1) -> codec.DispenseResult:
        """DISPENSE and wait for its result; with attempts > 1 the same command id is sent again
        when no result came (the board gives up on a reply after 20 tries: the journal answers)."""
        for attempt in range(attempts):
            self.send(codec.Dispense(cid, column))
            try:
                return self.result(cid, timeout)
            except PeerError:
                if attempt == attempts - 1:
                    raise
        raise PeerError("attempts: expected at least 1")

    def result(self, cid: int, timeout: float = 5.0) -> codec.DispenseResult:
        def match(m: codec.Message) -> bool:
            return isinstance(m, codec.DispenseResult) and m.command_id == cid

        found: codec.DispenseResult = self.expect(match, timeout, f"result of {cid}")
        return found
