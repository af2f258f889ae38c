"""Coil motor driver: an enable pin and a current-sense ADC, given in the constructor."""

from firmware_py.hal import CURRENT_FULL_SCALE_MA


class Motor:
    """One column's coil motor. on()/off() drive the pin; current_ma() reads the sense channel."""

    def __init__(self, pin, adc, full_scale_ma=CURRENT_FULL_SCALE_MA):
        self.pin = pin
        self.adc = adc
        self.full_scale_ma = full_scale_ma
        self.running = False
        pin.value(0)

    def on(self):
        self.pin.value(1)
        self.running = True

    def off(self):
        self.pin.value(0)
        self.running = False

    def current_ma(self):
        return self.adc.read_u16() * self.full_scale_ma // 65535
