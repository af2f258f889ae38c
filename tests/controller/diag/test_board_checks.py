"""Board diagnostics against the real firmware on a simulated board behind the real serial link:
each check passes on a healthy board and fails, with the right message and exit code, when the
matching fault is injected (door open, hot cabinet, jam, dead motor, stuck drop sensor, no drop)."""

from __future__ import annotations

import threading

from controller.diag.board_checks import _ping_result
from controller.diag.result import EXIT_CODES, Check, exit_code
from controller.diag.run import run_check
from tests.controller.diag.conftest import SimRig


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def assert_fails(checks: list[Check], name: str, family: str, *words: str) -> Check:
    check = by_name(checks)[name]
    assert check.status == "fail", check
    text = f"{check.summary} {check.expected} {check.found} {check.action}".lower()
    for word in words:
        assert word.lower() in text, f"expected {word!r} in {text!r}"
    assert check.expected and check.found and check.action  # says what was expected, found and what to do
    assert exit_code(checks) == EXIT_CODES[family]
    return check


def test_ping_reports_round_trips_and_counters(rig: SimRig) -> None:
    [check] = run_check(rig.ctx, "ping", {"count": 15})
    assert check.status in ("pass", "warn"), check  # warn: one slow answer on a busy test machine
    data = check.data
    assert data["lost"] == 0 and 0 < data["p50_ms"] <= data["p99_ms"] <= data["max_ms"]
    assert check.data["counters"]["crc_errors"] == 0 and check.data["counters"]["frames_received"] >= 15


def test_ping_verdicts() -> None:
    counters = {"crc_errors": 0}
    fast = [0.5] * 19
    assert _ping_result(fast + [0.6], 0, 20, 100.0, counters, {}).status == "pass"
    assert _ping_result(fast + [250.0], 0, 20, 100.0, counters, {}).status == "warn"  # one hiccup
    slow = _ping_result([150.0] * 20, 0, 20, 100.0, counters, {})
    assert slow.status == "fail" and slow.found == "p50 150.0 ms"
    lost = _ping_result(fast, 1, 20, 100.0, counters, {})
    assert lost.status == "fail" and lost.found == "1 lost"
    none = _ping_result([], 20, 20, 100.0, counters, {})
    assert none.status == "fail" and none.summary == "0 of 20 pings answered"
    noisy = _ping_result(fast + [0.5], 0, 20, 100.0, counters, {"crc_errors": 3})
    assert noisy.status == "warn" and "crc_errors" in (noisy.found or "")


def test_healthy_sensors_pass(rig: SimRig) -> None:
    checks = run_check(rig.ctx, "sensors", {})
    statuses = {c.name: c.status for c in checks}
    assert statuses.pop("sensors.button") == "skipped"
    assert set(statuses.values()) == {"pass"}, checks
    assert {"sensors.column1", "sensors.column2", "sensors.column3"} <= set(statuses)
    assert exit_code(checks) == 0


def test_door_open_fails_sensors(rig: SimRig) -> None:
    rig.set_door(True)
    assert_fails(run_check(rig.ctx, "sensors", {}), "sensors.door", "sensors", "door open", "close")


def test_hot_cabinet_fails_sensors(rig: SimRig) -> None:
    rig.sim.set_temperature(46.0)
    check = assert_fails(run_check(rig.ctx, "sensors", {}), "sensors.temperature", "sensors", "46", "0..40")
    assert check.data["celsius"] > 45


def test_warm_cabinet_warns_only(rig: SimRig) -> None:
    rig.sim.set_temperature(30.0)
    check = by_name(run_check(rig.ctx, "sensors", {}))["sensors.temperature"]
    assert check.status == "warn" and "storage range" in check.summary


def test_live_button_test(rig: SimRig) -> None:
    presser = threading.Timer(0.2, rig.sim.press, kwargs={"lang": "es"})
    presser.start()
    try:
        check = by_name(run_check(rig.ctx, "sensors", {"button": 10.0}))["sensors.button"]
    finally:
        presser.join()
    assert check.status == "pass" and check.data["language"] == "es"


def test_button_test_without_a_press_fails(rig: SimRig) -> None:
    checks = run_check(rig.ctx, "sensors", {"button": 0.3})
    assert_fails(checks, "sensors.button", "sensors", "no button press")


