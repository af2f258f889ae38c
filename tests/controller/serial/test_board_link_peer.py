"""SerialBoard against a scripted board on a real pty: requests, replies, events, link faults."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.clock import FakeClock
from controller.serial.board_api import (
    BoardError,
    BoardEvent,
    BoardFault,
    BoardInfo,
    BoardRebooted,
    BoardTimeout,
    ButtonPressed,
    DispenseOutcome,
    DoorChanged,
)
from controller.serial.board_link import BoardRefused, ProtocolMismatch, SerialBoard
from controller.serial.port import PortError
from firmware_py import codec
from tests.controller.serial.pty_board import PtyPeer, Script

Events = queue.Queue[BoardEvent]


@pytest.fixture
def events() -> Events:
    return queue.Queue()


@pytest.fixture
def board(peer: PtyPeer, events: Events) -> Iterator[SerialBoard]:
    b = SerialBoard(peer.path, reply_timeout=1.0, request_timeout=5.0)
    b.start(events.put)
    yield b
    b.close()


def held_dispense(
    board: SerialBoard, peer: PtyPeer, command_id: int, column: int
) -> tuple[threading.Thread, list[DispenseOutcome]]:
    """board.dispense() on a thread while the peer holds the coil turning: the thread and, once it is
    joined, its outcome."""
    peer.script.hold_dispense = True
    result: list[DispenseOutcome] = []
    t = threading.Thread(target=lambda: result.append(board.dispense(command_id, column)))
    t.start()
    assert peer.wait_for(lambda: command_id in peer.spins)
    return t, result


def test_start_says_hello_and_returns_board_info(board: SerialBoard, peer: PtyPeer) -> None:
    assert board.info == BoardInfo(codec.PROTOCOL_VERSION, "peer-1.0", "peer-board", 6, 3, "peer-model")
    assert isinstance(peer.received[0], codec.Hello)


def test_requests_get_typed_replies(board: SerialBoard) -> None:
    assert 0 < board.ping() < 1.0
    status = board.status()
    assert status.door_open and status.temperature_c == 21.5
    assert status.faults == frozenset({"jam", "drop_sensor"})
    assert status.motors == (0, 1, 0, 0, 0, 2) and status.sensors == (0, 0, 1, 0, 0, 0)
    outcome = board.dispense(77, 2)
    assert (outcome.command_id, outcome.column, outcome.outcome, outcome.dropped) == (77, 2, "dropped", True)
    assert board.query_result(77).outcome == "dropped"
    assert board.query_result(78).outcome == "unknown_command"
    test = board.motor_test(3)
    assert (test.column, test.outcome, test.current_ma) == (3, "ok", 420)


def test_board_events_arrive_typed_and_once(board: SerialBoard, peer: PtyPeer, events: Events) -> None:
    peer.send_event(codec.Button2(1, 40, 120))  # protocol 2: age 40 ms as it left, held 120 ms
    peer._tx_seq -= 1  # the same frame again: a retransmission after a lost ACK (a press's copy is
    peer.send_event(codec.Button2(1, 140, 120))  # stamped with its age as it leaves: same seq, older)
    peer.send_event(codec.Door(1))
    peer.send_event(codec.Fault(codec.FAULT_JAM, 4, "coil 4 over current"))
    got = [events.get(timeout=2) for _ in range(3)]
    jam = BoardFault("jam", 4, "coil 4 over current")
    assert got == [ButtonPressed("es", index=1, age_s=0.04, hold_ms=120), DoorChanged(True), jam]
    assert events.empty()
    assert board.counters.duplicates == 1
    assert peer.wait_for(lambda: len(peer.acks_seen) >= 4), "every reliable frame, duplicate too, is ACKed"


def test_garbage_and_corrupt_frames_are_counted_and_nakked(
    board: SerialBoard, peer: PtyPeer, events: Events
) -> None:
    good = codec.encode_frame(codec.message_frame(200, codec.Door(0)), peer.version)
    bad = bytearray(good)
    bad[3] ^= 0x40
    peer.send_raw(b"\x00\x13\x37garbage\x00" + bytes(bad) + good)
    assert events.get(timeout=2) == DoorChanged(False)
    assert board.counters.crc_errors == 2
    assert peer.wait_for(lambda: peer.naks_seen == 2)


def test_reply_without_ack_completes_the_request(peer: PtyPeer) -> None:
    with SerialBoard(peer.path) as b:
        b.start()
        peer.script.ack = False
        assert b.dispense(5, 1).dropped
    assert peer.spins[5] == 1


def test_lost_reply_resends_dispense_with_same_command_id_and_never_spins_twice(
    board: SerialBoard, peer: PtyPeer
) -> None:
    board.reply_timeout = 0.3
    peer.script.swallow_replies = 1
    assert board.dispense(9, 1).dropped
    sent = [m for m in peer.received if isinstance(m, codec.Dispense)]
    assert [m.command_id for m in sent] == [9, 9]  # type: ignore[attr-defined]
    assert peer.spins == {9: 1}
    assert board.counters.timeouts >= 1


def test_board_reboot_mid_dispense_resends_hello_then_same_command(
    board: SerialBoard, peer: PtyPeer, events: Events
) -> None:
    t, result = held_dispense(board, peer, 31, 2)
    peer.script.hold_dispense = False
    peer.send_event(codec.Boot(4, "watchdog"))
    t.join(5)
    assert events.get(timeout=2) == BoardRebooted(4, "watchdog")
    after_boot = peer.received[-2:]
    assert isinstance(after_boot[0], codec.Hello) and isinstance(after_boot[1], codec.Dispense)
    assert after_boot[1].command_id == 31  # type: ignore[attr-defined]
    assert result and result[0].dropped
    assert peer.spins == {31: 1}


def test_board_error_reply_is_a_clear_refusal(board: SerialBoard, peer: PtyPeer) -> None:
    peer.script.error_for.add(codec.STATUS_REQ)
    with pytest.raises(BoardRefused, match="StatusRequest: error 2"):
        board.status()


@pytest.mark.parametrize("script", [Script(reply_protocol=7), Script(refuse_version=True)])
def test_other_protocol_version_is_refused(script: Script) -> None:
    with PtyPeer(script) as p, pytest.raises(ProtocolMismatch, match="protocol"):
        SerialBoard(p.path).start()


def test_silent_board_times_out_after_twenty_tries() -> None:
    with PtyPeer(Script(silent=True)) as p:
        b = SerialBoard(p.path, clock=FakeClock())
        with pytest.raises(BoardTimeout, match="expected an ACK .* after 20 tries, the last after 100 ms"):
            b.start(timeout=2.0)
        assert b.counters.timeouts == 20 and b.counters.retransmissions == 19
        assert p.wait_for(lambda: len(p.frames_seen) == 20)
        assert {(f.seq, f.type) for f in p.frames_seen} == {(1, codec.HELLO)}, "retransmitted unchanged"


def test_port_is_opened_exclusively(board: SerialBoard, peer: PtyPeer) -> None:
    with pytest.raises(PortError, match="exclusively"):
        SerialBoard(peer.path).start()


def test_missing_port_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PortError, match="could not open"):
        SerialBoard(str(tmp_path / "no-such-board")).start()


def test_event_handler_cannot_call_back_into_the_link(peer: PtyPeer) -> None:
    errors: queue.Queue[Exception] = queue.Queue()
    b = SerialBoard(peer.path)

    def handler(event: BoardEvent) -> None:
        try:
            b.ping()
        except BoardError as exc:
            errors.put(exc)

    with b:
        b.start(handler)
        peer.send_event(codec.Button2(0, 0, 80))
        assert "hand off to a queue" in str(errors.get(timeout=2))
        assert b.ping() > 0, "a bad handler does not kill the link"


def test_port_that_vanishes_and_returns_is_reopened(tmp_path: Path, events: Events) -> None:
    link = tmp_path / "dispenser"
    first = PtyPeer().__enter__()
    os.symlink(first.path, link)
    b = SerialBoard(str(link), reply_timeout=1.0, request_timeout=10.0)
    try:
        b.start(events.put)
        assert b.dispense(1, 1).dropped
        link.unlink()
        first.__exit__()  # the device is gone: reads fail, the link retries opening the path
        with PtyPeer() as second:
            os.symlink(second.path, link)
            assert b.dispense(2, 1).dropped
            assert isinstance(second.received[0], codec.Hello), "a reopened port starts with HELLO"
        assert b.counters.reopens >= 1
    finally:
        b.close()


def test_late_unknown_command_answer_never_passes_for_a_dispense_outcome(
    board: SerialBoard, peer: PtyPeer
) -> None:
    t, result = held_dispense(board, peer, 44, 1)
    peer.send_event(codec.DispenseResult(44, 0, codec.UNKNOWN_COMMAND))  # a late copy of a query's answer
    peer.release()  # the reader handles frames in order: the late copy first, then the real result
    t.join(5)
    assert result == [DispenseOutcome(44, 1, "dropped")]
    assert board.counters.extra["unmatched_replies"] == 1


def test_good_crc_bad_payload_is_nakked_and_unknown_type_skipped(
    board: SerialBoard, peer: PtyPeer, events: Events
) -> None:
    peer.send_raw(codec.encode_frame(codec.Frame(100, codec.DOOR, b"\x01\x02"), 2))  # noise past the CRC
    assert peer.wait_for(lambda: peer.naks_seen == 1)
    assert 100 not in peer.acks_seen, "not acknowledged: the board must send it again"
    peer.send_raw(codec.encode_frame(codec.Frame(101, 0x7E, b"future"), 2))  # a newer firmware's message
    assert peer.wait_for(lambda: 101 in peer.acks_seen), "acknowledged, so it cannot block the board's queue"
    peer.send_raw(codec.encode_frame(codec.message_frame(100, codec.Door(1)), 2))
    assert events.get(timeout=2) == DoorChanged(True)
    assert board.counters.extra["decode_errors"] == 2 and events.empty()


def test_dispense_timeout_says_the_outcome_is_unknown(peer: PtyPeer) -> None:
    with SerialBoard(peer.path, request_timeout=1.0) as b:
        b.start()
        peer.script.silent = True
        with pytest.raises(BoardTimeout, match="outcome of command_id=8 is unknown"):
            b.dispense(8, 1)


def test_spy_url_dumps_the_traffic(peer: PtyPeer, tmp_path: Path) -> None:
    dump = tmp_path / "traffic.txt"
    with SerialBoard(f"spy://{peer.path}?file={dump}") as b:
        b.start()
        b.ping()
    text = dump.read_text()
    assert "TX" in text and "RX" in text
