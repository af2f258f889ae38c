"""Send a verified firmware bundle to the board over the serial link (PROTOCOL.md, section 9).

    result = update_board(board, bundle, events, force=False)

Refusals come before anything is sent (UpdateRefused): a board that speaks protocol 1, another
board model, a downgrade or the same version (unless forced), the service door closed. Then BEGIN,
every file in acknowledged chunks, COMMIT (the board checks every hash and switches atomically),
and the wait for the board to come back: success when it answers HELLO with the new version;
UpdateFailed when it refused something or came back on the old firmware (rolled back).
"""

from __future__ import annotations

import hashlib
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from controller.diag.firmware_bundle import Bundle, parse_version
from controller.errors import ControllerError
from controller.serial.board_api import BoardError, BoardEvent, BoardRebooted
from controller.serial.board_link import SerialBoard
from firmware_py import codec

log = structlog.get_logger("controller.firmware")
ChunkFilter = Callable[[int, int, bytes], bytes]  # (file index, offset, data) -> data sent


class UpdateRefused(ControllerError):
    """Refused before anything was sent; the board runs what it ran."""


class UpdateFailed(ControllerError):
    """The board refused a step, lost power or rolled back; the message says which and what runs now."""


@dataclass
class UpdateResult:
    old_version: str
    new_version: str
    seconds: float
    chunks: int
    bytes_sent: int  # firmware bytes
    wire_bytes: int = 0  # every byte on the line, both directions, during the transfer
    boot_reasons: list[str] = field(default_factory=list)


def check(board: SerialBoard, bundle: Bundle, force: bool) -> str:
    """The refusals, before anything is sent; returns the running version."""
    info = board.info
    if info is None:
        raise UpdateRefused("firmware update: the board did not say HELLO")
    if info.protocol < 2:
        raise UpdateRefused(f"firmware update refused: the board speaks protocol {info.protocol} (firmware "
                            f"{info.firmware}); updates over the link need protocol 2: flash it at the bench")
    if bundle.model != info.model:
        raise UpdateRefused(f"firmware update refused: the bundle is for board model {bundle.model!r}, "
                            f"this board is {info.model!r}")
    try:
        running = parse_version(info.firmware)
    except ValueError:
        running = (0, 0, 0)
    new = parse_version(bundle.version)
    if new < running and not force:
        raise UpdateRefused(f"firmware update refused: {bundle.version} is older than the running "
                            f"{info.firmware} (a downgrade); use --force to install it anyway")
    if new == running and not force:
        raise UpdateRefused(f"firmware update refused: the board already runs {info.firmware}; "
                            "use --force to install it again")
    if not board.status().door_open:
        raise UpdateRefused("firmware update refused: the service door is closed; updates run only in "
                            "service mode (open the door)")
    return info.firmware


def _ask(board: SerialBoard, msg: codec.Message, what: str) -> int:
    try:
        reply = board.update_request(msg)
    except BoardError as exc:
        raise UpdateFailed(f"firmware update: {what}: {exc}") from exc
    if reply.code != codec.UPD_OK:
        name = codec.UPD_NAMES.get(reply.code, str(reply.code))
        raise UpdateFailed(f"firmware update: the board refused {what}: {name}: {reply.detail}")
    value: int = reply.value
    return value


def send(board: SerialBoard, bundle: Bundle, chunk_filter: ChunkFilter | None = None,
         progress: Callable[[int, int], None] | None = None) -> int:
    """BEGIN, every file in chunks, COMMIT; returns the number of chunks."""
    names = list(bundle.files)
    _ask(board, codec.UpdateBegin(0, bundle.version, bundle.model, len(names)), "the start of the update")
    chunks, sent, total = 0, 0, bundle.size
    for index, name in enumerate(names):
        data = bundle.files[name]
        digest = hashlib.sha256(data).digest()
        _ask(board, codec.UpdateFile(0, index, name, len(data), digest), f"file {name}")
        offset = 0
        while offset < len(data):
            piece = data[offset:offset + codec.UPDATE_CHUNK_MAX]
            wire = chunk_filter(index, offset, piece) if chunk_filter else piece
            expected = _ask(board, codec.UpdateChunk(0, index, offset, wire), f"{name} at offset {offset}")
            if expected != offset + len(piece):
                raise UpdateFailed(f"firmware update: {name}: the board expects offset {expected}, "
                                   f"sent up to {offset + len(piece)}")
            offset += len(piece)
            chunks += 1
            sent += len(piece)
            if progress is not None:
                progress(sent, total)
    _ask(board, codec.UpdateCommit(0), "the switch to the new firmware (hash check)")
    return chunks


def wait_for_new_firmware(board: SerialBoard, events: queue.Queue[BoardEvent], bundle: Bundle,
                          old: str, timeout: float) -> list[str]:
    """The board restarts into the new slot on trial; our HELLO confirms it. Returns the boot reasons."""
    deadline = time.monotonic() + timeout
    reasons: list[str] = []
    while time.monotonic() < deadline:
        try:
            event = events.get(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
        except queue.Empty:
            continue
        if not isinstance(event, BoardRebooted):
            continue
        reasons.append(event.reason)
        try:
            board.ping(timeout=min(10.0, max(0.5, deadline - time.monotonic())))  # HELLO first: confirms
        except BoardError:
            continue  # the new firmware does not answer: its trial runs out and the board rolls back
        info = board.info
        if info is not None and info.firmware == bundle.version and event.reason != "rolled_back":
            return reasons
        if info is not None and event.reason in ("rolled_back", "slot_invalid"):
            raise UpdateFailed(f"firmware update failed: {bundle.version} did not come up; the board rolled "
                               f"back by itself and runs {info.firmware} ({event.reason})")
    raise UpdateFailed(f"firmware update: the board did not come back on {bundle.version} within "
                       f"{timeout:g} s (boots seen: {reasons}); it runs the old {old} or the new firmware "
                       "once its trial ends: check with `nalox diag ping`")


def update_board(board: SerialBoard, bundle: Bundle, events: queue.Queue[BoardEvent], force: bool = False,
                 timeout: float = 90.0, chunk_filter: ChunkFilter | None = None,
                 progress: Callable[[int, int], None] | None = None) -> UpdateResult:
    """`board` started with on_event=events.put; `bundle` already verified (firmware_bundle.verify)."""
    old = check(board, bundle, force)
    started = time.monotonic()
    wire_before = board.wire_bytes()
    log.info("firmware_update_start", old=old, new=bundle.version, model=bundle.model, bytes=bundle.size)
    chunks = send(board, bundle, chunk_filter, progress)
    wire = board.wire_bytes() - wire_before
    reasons = wait_for_new_firmware(board, events, bundle, old, timeout)
    seconds = time.monotonic() - started
    log.info("firmware_update_done", old=old, new=bundle.version, seconds=round(seconds, 2), chunks=chunks)
    return UpdateResult(old, bundle.version, seconds, chunks, bundle.size, wire, reasons)