def test_motor_test_passes_on_a_free_coil(rig: SimRig) -> None:
    rig.set_door(True)
    [check] = run_check(rig.ctx, "motor-test", {"column": 2})
    assert check.status == "pass" and "turns freely" in check.summary and check.data["current_ma"] > 0


def test_motor_test_needs_the_door_open(rig: SimRig) -> None:
    assert_fails(run_check(rig.ctx, "motor-test", {"column": 1}), "motor.column1", "motor", "door closed")


def test_motor_test_finds_a_dead_motor(rig: SimRig) -> None:
    rig.set_door(True)
    rig.sim.set_fault("dead_motor", 1.0, column=3)
    assert_fails(run_check(rig.ctx, "motor-test", {"column": 3}), "motor.column3", "motor", "dead motor",
                 "motor plug")


def test_unknown_column_is_named(rig: SimRig) -> None:
    rig.set_door(True)
    assert_fails(run_check(rig.ctx, "motor-test", {"column": 9}), "motor.column9", "motor", "no column 9")


def test_jam_during_a_vend_shows_in_sensors_and_drop_test(rig: SimRig) -> None:
    rig.sim.set_fault("jam", 1.0, column=2)
    checks = run_check(rig.ctx, "drop-test", {"columns": [2]})
    assert_fails(checks, "drop.column2", "drop", "jam")
    sensors = run_check(rig.ctx, "sensors", {})
    assert_fails(sensors, "sensors.column2", "sensors", "motor fault", "jammed kit")
    assert by_name(sensors)["sensors.faults"].found == "jam"


def test_drop_test_sees_each_kit(rig: SimRig) -> None:
    checks = run_check(rig.ctx, "drop-test", {})
    assert [c.status for c in checks] == ["pass"] * 3, checks
    assert "put it back" in checks[0].summary
    assert rig.sim.stats()["per_column"] == {"1": 1, "2": 1, "3": 1}


def test_drop_test_refused_with_the_door_open(rig: SimRig) -> None:
    rig.set_door(True)
    assert_fails(run_check(rig.ctx, "drop-test", {}), "drop", "drop", "door open", "close the door")
    assert rig.sim.stats()["dropped"] == 0


def test_drop_test_finds_a_blind_drop_sensor(rig: SimRig) -> None:
    rig.sim.set_fault("miss_drop", 1.0, column=1)
    checks = run_check(rig.ctx, "drop-test", {"columns": [1]})
    assert_fails(checks, "drop.column1", "drop", "no_drop_detected", "drop sensor")


def test_stuck_drop_sensor_shows_in_sensors(rig: SimRig) -> None:
    rig.sim.set_fault("stuck_sensor", 1.0, column=1)
    run_check(rig.ctx, "drop-test", {"columns": [1]})  # the beam sticks when the coil stops
    check = assert_fails(run_check(rig.ctx, "sensors", {}), "sensors.column1", "sensors", "drop sensor")
    assert check.data["drop_sensor"] in ("blocked", "fault")
    again = by_name(run_check(rig.ctx, "drop-test", {"columns": [1]}))["drop.column1"]
    assert again.status == "fail"  # the firmware refuses to vend through a blocked beam


def test_report_covers_everything_and_passes_when_healthy(rig: SimRig) -> None:
    checks = run_check(rig.ctx, "report", {})
    names = [c.name for c in checks]
    assert names[0] == "ping" and "sensors.door" in names and "disk" in names
    assert by_name(checks)["motor"].status == "skipped"  # door closed: no motor tests in a vending unit
    for name in ("broker", "ledger", "video"):
        assert by_name(checks)[name].summary.startswith("no config"), by_name(checks)[name]
    assert exit_code(checks) == 0, [c for c in checks if c.status == "fail"]


def test_report_with_the_door_open_runs_motor_tests(rig: SimRig) -> None:
    rig.set_door(True)
    rig.sim.set_fault("dead_motor", 1.0, column=2)
    checks = by_name(run_check(rig.ctx, "report", {}))
    assert checks["motor.column1"].status == "pass" and checks["motor.column2"].status == "fail"
    assert checks["sensors.door"].status == "fail"
