"""In-memory serial pair: pyserial semantics, closed ends refuse use, noise in flight."""

from __future__ import annotations

import threading
import time

import pytest
import serial

from simulator.memlink import serial_pair


def test_bytes_cross_in_both_directions():
    a, b = serial_pair()
    assert a.write(b"hello") == 5
    b.timeout = 1
    assert b.in_waiting == 5
    assert b.read(5) == b"hello"
    b.write(b"\x00\x01")
    a.timeout = 1
    assert a.read(2) == b"\x00\x01"


def test_read_returns_what_it_has_at_timeout():
    a, b = serial_pair()
    b.timeout = 0.05
    a.write(b"ab")
    started = time.monotonic()
    assert b.read(10) == b"ab"
    assert time.monotonic() - started >= 0.04
    b.timeout = 0
    assert b.read(1) == b""


def test_closed_end_refuses_use_and_wakes_a_blocked_reader():
    a, b = serial_pair()
    b.timeout = None
    errors: list[Exception] = []
    reader = threading.Thread(target=lambda: _read_into(b, errors))
    reader.start()
    b.close()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], serial.SerialException)
    with pytest.raises(serial.SerialException, match="expected an open port"):
        b.write(b"x")
    assert b.is_open is False
    assert a.write(b"into the void") == 13


def _read_into(port, errors):
    try:
        port.read(1)
    except serial.SerialException as exc:
        errors.append(exc)


def test_reset_input_buffer():
    a, b = serial_pair()
    a.write(b"stale")
    b.reset_input_buffer()
    assert b.in_waiting == 0


def test_noise_corrupts_in_flight_deterministically():
    data = bytes(range(256)) * 20
    received = []
    for _ in range(2):
        a, b = serial_pair(noise=0.05, seed=7)
        a.write(data)
        b.timeout = 0
        received.append(b.read(10**6))
    assert received[0] == received[1]
    assert received[0] != data
    counts = a.noise.counts()
    assert 100 < sum(counts.values()) < 420
