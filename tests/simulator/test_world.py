"""Simulated physics on a scripted clock: kits fall where the firmware looks, one per spin, faults."""

from __future__ import annotations

import pytest

from simulator.hal import JAM_MA, RUN_MA, World


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def world(**faults: float) -> tuple[World, Clock]:
    clock = Clock()
    w = World(columns=2, stock=3, spin_ms=100, seed=1, clock=clock)
    w.on_drop = lambda column: 77
    for name, p in faults.items():
        w.set_fault(name, p)
    return w, clock


def test_kit_falls_at_the_first_look_after_a_full_turn_and_only_one_per_spin():
    w, clock = world()
    w.motor(1, True)
    clock.t += 99
    assert w.read_drop(1) == 0
    clock.t += 1
    assert w.read_drop(1) == 1
    assert w.read_drop(1) == 0
    clock.t += 1000
    assert w.read_drop(1) == 0, "one kit per spin, however long the coil turns"
    w.motor(1, False)
    assert w.truth.dropped == 1 and w.truth.per_command == {77: 1}
    assert w.columns[0].stock == 2


def test_coil_travel_is_kept_between_spins():
    w, clock = world()
    w.motor(2, True)
    clock.t += 60
    assert w.read_drop(2) == 0
    w.motor(2, False)
    clock.t += 500
    w.motor(2, True)
    clock.t += 40
    assert w.read_drop(2) == 1


@pytest.mark.parametrize(
    ("faults", "stock", "ms", "dropped"),
    [({}, 0, 150, 0), ({"miss_drop": 1.0}, None, 100, 1)],
    ids=["empty_column_turns_without_a_drop", "missed_drop_falls_unseen"],
)
def test_a_turn_the_drop_sensor_does_not_see(faults, stock, ms, dropped):
    w, clock = world(**faults)
    if stock is not None:
        w.set_stock(1, stock)
    w.motor(1, True)
    clock.t += ms
    assert w.read_drop(1) == 0
    assert w.truth.dropped == dropped


def test_jam_raises_current_and_stops_travel():
    w, clock = world(jam=1.0)
    w.motor(1, True)
    assert w.current_ma(1) == RUN_MA
    clock.t += 100
    assert w.current_ma(1) == JAM_MA
    assert w.read_drop(1) == 0
    assert w.truth.injected == {"jam": 1}


def test_dead_motor_draws_nothing_and_does_not_turn():
    w, clock = world(dead_motor=1.0)
    w.motor(1, True)
    clock.t += 500
    assert w.current_ma(1) == 0
    assert w.read_drop(1) == 0


def test_stuck_sensor_blocks_the_beam_until_the_door_opens():
    w, clock = world(stuck_sensor=1.0)
    w.motor(1, True)
    clock.t += 100
    assert w.read_drop(1) == 1
    w.motor(1, False)
    assert w.read_drop(1) == 1
    w.set_door(True)
    assert w.read_drop(1) == 0


def test_reboot_during_dispense_is_scheduled_within_the_spin():
    w, clock = world(reboot_during_dispense=1.0)
    w.motor(1, True)
    assert w.reboot_at is not None and 1000 <= w.reboot_at <= 1120
    clock.t = w.reboot_at
    assert w.reboot_due()
    w.reset_outputs()
    assert not w.reboot_due() and not w.columns[0].motor_on


def test_fault_limited_to_one_column():
    w, clock = world()
    w.set_fault("dead_motor", 1.0, column=2)
    w.motor(1, True)
    w.motor(2, True)
    assert w.current_ma(1) == RUN_MA
    assert w.current_ma(2) == 0


def test_button_press_is_one_edge():
    w, _ = world()
    w.press(1)
    w.press(1)
    assert [w.read_button(1) for _ in range(6)] == [1, 0, 1, 0, 0, 0]
    assert w.truth.presses == 2
