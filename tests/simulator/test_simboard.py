"""SimulatedBoard in a thread on an in-memory link: ground truth, operator actions, faults, reboot."""

from __future__ import annotations

import time

import pytest

from firmware_py import codec
from firmware_py.board import FIRMWARE_VERSION
from simulator.board import SimulatedBoard, SimulatorError, parse_faults
from simulator.memlink import serial_pair
from tests.simulator.mini_controller import Peer


def test_hello_reply_identifies_the_board(rig):
    board, peer = rig
    reply = peer.hello()
    assert reply == codec.HelloReply2(2, FIRMWARE_VERSION, "sim-0001", 4, 1, "nalox-sim")
    assert peer.hello(protocol=1) == codec.HelloReply(1, FIRMWARE_VERSION, "sim-0001", 4, 1)


def test_dispense_is_a_physical_drop_and_a_repeat_is_not(rig):
    board, peer = rig
    assert peer.dispense(1001, 2).outcome == codec.DROPPED
    assert peer.dispense(1001, 2).outcome == codec.DROPPED
    stats = board.stats()
    assert stats["dropped"] == 1
    assert stats["per_command"] == {"1001": 1}
    assert stats["per_column"] == {"1": 0, "2": 1, "3": 0, "4": 0}
    assert stats["stock"]["2"] == 4
    assert stats["double_drops"] == []


def test_empty_column_gives_no_drop_detected(rig):
    board, peer = rig
    board.set_stock(3, 0)
    assert peer.dispense(5, 3).outcome == codec.NO_DROP_DETECTED
    assert board.stats()["dropped"] == 0


def test_press_and_door_become_events(rig):
    board, peer = rig
    board.press("es")
    press = peer.expect_type("Button2")  # protocol 2: index, age as it left the board, hold
    assert press.index == 1 and press.age_ms < 1000 and press.hold_ms < 1000
    board.set_door(True)
    assert peer.expect_type("Door") == codec.Door(1)
    assert peer.dispense(6, 1).outcome == codec.DOOR_OPEN
    board.set_door(False)
    assert peer.expect_type("Door") == codec.Door(0)
    assert board.stats()["presses"] == 1


def test_temperature_reaches_status(rig):
    board, peer = rig
    board.set_temperature(30.5)
    peer.send(codec.StatusRequest())
    status = peer.expect_type("Status")
    assert abs(status.temp_centi - 3050) <= 35  # drift is at most 0.3 C


def test_reboot_sends_boot_and_keeps_the_journal(rig):
    board, peer = rig
    assert peer.dispense(7, 1).outcome == codec.DROPPED
    board.reboot()
    assert peer.expect_type("Boot") == codec.Boot(2, "sim_reboot")
    assert peer.dispense(7, 1).outcome == codec.DROPPED
    stats = board.stats()
    assert stats["boots"] == 2 and stats["per_command"] == {"7": 1}
    assert stats["link"]["frames_sent"] == 5, "both boots: BOOT, HELLO_REPLY, result; BOOT, result"


def test_jam_fault_on_one_column(rig):
    board, peer = rig
    board.set_fault("jam", 1.0, column=2)
    assert peer.dispense(8, 2).outcome == codec.JAMMED
    fault = peer.expect_type("Fault")
    assert (fault.code, fault.column) == (codec.FAULT_JAM, 2)
    assert peer.dispense(9, 1).outcome == codec.DROPPED
    assert board.stats()["faults"] == {"jam": 1}


def test_dead_motor_fault(rig):
    board, peer = rig
    board.set_fault("dead_motor", 1.0)
    assert peer.dispense(10, 1).outcome == codec.MOTOR_FAULT
    board.set_fault("dead_motor", 0)
    assert peer.dispense(11, 1).outcome == codec.DROPPED


def test_missed_drop_is_counted_in_the_truth(rig):
    board, peer = rig
    board.set_fault("miss_drop", 1.0)
    assert peer.dispense(12, 1).outcome == codec.NO_DROP_DETECTED
    assert board.stats()["per_command"] == {"12": 1}


def test_stuck_sensor_refuses_next_dispense_until_door_opens(rig):
    board, peer = rig
    board.set_fault("stuck_sensor", 1.0, column=1)
    assert peer.dispense(13, 1).outcome == codec.DROPPED
    assert peer.dispense(14, 1).outcome == codec.NO_DROP_DETECTED
    assert peer.expect_type("Fault").code == codec.FAULT_DROP_SENSOR
    board.set_fault("stuck_sensor", 0)
    assert peer.dispense(15, 1).outcome == codec.DROPPED
    assert board.stats()["per_command"] == {"13": 1, "15": 1}


