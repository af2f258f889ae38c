"""Firmware main loop on dummy pins: dispense outcomes, journal across reboots, refusals, events."""

from __future__ import annotations

from firmware_py import codec
from firmware_py.board import FIRMWARE_VERSION, MOTOR_FAULTY, NO_TEMPERATURE
from tests.firmware.harness import JAM_RAW, Bench, BenchHal, of_type


def booted(**options) -> Bench:
    bench = Bench(**options)
    got = bench.step(3)
    assert of_type(got, codec.Boot) == [codec.Boot(1, "power_on")]
    return bench


def result_of(got, cid):
    results = [m for m in of_type(got, codec.DispenseResult) if m.command_id == cid]
    assert len(results) <= 1, f"expected one result for {cid}, got {results}"
    return results[0] if results else None


def dispense(bench: Bench, cid: int, column: int) -> list[codec.Message]:
    """Send DISPENSE(cid, column) and run until its result comes: what the board sent meanwhile."""
    bench.send(codec.Dispense(cid, column))
    return bench.run_until(lambda g: result_of(g, cid))


def dispense_gets(bench: Bench, cid: int, column: int, outcome: int, coil_starts: int) -> None:
    """DISPENSE(cid, column) gets `outcome`; the column's coil has started `coil_starts` times in all."""
    assert result_of(dispense(bench, cid, column), cid).outcome == outcome
    assert bench.hal.motor_pins[column - 1].starts == coil_starts


def start_spin(bench: Bench, cid: int, column: int) -> None:
    """Send DISPENSE(cid, column) and step until the column's coil turns."""
    bench.send(codec.Dispense(cid, column))
    spin_until_running(bench, column)


def query(bench: Bench, cid: int) -> list[codec.Message]:
    """Send QUERY_RESULT(cid) and run until its result comes: what the board sent meanwhile."""
    bench.send(codec.QueryResult(cid))
    return bench.run_until(lambda g: result_of(g, cid))


def spin_until_running(bench: Bench, column: int) -> None:
    bench.step(2)
    assert bench.hal.motor_pins[column - 1].value() == 1, "expected the coil to turn"


def test_dispense_drops_when_beam_fires_and_journals_before_reply():
    bench = booted()
    start_spin(bench, 100, 2)
    bench.step(5, advance_ms=20)
    bench.hal.drop_pins[1].value(1)
    got = bench.run_until(lambda g: result_of(g, 100))
    assert result_of(got, 100) == codec.DispenseResult(100, 2, codec.DROPPED)
    assert bench.hal.motor_pins[1].value() == 0
    assert bench.board.journal.lookup(100) == (2, 2, codec.DROPPED)


def test_repeated_dispense_returns_stored_result_without_spinning():
    bench = booted()
    start_spin(bench, 7, 1)
    bench.hal.drop_pins[0].value(1)
    bench.run_until(lambda g: result_of(g, 7))
    bench.hal.drop_pins[0].value(0)
    for _ in range(3):
        got = dispense(bench, 7, 1)
        assert result_of(got, 7).outcome == codec.DROPPED
    assert bench.hal.motor_pins[0].starts == 1


def test_reboot_mid_dispense_gives_interrupted_and_never_spins_again():
    bench = booted()
    start_spin(bench, 55, 3)
    bench.step(3, advance_ms=10)
    bench.reboot("watchdog")
    got = bench.step(3)
    assert of_type(got, codec.Boot) == [codec.Boot(2, "watchdog")]
    assert bench.board.interrupted == [55]
    got = dispense(bench, 55, 3)
    assert result_of(got, 55) == codec.DispenseResult(55, 3, codec.INTERRUPTED)
    got = query(bench, 55)
    assert result_of(got, 55).outcome == codec.INTERRUPTED
    bench.step(50, advance_ms=10)
    assert bench.hal.motor_pins[2].starts == 1


def test_result_survives_reboot_after_drop():
    bench = booted()
    start_spin(bench, 9, 1)
    bench.hal.drop_pins[0].value(1)
    bench.run_until(lambda g: result_of(g, 9))
    bench.reboot()
    bench.hal.drop_pins[0].value(0)
    dispense_gets(bench, 9, 1, codec.DROPPED, coil_starts=1)


def test_door_open_refuses_without_spinning_and_is_not_journaled():
    bench = booted()
    bench.hal.door_pin.value(1)
    got = bench.step(2, advance_ms=10)
    assert of_type(got, codec.Door) == [], "a door change is reported once stable (debounce 20 ms)"
    got = bench.step(3, advance_ms=10)
    assert of_type(got, codec.Door) == [codec.Door(1)]
    dispense_gets(bench, 11, 1, codec.DOOR_OPEN, coil_starts=0)
    assert bench.board.journal.lookup(11) is None


