"""SerialBoard: the controller's side of the serial link to the dispenser board
(controller.serial.board_api.Board).

Layers, bottom up (see docs/serial.md and firmware_py/PROTOCOL.md):

    SerialPort (bytes, reopen)  ->  codec.Deframer (frames)  ->  link layer (ACK/NAK, seq, dedup)
        ->  typed messages (firmware_py.codec)  ->  typed board values (controller.serial.board_api)

Threads: one reader thread owns the receive side. It deframes, answers every good reliable frame
with ACK (NAK for a frame that fails decode), drops duplicates by sequence number, wakes the
request that a reply belongs to (matched by type and key: nonce, command_id, column; never by
order) and hands board events to `on_event`. Callers' threads send: stop-and-wait, one
unacknowledged reliable frame at a time (a lock is the queue), retransmitting the same frame on
NAK or after `ack_timeout`, `max_tries` times. Every wait has a deadline on the injected clock.

A DISPENSE is re-sent with the same command_id until its DISPENSE_RESULT arrives or the request
deadline passes; the board's command journal makes that safe (never a second spin). After a board
reboot (BOOT) or a port reopen the next request first says HELLO again, and requests in flight are
re-sent at once (the journal answers INTERRUPTED or the stored result).

Protocol versions (PROTOCOL.md, "Version negotiation"): HELLO always goes in a v1 frame and offers
the highest version this code speaks; a v1 board refuses it with ERR_VERSION and is asked again with
HELLO(1). The session then frames everything (but HELLO) in the version the board answered, and in
a v2 session refuses v1 frames except BOOT (a board starting over) and ACK/NAK. A board reboot or a
port reopen puts the link back to v1 until the next HELLO.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from controller.clock import Clock, RealClock
from controller.serial.board_api import (
    BoardError,
    BoardEvent,
    BoardFault,
    BoardInfo,
    BoardRebooted,
    BoardStatus,
    BoardTimeout,
    ButtonPressed,
    DispenseOutcome,
    DoorChanged,
    LightPattern,
    LightState,
    LinkCounters,
    MotorTestOutcome,
    outcome_name,
)
from controller.serial.port import PortLike, PortLost, SerialPort
from controller.serial.rto import RetransmitTimer, wire_time
from firmware_py import codec

log = structlog.get_logger("controller.serial.board_link")

ReplyKey = tuple[int, int | None]  # (reply message type, nonce / command_id / column or None)
# codec messages (MicroPython-compatible, no annotations) carry their fields as dynamic attributes;
# inside this module they are typed `Any` and converted to controller.serial.board_api dataclasses at once.
Msg = Any

EXTRA_COUNTERS = (
    "naks_received",
    "stale_acks",
    "unmatched_replies",
    "decode_errors",
    "board_errors",
    "boots",
    "hellos",
    "request_resends",
    "reader_errors",
    "version_refused",
)
V1_IN_V2 = (codec.BOOT, codec.ACK, codec.NAK)  # v1 frames a v2 session still takes from the board
LIGHT_CODES = {name: code for code, name in codec.LIGHT_NAMES.items() if code != codec.LIGHT_HOST_SILENT}


class _Resync(Exception):
    """The board rebooted or the port was reopened while a frame waited for its ACK."""


class ProtocolMismatch(BoardError):
    """The board speaks another protocol version than this controller."""


class BoardRefused(BoardError):
    """The board answered a request with ERROR(code, detail)."""

    def __init__(self, request: str, code: int, detail: str) -> None:
        super().__init__(f"board refused {request}: error {code} ({detail})")
        self.code = code
        self.detail = detail


@dataclass(eq=False)
class _Pending:
    """One request waiting for its reply."""

    key: ReplyKey
    name: str
    resend: bool
    event: threading.Event = field(default_factory=threading.Event)
    reply: Msg | None = None
    error: BoardError | None = None
    busy: bool = False
    resync: bool = False  # board rebooted or port reopened: send again

    def settled(self) -> bool:
        return self.reply is not None or self.error is not None


class SerialBoard:
    """The dispenser board behind a serial port, a pyserial URL, or an open pyserial-like object."""

    def __init__(
        self,
        url_or_port: str | PortLike,
        clock: Clock | None = None,
        baudrate: int = 115200,
        ack_timeout: float = 0.1,
        reply_timeout: float = 10.0,
        max_tries: int = 20,
        request_timeout: float = 30.0,
    ) -> None:
        self._clock: Clock = clock or RealClock()
        if isinstance(url_or_port, str):
            self._port = SerialPort.for_url(url_or_port, baudrate)
        else:
            self._port = SerialPort.for_object(url_or_port)
        self.ack_timeout = ack_timeout
        self.baudrate = baudrate
        # the ACK wait adapts to the measured round trip (RFC 6298, Karn's rule), never below the
        # frame's and its ACK's wire time at `baudrate`, never above `ack_timeout`
        self.rto = RetransmitTimer(floor=min(ack_timeout, wire_time(16, baudrate)), ceiling=ack_timeout)
        self.reply_timeout = reply_timeout
        self.max_tries = max_tries
        self.request_timeout = request_timeout
        self.counters = LinkCounters(extra={name: 0 for name in EXTRA_COUNTERS})
        self.info: BoardInfo | None = None
        self._on_event: Callable[[BoardEvent], None] | None = None
        self._count_lock = threading.Lock()
        self._tx_lock = threading.Lock()  # stop-and-wait: one outstanding reliable frame
        self._ack_lock = threading.Lock()
        self._ack_event = threading.Event()
        self._ack_state = ""
        self._outstanding_seq = 0
        self._outstanding: _Pending | None = None
        self._last_sent: _Pending | None = None
        self._tx_seq = 0
        self._version = 1  # frames sent (and accepted) in this session; 1 until HELLO says otherwise
        self._wire = [0, 0]  # bytes written, bytes read
        self._token = itertools.count(random.randrange(1, 2**31))
        self._pending_lock = threading.Lock()
        self._pending: dict[ReplyKey, list[_Pending]] = {}
        self._session_lock = threading.Lock()
        self._need_hello = True
        self._generation = 0  # bumped on every board reboot or port reopen
        self._deframer = codec.Deframer()
        self._seen_errors = 0
        self._seen_resyncs = 0
        self._rx_last: int | None = None
        self._last_boot: int | None = None
        self._nonce = itertools.count(random.randrange(1, 2**31))
        self._stopping = threading.Event()
        self._reader: threading.Thread | None = None

    @classmethod
    def from_port(cls, port: PortLike, **kwargs: object) -> SerialBoard:
        """A SerialBoard over an already-open pyserial-like object (e.g. simulator.memlink)."""
        return cls(port, **kwargs)  # type: ignore[arg-type]

    @property
    def port_name(self) -> str:
        return self._port.name

    def __enter__(self) -> SerialBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ Board interface

    def start(self, on_event: Callable[[BoardEvent], None] | None = None, timeout: float = 3.0) -> BoardInfo:
        """Open the port, start the reader, say HELLO. On failure everything is closed again."""
        self._on_event = on_event
        self._port.open()
        name = f"board-link {self.port_name}"
        self._reader = threading.Thread(target=self._read_loop, name=name, daemon=True)
        self._reader.start()
        try:
            return self._ensure_session(self._clock.monotonic() + timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._stopping.set()
        self._port.close()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5.0)
        with self._pending_lock:
            waiting = [p for group in self._pending.values() for p in group]
        for pending in waiting:
            why = f"link to {self.port_name} closed while waiting for {pending.name}"
            self._settle(pending, error=BoardError(why))

    def ping(self, timeout: float = 1.0) -> float:
        started = self._clock.monotonic()
        nonce = next(self._nonce) & 0xFFFFFFFF
        self._request(codec.Ping(nonce), (codec.PONG, nonce), started + timeout)
        return self._clock.monotonic() - started

    def status(self) -> BoardStatus:
        return _board_status(self._request(codec.StatusRequest(), (codec.STATUS, None), self._deadline()))

    def dispense(self, command_id: int, column: int) -> DispenseOutcome:
        """Spin `column` once under `command_id`; re-sent with the same id until the result comes.
        BoardTimeout means the outcome is unknown: ask again with the same command_id."""
        try:
            reply = self._request(
                codec.Dispense(command_id, column), (codec.DISPENSE_RESULT, command_id), self._deadline()
            )
        except BoardTimeout as exc:
            raise BoardTimeout(f"{exc}; the outcome of command_id={command_id} is unknown: ask again with "
                               f"query_result or dispense with the same command_id") from exc
        return self._outcome(reply, column)

    def query_result(self, command_id: int) -> DispenseOutcome:
        key = (codec.DISPENSE_RESULT, command_id)
        return self._outcome(self._request(codec.QueryResult(command_id), key, self._deadline()), 0)

    def light(self, pattern: LightPattern) -> LightState:
        """Set the board's status light: "lit" (ready), "blinking" (busy) or "off" (protocol 2)."""
        if pattern not in LIGHT_CODES:
            raise BoardError(f"light: expected one of {sorted(LIGHT_CODES)}, got {pattern!r}")
        self._need_protocol(2, "the status light")
        reply = self._request(codec.Light(LIGHT_CODES[pattern]), (codec.LIGHT_STATE, None), self._deadline())
        return LightState(codec.LIGHT_NAMES.get(reply.requested, f"unknown_{reply.requested}"),
                          codec.LIGHT_NAMES.get(reply.shown, f"unknown_{reply.shown}"))

    def update_request(self, msg: codec.Message, timeout: float | None = None) -> Msg:
        """One firmware-update request (UpdateBegin/File/Chunk/Commit without its token: set here);
        returns the board's UpdateReply. Re-sent until answered: the board's receiver is idempotent."""
        self._need_protocol(2, "a firmware update")
        token = next(self._token) & 0xFFFFFFFF
        setattr(msg, "token", token)  # noqa: B010 - codec messages carry dynamic fields
        deadline = self._clock.monotonic() + (self.request_timeout if timeout is None else timeout)
        return self._request(msg, (codec.UPDATE_REPLY, token), deadline)

    def _need_protocol(self, version: int, what: str) -> None:
        info = self._ensure_session(self._deadline())
        if info.protocol < version:
            raise ProtocolMismatch(f"{what} needs protocol {version}; the board on {self.port_name} speaks "
                                   f"{info.protocol} (firmware {info.firmware})")

    def motor_test(self, column: int) -> MotorTestOutcome:
        """Not re-sent after the board took it (it turns a coil and is not journaled)."""
        reply = self._request(
            codec.MotorTest(column), (codec.MOTOR_TEST_RESULT, column), self._deadline(), resend=False
        )
        return MotorTestOutcome(reply.column, outcome_name(reply.outcome), reply.current_ma)

    # ------------------------------------------------------------ requests

    def _deadline(self) -> float:
        return self._clock.monotonic() + self.request_timeout

    def _outcome(self, reply: Msg, column: int) -> DispenseOutcome:
        if column and reply.column != column:
            log.warning("dispense_column_mismatch", command_id=reply.command_id, asked=column,
                        journaled=reply.column)
        return DispenseOutcome(reply.command_id, reply.column, outcome_name(reply.outcome))

    def _ensure_session(self, deadline: float) -> BoardInfo:
        with self._session_lock:
            if not self._need_hello and self.info is not None:
                return self.info
            self._need_hello = False
            try:
                self.info = self._hello(deadline)
            except BaseException:
                self._need_hello = True
                raise
            return self.info

    def _hello(self, deadline: float) -> BoardInfo:
        """Offer our highest protocol; a v1 board refuses it (ERR_VERSION) and is asked for 1."""
        self._count("hellos")
        self._version = 1
        offers = sorted(codec.PROTOCOL_VERSIONS, reverse=True)
        index, stale = 0, 0
        while True:
            offer = offers[index]
            try:
                reply = self._request(codec.Hello(offer), (codec.HELLO_REPLY, None), deadline, hello=True)
                break
            except BoardRefused as exc:
                if exc.code != codec.ERR_VERSION:
                    raise
                if not exc.detail.endswith(f"sent {offer}") and stale < 3:
                    stale += 1  # the answer to an earlier HELLO (re-sent after the board's BOOT): ask again
                    continue
                if index == len(offers) - 1:
                    raise ProtocolMismatch(
                        f"board on {self.port_name} refused protocols {offers}: {exc.detail}") from exc
                log.info("board_protocol_fallback", port=self.port_name, offered=offer, detail=exc.detail)
                index += 1
        if not 1 <= reply.protocol <= offer:
            raise ProtocolMismatch(
                f"board on {self.port_name}: expected protocol 1..{offer}, got {reply.protocol}")
        self._version = reply.protocol
        info = BoardInfo(reply.protocol, reply.firmware, reply.board_id, reply.columns, reply.boot_count,
                         getattr(reply, "model", ""))
        log.info("board_session", port=self.port_name, board_id=info.board_id, firmware=info.firmware,
                 columns=info.columns, boot_count=info.boot_count, protocol=info.protocol, model=info.model)
        return info

    def _request(
        self, msg: codec.Message, key: ReplyKey, deadline: float, resend: bool = True, hello: bool = False
    ) -> Msg:
        """Send `msg` and wait for the reply with `key` until `deadline` (clock.monotonic())."""
        if threading.current_thread() is self._reader:
            raise BoardError("board request from the link's reader thread: on_event must hand off to a queue")
        if self._stopping.is_set():
            raise BoardError(f"link to {self.port_name} is closed")
        pending = _Pending(key, type(msg).__name__, resend)
        self._register(pending)
        try:
            return self._exchange(msg, pending, deadline, hello)
        finally:
            self._unregister(pending)

    def _exchange(self, msg: codec.Message, pending: _Pending, deadline: float, hello: bool) -> Msg:
        first = True
        while True:
            if not first:
                self._check_deadline(pending, deadline)
                self._count("request_resends")
            first = False
            if not hello:
                self._ensure_session(deadline)
            pending.resync = pending.busy = False
            pending.event.clear()
            try:
                self._send_reliable(msg, pending, deadline)
            except BoardTimeout:
                if not pending.resend or self._clock.monotonic() >= deadline:
                    raise
                continue
            except _Resync:
                pending.resync = True
                if not pending.resend:
                    raise self._not_resent(pending) from None
                continue
            if self._await_reply(pending, deadline):
                return self._result(pending)
            if not pending.resend:
                raise self._not_resent(pending)
            if pending.busy:
                self._clock.wait(self._stopping, min(0.2, max(0.0, deadline - self._clock.monotonic())))

    def _check_deadline(self, pending: _Pending, deadline: float) -> None:
        if self._stopping.is_set():
            raise BoardError(f"link to {self.port_name} closed while waiting for {pending.name}")
        if self._clock.monotonic() >= deadline:
            raise BoardTimeout(
                f"{pending.name} {_key_text(pending.key)}: expected a reply from the board on "
                f"{self.port_name} before the deadline, got none"
            )

    def _not_resent(self, pending: _Pending) -> BoardError:
        if pending.resync:
            return BoardError(f"{pending.name} {_key_text(pending.key)}: the board rebooted or the link "
                              f"dropped before it answered; not re-sent (not idempotent)")
        return BoardTimeout(f"{pending.name} {_key_text(pending.key)}: expected a reply within "
                            f"{self.reply_timeout:g} s, got none")

    def _result(self, pending: _Pending) -> Msg:
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        return pending.reply

    def _await_reply(self, pending: _Pending, deadline: float) -> bool:
        """True when a reply or an error came; False to re-send (resync, busy, reply timeout)."""
        until = min(deadline, self._clock.monotonic() + self.reply_timeout)
        while not pending.settled():
            if pending.resync or pending.busy or self._stopping.is_set():
                return False
            remaining = until - self._clock.monotonic()
            if remaining <= 0:
                self._count("timeouts")
                log.warning("board_reply_timeout", request=pending.name, key=_key_text(pending.key))
                return False
            self._clock.wait(pending.event, remaining)
        return True

    # ------------------------------------------------------------ link layer: sending

    def _next_seq(self) -> int:
        self._tx_seq = self._tx_seq % 255 + 1
        return self._tx_seq

    def _send_reliable(self, msg: codec.Message, pending: _Pending, deadline: float) -> None:
        """Stop-and-wait: send one frame until it is ACKed (or answered); BoardTimeout after max_tries."""
        with self._tx_lock:
            seq = self._next_seq()
            version = 1 if msg.TYPE == codec.HELLO else self._version
            wire = codec.encode_frame(codec.message_frame(seq, msg), version)
            try:
                self._send_until_acked(wire, seq, pending, deadline)
            finally:
                with self._ack_lock:
                    self._outstanding_seq = 0
                    self._outstanding = None

    def _send_until_acked(self, wire: bytes, seq: int, pending: _Pending, deadline: float) -> None:
        generation = self._generation
        ack_len = len(codec.encode_frame(codec.Frame(seq, codec.ACK), self._version))
        floor = wire_time(len(wire) + ack_len, self.baudrate)
        timeout = self.rto.timeout_at(floor)
        for attempt in range(self.max_tries):
            if self._stopping.is_set():
                raise BoardError(f"link to {self.port_name} is closed")
            if self._generation != generation:
                raise _Resync()
            with self._ack_lock:
                self._outstanding_seq, self._outstanding = seq, pending
                self._ack_state = ""
                self._ack_event.clear()
            if attempt:
                self._count("retransmissions")
            timeout = self.rto.timeout_at(floor)
            if not self._write(wire):
                self._clock.wait(self._stopping, self.ack_timeout)
                continue
            self._last_sent = pending
            sent = self._clock.monotonic()
            self._clock.wait(self._ack_event, timeout)
            if self._ack_state == "ack":  # Karn: only a frame sent once is timed
                if attempt == 0:
                    self.rto.sample(self._clock.monotonic() - sent)
                else:
                    self.rto.ambiguous()
            if self._ack_state in ("ack", "replied") or pending.settled():
                return
            if self._ack_state != "nak":
                self._count("timeouts")
                self.rto.expired()
            if attempt and self._clock.monotonic() >= deadline:
                break
        raise BoardTimeout(
            f"{pending.name} seq {seq}: expected an ACK from the board on {self.port_name}, got none after "
            f"{attempt + 1} tries, the last after {timeout * 1000:.3g} ms"
        )

    def wire_bytes(self) -> int:
        """Bytes on the line so far, both directions (for timing a transfer at a given baud rate)."""
        return self._wire[0] + self._wire[1]

    def _write(self, wire: bytes) -> bool:
        try:
            self._port.write(wire)
        except PortLost:
            return False
        self._wire[0] += len(wire)
        self._count("frames_sent")
        return True

    def _send_bare(self, frame_type: int, seq: int, version: int | None = None) -> None:
        wire = codec.encode_frame(codec.Frame(seq, frame_type), version or self._version)
        if self._write(wire) and frame_type == codec.NAK:
            self._count("naks_sent")

    # ------------------------------------------------------------ link layer: receiving (reader thread)

    def _read_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self._port.read()
            except PortLost:
                if self._stopping.is_set() or not self._reopen():
                    break
                continue
            if data:
                self._on_bytes_safely(data)
        log.debug("board_reader_stopped", port=self.port_name)

    def _reopen(self) -> bool:
        if not self._port.reopen(self._stopping.wait):  # real time: a device coming back
            if not self._stopping.is_set():
                log.error("board_link_down", port=self.port_name, reason="port lost and cannot be reopened")
            return False
        self._count("reopens")
        self._deframer = codec.Deframer()
        self._seen_errors = self._seen_resyncs = 0
        self._resync_all("port_reopened")
        return True

    def _on_bytes_safely(self, data: bytes) -> None:
        try:
            self._on_bytes(data)
        except Exception:  # the reader must outlive any bug in one frame's handling
            self._count("reader_errors")
            log.exception("board_link_reader_error", port=self.port_name)

    def _on_bytes(self, data: bytes) -> None:
        self._wire[1] += len(data)
        frames = self._deframer.feed(data)
        self._note_deframer_errors()
        for frame in frames:
            self._count("frames_received")
            self._on_frame(frame)

    def _note_deframer_errors(self) -> None:
        errors = self._deframer.errors - self._seen_errors
        resyncs = self._deframer.resyncs - self._seen_resyncs
        self._seen_errors, self._seen_resyncs = self._deframer.errors, self._deframer.resyncs
        if resyncs:
            self._count("resyncs", resyncs)
        for _ in range(errors):
            self._count("crc_errors")
            self._send_bare(codec.NAK, 0)

    def _on_frame(self, frame: codec.Frame) -> None:
        if frame.version < self._version and frame.type not in V1_IN_V2:
            self._count("version_refused")  # a v1 frame inside a v2 session
            self._send_bare(codec.NAK, 0)
            return
        if frame.type == codec.ACK:
            self._on_ack(frame.seq)
        elif frame.type == codec.NAK:
            self._count("naks_received")
            self._wake_sender("nak")
        else:
            self._on_reliable(frame)

    def _on_ack(self, seq: int) -> None:
        if not self._wake_sender("ack", seq=seq):
            self._count("stale_acks")

    def _wake_sender(self, state: str, only: _Pending | None = None, seq: int | None = None) -> bool:
        with self._ack_lock:
            if self._outstanding_seq == 0 or (only is not None and self._outstanding is not only):
                return False
            if seq is not None and seq != self._outstanding_seq:
                return False
            if self._ack_state not in ("ack", "replied"):
                self._ack_state = state
            self._ack_event.set()
            return True

    def _on_reliable(self, frame: codec.Frame) -> None:
        try:
            msg = codec.decode_message(frame)
        except codec.CodecError as exc:
            self._undecodable(frame, exc)
            return
        self._send_bare(codec.ACK, frame.seq, frame.version)
        if self._is_duplicate(frame.seq, msg):
            self._count("duplicates")
            return
        self._accept_seq(frame.seq)
        self._dispatch(msg)

    def _undecodable(self, frame: codec.Frame, exc: codec.CodecError) -> None:
        """Good CRC, bad payload. A known type: most likely line noise that slipped past the CRC
        (about 1 in 65536 corrupted frames), so NAK and let the board send it again. An unknown
        type (newer firmware): ACK and skip it, so it cannot block the board's event queue."""
        self._count("decode_errors")
        log.warning("board_message_undecodable", type=frame.type, seq=frame.seq, error=str(exc))
        if frame.type in codec.MESSAGES[frame.version or 1]:
            self._send_bare(codec.NAK, 0)
            return
        self._send_bare(codec.ACK, frame.seq, frame.version)
        self._accept_seq(frame.seq)

    def _is_duplicate(self, seq: int, msg: Msg) -> bool:
        if msg.TYPE == codec.BOOT:
            return seq == self._rx_last and msg.boot_count == self._last_boot
        return seq == self._rx_last

    def _accept_seq(self, seq: int) -> None:
        self._rx_last = seq

    def _dispatch(self, msg: Msg) -> None:
        if msg.TYPE == codec.BOOT:
            self._on_boot(msg)
        elif msg.TYPE == codec.ERROR:
            self._on_error(msg)
        elif msg.TYPE in (codec.BUTTON, codec.DOOR, codec.FAULT):
            self._emit(_board_event(msg))
        else:
            self._on_reply(msg)

    def _on_boot(self, msg: Msg) -> None:
        self._last_boot = msg.boot_count
        self._count("boots")
        log.warning("board_rebooted", port=self.port_name, boot_count=msg.boot_count, reason=msg.reason)
        self._resync_all("board_rebooted")
        self._emit(BoardRebooted(msg.boot_count, msg.reason))

    def _resync_all(self, why: str) -> None:
        """Next request says HELLO first; requests in flight are sent again."""
        self._need_hello = True
        self._version = 1  # the board speaks v1 until the next HELLO
        self._generation += 1
        with self._pending_lock:
            waiting = [p for group in self._pending.values() for p in group]
        for pending in waiting:
            pending.resync = True
            pending.event.set()
        self._wake_sender("resync")
        if waiting:
            log.info("board_requests_resent", why=why, requests=[p.name for p in waiting])

    def _on_error(self, msg: Msg) -> None:
        self._count("board_errors")
        pending = self._last_sent
        log.warning("board_error", code=msg.code, detail=msg.detail, request=pending and pending.name)
        if pending is None or pending.settled():
            return
        if msg.code == codec.ERR_VERSION and pending.name != "Hello":
            return  # only a HELLO is ever refused for its version: a late answer to an earlier one
        if msg.code == codec.ERR_BUSY and pending.resend:
            pending.busy = True
            pending.event.set()
            return
        self._settle(pending, error=BoardRefused(pending.name, msg.code, msg.detail))

    def _on_reply(self, msg: Msg) -> None:
        key = _reply_key(msg)
        with self._pending_lock:
            waiting = [p for p in self._pending.get(key, ()) if _answers(p, msg)]
        if not waiting:
            self._count("unmatched_replies")
            log.debug("board_reply_unmatched", message=repr(msg))
            return
        for pending in waiting:
            self._settle(pending, reply=msg)

    def _settle(self, pending: _Pending, reply: Msg | None = None, error: BoardError | None = None) -> None:
        if reply is not None:
            pending.reply = reply
        elif pending.reply is None:
            pending.error = error
        pending.event.set()
        self._wake_sender("replied", only=pending)

    def _emit(self, event: BoardEvent) -> None:
        handler = self._on_event
        if handler is None:
            log.debug("board_event_dropped", board_event=repr(event), reason="no on_event handler")
            return
        try:
            handler(event)
        except Exception:  # a bad handler must not kill the link
            log.exception("board_event_handler_failed", board_event=repr(event))

    # ------------------------------------------------------------ bookkeeping

    def _register(self, pending: _Pending) -> None:
        with self._pending_lock:
            self._pending.setdefault(pending.key, []).append(pending)

    def _unregister(self, pending: _Pending) -> None:
        with self._pending_lock:
            group = self._pending.get(pending.key, [])
            if pending in group:
                group.remove(pending)
            if not group:
                self._pending.pop(pending.key, None)

    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            if name in self.counters.extra:
                self.counters.extra[name] += n
            else:
                setattr(self.counters, name, getattr(self.counters, name) + n)


