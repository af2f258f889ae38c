"""Temperature sensor driver: a linearised thermistor channel on an ADC.

Scale: raw 0..65535 maps to -40.00 .. +60.00 degrees C. A raw reading of exactly 0 or 65535
means an open or shorted sensor, reported as None.
"""

TEMP_MIN_CENTI = -4000
TEMP_SPAN_CENTI = 10000


def raw_from_centi(centi):
    """Inverse of the scale, for simulated sensors; clamps into the valid range 1..65534."""
    raw = (centi - TEMP_MIN_CENTI) * 65535 // TEMP_SPAN_CENTI
    return max(1, min(65534, raw))


class Thermistor:
    def __init__(self, adc):
        self.adc = adc

    def read_centi(self):
        raw = self.adc.read_u16()
        if raw <= 0 or raw >= 65535:
            return None
        return TEMP_MIN_CENTI + (raw * TEMP_SPAN_CENTI + 32767) // 65535