def test_door_opening_mid_spin_stops_the_coil():
    bench = booted()
    start_spin(bench, 12, 1)
    bench.hal.door_pin.value(1)
    got = bench.run_until(lambda g: result_of(g, 12))
    assert result_of(got, 12).outcome == codec.DOOR_OPEN
    assert bench.hal.motor_pins[0].value() == 0


def test_jam_stops_coil_reports_fault_and_status():
    bench = booted()
    start_spin(bench, 20, 4)
    bench.hal.current_adcs[3].raw = JAM_RAW
    got = bench.run_until(lambda g: result_of(g, 20) and of_type(g, codec.Fault))
    assert result_of(got, 20).outcome == codec.JAMMED
    fault = of_type(got, codec.Fault)[0]
    assert (fault.code, fault.column) == (codec.FAULT_JAM, 4)
    assert "1800 mA" in fault.detail
    bench.send(codec.StatusRequest())
    status = of_type(bench.run_until(lambda g: of_type(g, codec.Status)), codec.Status)[0]
    assert status.motors[3] == MOTOR_FAULTY
    assert status.faults & (1 << codec.FAULT_JAM)


def test_dead_motor_after_settle_time():
    bench = booted(settle_ms=50)
    bench.hal.current_adcs[0].raw = 0
    start_spin(bench, 21, 1)
    got = bench.step(4, advance_ms=10)
    assert result_of(got, 21) is None, "no verdict before the settle time"
    got = bench.run_until(lambda g: result_of(g, 21), advance_ms=10)
    assert result_of(got, 21).outcome == codec.MOTOR_FAULT
    assert of_type(got, codec.Fault)[0].code == codec.FAULT_MOTOR


def test_no_drop_until_timeout():
    bench = booted(spin_timeout_ms=500)
    start_spin(bench, 22, 2)
    got = bench.step(45, advance_ms=10)
    assert result_of(got, 22) is None
    got = bench.run_until(lambda g: result_of(g, 22), advance_ms=10)
    assert result_of(got, 22).outcome == codec.NO_DROP_DETECTED


def test_beam_blocked_before_spin_refuses_and_reports_sensor_fault():
    bench = booted()
    bench.hal.drop_pins[1].value(1)
    bench.send(codec.Dispense(23, 2))
    got = bench.run_until(lambda g: result_of(g, 23) and of_type(g, codec.Fault))
    assert result_of(got, 23).outcome == codec.NO_DROP_DETECTED
    assert of_type(got, codec.Fault)[0].code == codec.FAULT_DROP_SENSOR
    assert bench.hal.motor_pins[1].starts == 0


def test_empty_switch_gives_empty():
    bench = booted(hal=BenchHal(empty_pins=True))
    bench.hal.empty_pins[0].value(1)
    dispense_gets(bench, 24, 1, codec.EMPTY, coil_starts=0)


def test_bad_column():
    bench = booted()
    got = dispense(bench, 25, 9)
    assert result_of(got, 25) == codec.DispenseResult(25, 9, codec.BAD_COLUMN)


def test_ping_answered_while_coil_turns():
    bench = booted()
    start_spin(bench, 30, 1)
    bench.send(codec.Ping(0xDEADBEEF))
    got = bench.run_until(lambda g: of_type(g, codec.Pong))
    assert of_type(got, codec.Pong) == [codec.Pong(0xDEADBEEF)]
    assert bench.hal.motor_pins[0].value() == 1


def test_query_result_unknown_and_in_progress():
    bench = booted()
    got = query(bench, 999)
    assert result_of(got, 999) == codec.DispenseResult(999, 0, codec.UNKNOWN_COMMAND)
    start_spin(bench, 31, 1)
    bench.send(codec.QueryResult(31))
    got = bench.step(10, advance_ms=1)
    assert result_of(got, 31) is None, "in progress: the answer comes when done"
    bench.hal.drop_pins[0].value(1)
    got = bench.run_until(lambda g: result_of(g, 31))
    assert result_of(got, 31).outcome == codec.DROPPED
    assert bench.hal.motor_pins[0].starts == 1


def test_second_dispense_waits_for_the_first():
    bench = booted()
    bench.send(codec.Dispense(40, 1))
    bench.send(codec.Dispense(41, 2))
    spin_until_running(bench, 1)
    assert bench.hal.motor_pins[1].value() == 0
    bench.hal.drop_pins[0].value(1)
    bench.run_until(lambda g: result_of(g, 40))
    bench.step(2)
    assert bench.hal.motor_pins[1].value() == 1
    bench.hal.drop_pins[1].value(1)
    got = bench.run_until(lambda g: result_of(g, 41))
    assert result_of(got, 41).outcome == codec.DROPPED