def _reply_key(msg: Msg) -> ReplyKey:
    field_name = _KEY_FIELDS.get(msg.TYPE)
    return (msg.TYPE, None if field_name is None else getattr(msg, field_name))


_KEY_FIELDS = {codec.PONG: "nonce", codec.DISPENSE_RESULT: "command_id", codec.MOTOR_TEST_RESULT: "column",
               codec.UPDATE_REPLY: "token"}


def _answers(pending: _Pending, msg: Msg) -> bool:
    """A DISPENSE is never answered `unknown_command` (only a QUERY_RESULT is): such a reply is a late
    copy of an earlier query's answer and must not pass for the outcome of a dispense."""
    return not (pending.name == "Dispense" and msg.TYPE == codec.DISPENSE_RESULT
                and msg.outcome == codec.UNKNOWN_COMMAND)


def _key_text(key: ReplyKey) -> str:
    return "" if key[1] is None else f"{_KEY_FIELDS.get(key[0], 'key')}={key[1]}"


def _board_event(msg: Msg) -> BoardEvent:
    if msg.TYPE == codec.BUTTON:
        index = msg.index  # protocol 2: a button number; protocol 1 read it as LANGUAGES[index]
        language = codec.LANGUAGES[index] if index < len(codec.LANGUAGES) else codec.LANGUAGES[0]
        fields = msg.fields()
        if "age_ms" in fields:  # protocol 2 (codec.Button2): the press's age as this copy left the board
            age_s = fields["age_ms"] / 1000.0
            return ButtonPressed(language, index=index, age_s=age_s, hold_ms=fields["hold_ms"])
        return ButtonPressed(language, index=index)
    if msg.TYPE == codec.DOOR:
        return DoorChanged(bool(msg.open))
    return BoardFault(codec.FAULT_NAMES.get(msg.code, f"fault_{msg.code}"), msg.column, msg.detail)


def _board_status(msg: Msg) -> BoardStatus:
    faults = frozenset(name for bit, name in codec.FAULT_NAMES.items() if msg.faults & (1 << bit))
    return BoardStatus(
        door_open=bool(msg.door_open),
        temperature_c=msg.temp_centi / 100.0,
        faults=faults,
        motors=tuple(msg.motors),
        sensors=tuple(msg.sensors),
    )
