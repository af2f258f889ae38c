"""Drivers on dummy pins: debounce, edges, scales."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware_py.buttons import Buttons
from firmware_py.door import DoorSwitch
from firmware_py.dropsensor import DropSensor
from firmware_py.hal import DummyADC, DummyPin
from firmware_py.motor import Motor
from firmware_py.temp import Thermistor, raw_from_centi


def test_door_reports_a_change_once_it_is_stable():
    pin = DummyPin(0)
    door = DoorSwitch(pin, debounce_ms=20)
    pin.value(1)
    assert door.poll(0) is None
    pin.value(0)  # bounce
    assert door.poll(5) is None
    pin.value(1)
    assert door.poll(10) is None
    assert door.poll(29) is None
    assert door.poll(30) is True
    assert door.poll(100) is None, "reported once"


def test_button_bounce_is_one_press():
    pins = [DummyPin(0), DummyPin(0)]
    buttons = Buttons(pins, debounce_ms=50)
    presses = []
    for t, value in ((0, 1), (2, 0), (4, 1), (6, 0), (60, 1), (70, 0), (100, 0), (119, 0), (120, 0)):
        pins[1].value(value)
        presses += buttons.poll(t)
    # a press ends once the pin stayed low debounce_ms: held 0..6, then 60..70
    assert presses == [(1, 6, 6), (1, 10, 70)]


def test_button_held_is_one_long_press_and_a_stuck_one_reports_once():
    pins = [DummyPin(1)]
    buttons = Buttons(pins, debounce_ms=50)
    assert buttons.poll(0) == []
    assert buttons.poll(1500) == []
    pins[0].value(0)
    assert buttons.poll(1600) == []
    assert buttons.poll(1650) == [(0, 1600, 1600)]
    pins[0].value(1)
    assert buttons.poll(2000) == []
    assert buttons.poll(2000 + 0xFFFF) == [(0, 0xFFFF, 2000 + 0xFFFF)]
    pins[0].value(0)
    buttons.poll(2000 + 0x10000)
    assert buttons.poll(2000 + 0x20000) == [], "a stuck button is reported once"


def test_drop_sensor_fires_once_per_edge():
    pin = DummyPin(0)
    sensor = DropSensor(pin)
    sensor.arm()
    assert not sensor.fired()
    pin.value(1)
    assert sensor.fired()
    assert not sensor.fired(), "a beam that stays blocked is not a second drop"


def test_drop_sensor_armed_while_blocked_does_not_fire():
    pin = DummyPin(1)
    sensor = DropSensor(pin)
    sensor.arm()
    assert not sensor.fired()


def test_motor_drives_pin_and_scales_current():
    pin, adc = DummyPin(1), DummyADC(65535)
    motor = Motor(pin, adc)
    assert pin.value() == 0, "the constructor stops the motor"
    motor.on()
    assert pin.value() == 1 and motor.running
    assert motor.current_ma() == 3000
    motor.off()
    assert pin.value() == 0 and not motor.running


@given(st.integers(-3999, 5999))
def test_temperature_scale_roundtrip(centi):
    assert abs(Thermistor(DummyADC(raw_from_centi(centi))).read_centi() - centi) <= 1


def test_open_or_shorted_thermistor_reads_none():
    assert Thermistor(DummyADC(0)).read_centi() is None
    assert Thermistor(DummyADC(65535)).read_centi() is None