def test_motor_test_needs_open_door():
    bench = booted()
    bench.send(codec.MotorTest(2))
    got = bench.run_until(lambda g: of_type(g, codec.MotorTestResult))
    assert of_type(got, codec.MotorTestResult) == [codec.MotorTestResult(2, codec.DOOR_OPEN, 0)]
    bench.hal.door_pin.value(1)
    bench.step(4, advance_ms=10)
    bench.send(codec.MotorTest(2))
    got = bench.run_until(lambda g: of_type(g, codec.MotorTestResult), advance_ms=10)
    assert of_type(got, codec.MotorTestResult) == [codec.MotorTestResult(2, codec.OK, 300)]
    bench.send(codec.MotorTest(7))
    got = bench.run_until(lambda g: of_type(g, codec.MotorTestResult))
    assert of_type(got, codec.MotorTestResult)[0].outcome == codec.BAD_COLUMN


def test_hello_negotiates_the_lower_version():
    """A v1 controller gets a v1 session (v1 reply layout, v1 frames); a v2 or newer one gets v2."""
    bench = booted()
    bench.send(codec.Hello(1))
    got = bench.run_until(lambda g: of_type(g, codec.HelloReply))
    assert of_type(got, codec.HelloReply) == [codec.HelloReply(1, FIRMWARE_VERSION, "bench-1", 4, 1)]
    assert bench.board.link.version == 1
    bench.send(codec.Hello(3))
    got = bench.run_until(lambda g: of_type(g, codec.HelloReply2))
    assert of_type(got, codec.HelloReply2) == [
        codec.HelloReply2(2, FIRMWARE_VERSION, "bench-1", 4, 1, "nalox-board")]
    assert bench.board.link.version == 2
    bench.send(codec.Hello(0))
    got = bench.run_until(lambda g: of_type(g, codec.Error))
    error = of_type(got, codec.Error)[0]
    assert error.code == codec.ERR_VERSION
    assert "board speaks 1..2, controller sent 0" in error.detail


def test_unknown_type_and_bad_payload_get_error():
    bench = booted()
    bench.hal.uart.rx.extend(codec.encode_frame(codec.Frame(5, 0x7E, b"x")))
    got = bench.run_until(lambda g: of_type(g, codec.Error))
    assert of_type(got, codec.Error)[0].code == codec.ERR_UNKNOWN_TYPE
    assert 5 in bench.acks
    bench.hal.uart.rx.extend(codec.encode_frame(codec.Frame(6, codec.DISPENSE, b"\x01")))
    got = bench.run_until(lambda g: of_type(g, codec.Error))
    assert of_type(got, codec.Error)[0].code == codec.ERR_BAD_PAYLOAD
    bench.send(codec.Pong(1))
    got = bench.run_until(lambda g: of_type(g, codec.Error))
    assert of_type(got, codec.Error)[0].code == codec.ERR_UNKNOWN_TYPE


def test_status_reports_door_temperature_and_sensor():
    bench = booted()
    bench.hal.drop_pins[2].value(1)
    bench.hal.door_pin.value(1)
    bench.step(4, advance_ms=10)
    bench.send(codec.StatusRequest())
    status = of_type(bench.run_until(lambda g: of_type(g, codec.Status)), codec.Status)[0]
    assert status.door_open == 1
    assert abs(status.temp_centi - 400) <= 1
    assert list(status.sensors) == [0, 0, 1, 0]
    bench.hal.temp_adc.raw = 0
    bench.send(codec.StatusRequest())
    status = of_type(bench.run_until(lambda g: of_type(g, codec.Status)), codec.Status)[0]
    assert status.temp_centi == NO_TEMPERATURE
    assert status.faults & (1 << codec.FAULT_TEMP_SENSOR)


def test_buttons_send_language_events():
    bench = booted()
    bench.hal.button_pins[1].value(1)
    got = bench.step(2)
    bench.hal.button_pins[1].value(0)
    got += bench.step(2, advance_ms=100)
    bench.hal.button_pins[0].value(1)
    got += bench.step(3, advance_ms=10)
    bench.hal.button_pins[0].value(0)
    got += bench.run_until(lambda g: len(of_type(g, codec.Button)) >= 1)
    # protocol 1 session: the v1 layout, the index only, sent once the press ended
    assert of_type(bench.received, codec.Button) == [codec.Button(1), codec.Button(0)]