def test_reboot_during_dispense_agrees_with_the_truth(rig):
    board, peer = rig
    board.set_fault("reboot_during_dispense", 1.0)
    peer.send(codec.Dispense(16, 1))
    assert peer.expect_type("Boot").reason == "watchdog"
    board.set_fault("reboot_during_dispense", 0)
    result = peer.dispense(16, 1)
    fell = board.stats()["per_command"].get("16", 0)
    assert (result.outcome, fell) in ((codec.DROPPED, 1), (codec.INTERRUPTED, 0))


def test_slow_replies(rig):
    board, peer = rig
    board.set_fault("slow", 150)
    peer.ack_timeout = 1.0
    started = time.monotonic()
    peer.send(codec.Ping(99))
    assert peer.expect_type("Pong") == codec.Pong(99)
    assert time.monotonic() - started >= 0.15


def test_noise_corrupts_the_board_side_of_the_line(rig):
    board, peer = rig
    board.set_fault("noise", 0.05)
    for cid in range(100, 110):
        assert peer.dispense(cid, 1 + cid % 4, timeout=10).outcome == codec.DROPPED
    link = board.stats()["link"]
    assert link["noise_flipped"] + link["noise_dropped"] + link["noise_inserted"] > 0
    assert link["naks_sent"] + link["retransmissions"] > 0
    assert board.stats()["double_drops"] == []


def test_bad_construction_is_refused_clearly():
    with pytest.raises(SimulatorError, match="columns: expected 1..32, got 0"):
        SimulatedBoard(columns=0)
    with pytest.raises(SimulatorError, match="stock: expected a count >= 0, got -1"):
        SimulatedBoard(stock=-1)
    with pytest.raises(SimulatorError, match="spin_ms: expected a time > 0, got 0"):
        SimulatedBoard(spin_ms=0)


def test_bad_requests_are_refused_clearly():
    board = SimulatedBoard(columns=2)
    with pytest.raises(SimulatorError, match="expected one of jam"):
        board.set_fault("gremlins", 0.5)
    with pytest.raises(SimulatorError, match="expected 1..2, got 3"):
        board.set_stock(3, 1)
    with pytest.raises(SimulatorError, match="expected a language"):
        board.press("fr")
    with pytest.raises(SimulatorError, match="probability 0..1, got 2"):
        board.set_fault("jam", 2)
    with pytest.raises(SimulatorError, match="expected NAME=P"):
        parse_faults("jam")


def test_parse_faults():
    assert parse_faults("jam=0.05, miss_drop=0.02@3,slow=200") == [
        ("jam", 0.05, None), ("miss_drop", 0.02, 3), ("slow", 200.0, None)]


def test_state_survives_a_new_process_with_the_same_nvs(tmp_path):
    nvs = str(tmp_path / "nvs")
    for expected_boot in (1, 2):
        controller_end, board_end = serial_pair()
        board = SimulatedBoard(columns=2, spin_ms=5, nvs_path=nvs)
        board.attach(board_end)
        peer = Peer(controller_end)
        board.start()
        try:
            assert peer.expect_type("Boot").boot_count == expected_boot
            assert peer.dispense(77, 1).outcome == codec.DROPPED
        finally:
            board.stop()
            peer.close()
        assert board.stats()["dropped"] == (1 if expected_boot == 1 else 0)


def test_motor_test_meets_a_jam_and_a_dead_motor(rig):
    board, peer = rig
    peer.send(codec.MotorTest(1))
    assert peer.expect_type("MotorTestResult") == codec.MotorTestResult(1, codec.DOOR_OPEN, 0)
    board.set_door(True)
    peer.expect_type("Door")
    peer.send(codec.MotorTest(1))
    assert peer.expect_type("MotorTestResult") == codec.MotorTestResult(1, codec.OK, 300)
    board.set_fault("jam", 1.0)
    for _ in range(5):
        peer.send(codec.MotorTest(2))
        assert peer.expect_type("MotorTestResult").outcome == codec.JAMMED
    board.set_fault("jam", 0)
    board.set_fault("dead_motor", 1.0, column=3)
    peer.send(codec.MotorTest(3))
    assert peer.expect_type("MotorTestResult") == codec.MotorTestResult(3, codec.MOTOR_FAULT, 0)
    assert board.stats()["dropped"] == 0, "a motor test never pushes a kit out"


def test_a_firmware_crash_restarts_the_board_like_a_watchdog(rig):
    board, peer = rig
    assert board.fw is not None
    real_step = board.fw.step

    def crash_once() -> None:
        board.fw.step = real_step  # type: ignore[method-assign]
        raise ZeroDivisionError("firmware bug")

    board.fw.step = crash_once  # type: ignore[method-assign]
    assert peer.expect(lambda m: m == codec.Boot(2, "watchdog"), what="BOOT after the crash")
    assert peer.dispense(90, 1).outcome == codec.DROPPED