def test_v2_button_says_its_hold_and_its_age_at_every_copy():
    """Protocol 2: BUTTON carries how long it was held and its age as each copy leaves the board; a
    press the controller does not acknowledge is resent with a growing age (the port-reopen case)."""
    bench = booted()
    bench.send(codec.Hello(2))
    bench.run_until(lambda g: of_type(g, codec.HelloReply2))
    bench.hal.button_pins[1].value(1)
    bench.step(16, advance_ms=100)  # held 1.6 s (a long press)
    bench.hal.button_pins[1].value(0)
    bench.auto_ack = False  # the controller is away: no ACK
    got = bench.step(300, advance_ms=10)  # 3 s
    copies = of_type(got, codec.Button2)
    assert len(copies) >= 3, copies
    # first read high 100 ms after the pin rose (the bench advances, then steps), first read low 10 ms
    # after it fell: held 1600 - 100 + 10
    assert {(c.index, c.hold_ms) for c in copies} == {(1, 1510)}
    ages = [c.age_ms for c in copies]
    assert ages == sorted(ages) and ages[0] < 100 <= 2000 < ages[-1] <= 3000, ages
    bench.auto_ack = True
    bench.step(20, advance_ms=100)
    bench.step(5, advance_ms=10)
    assert of_type(bench.step(300, advance_ms=10), codec.Button2) == [], "acknowledged: not sent again"


def test_v2_button_age_saturates():
    bench = booted()
    bench.send(codec.Hello(2))
    bench.run_until(lambda g: of_type(g, codec.HelloReply2))
    bench.hal.button_pins[0].value(1)
    bench.step(2, advance_ms=10)
    bench.hal.button_pins[0].value(0)
    bench.auto_ack = False
    bench.step(100, advance_ms=1000)  # 100 s unacknowledged
    bench.auto_ack = True
    last = of_type(bench.step(3, advance_ms=1000), codec.Button2)
    assert last and last[-1].age_ms == codec.AGE_MAX_MS and last[-1].hold_ms == 1010  # low seen at +1020


def test_boot_count_increments_across_reboots():
    bench = booted()
    bench.reboot("power_on")
    assert bench.board.boot_count == 2
    bench.reboot("power_on")
    assert bench.board.boot_count == 3


def test_unknown_option_is_refused():
    try:
        Bench(spin_timeout=5)
    except TypeError as exc:
        assert "spin_timeout" in str(exc)
    else:
        raise AssertionError("expected TypeError for an unknown option")


class FailingStore:
    """Non-volatile storage that starts failing on demand."""

    def __init__(self) -> None:
        from firmware_py.nvs import MemoryStore

        self.inner = MemoryStore()
        self.failing = False

    def get(self, key):
        return self.inner.get(key)

    def put(self, key, value):
        if self.failing:
            raise OSError(28, "no space left on device")
        self.inner.put(key, value)


def test_unwritable_journal_refuses_to_spin():
    store = FailingStore()
    bench = booted(hal=BenchHal(nvs=store))
    store.failing = True
    bench.send(codec.Dispense(60, 1))
    got = bench.run_until(lambda g: of_type(g, codec.Error) and of_type(g, codec.Fault))
    assert of_type(got, codec.Error)[0].code == codec.ERR_NVS
    assert "command 60 refused" in of_type(got, codec.Error)[0].detail
    assert of_type(got, codec.Fault)[0].code == codec.FAULT_NVS
    assert bench.hal.motor_pins[0].starts == 0


def test_failed_final_write_still_reports_and_never_spins_again():
    store = FailingStore()
    bench = booted(hal=BenchHal(nvs=store))
    start_spin(bench, 61, 1)
    store.failing = True
    bench.hal.drop_pins[0].value(1)
    got = bench.run_until(lambda g: result_of(g, 61) and of_type(g, codec.Fault))
    assert result_of(got, 61).outcome == codec.DROPPED
    assert of_type(got, codec.Fault)[0].code == codec.FAULT_NVS
    dispense_gets(bench, 61, 1, codec.DROPPED, coil_starts=1)


def test_boot_with_failing_storage_still_runs_and_reports_it():
    store = FailingStore()
    bench = booted(hal=BenchHal(nvs=store))
    start_spin(bench, 62, 2)
    store.failing = True
    bench.reboot()
    got = bench.run_until(lambda g: of_type(g, codec.Fault))
    assert of_type(got, codec.Fault)[0].code == codec.FAULT_NVS
    assert bench.board.interrupted == [62]
    got = dispense(bench, 62, 2)
    assert result_of(got, 62).outcome == codec.INTERRUPTED
    bench.send(codec.StatusRequest())
    status = of_type(bench.run_until(lambda g: of_type(g, codec.Status)), codec.Status)[0]
    assert status.faults & (1 << codec.FAULT_NVS)
    assert bench.hal.motor_pins[1].starts == 1
