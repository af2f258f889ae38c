"""A hardware-free bench for the firmware: dummy pins, a scripted clock, a UART, a controller peer."""

from __future__ import annotations

from firmware_py import codec
from firmware_py.board import Board
from firmware_py.hal import DummyADC, DummyPin
from firmware_py.nvs import MemoryStore

RUN_RAW = 6554  # 300 mA at 3000 mA full scale
JAM_RAW = 39321  # 1800 mA
TEMP_4C = 28835  # about 4.00 C


class RecordingPin(DummyPin):
    """An output pin that remembers every value written."""

    def __init__(self) -> None:
        super().__init__(0)
        self.history: list[int] = []

    def value(self, v=None):
        if v is not None:
            self.history.append(1 if v else 0)
        return super().value(v)

    @property
    def starts(self) -> int:
        return sum(1 for a, b in zip([0, *self.history], self.history, strict=False) if b == 1 and a == 0)


class FakeUart:
    def __init__(self) -> None:
        self.rx = bytearray()
        self.tx = bytearray()

    def read(self, n):
        data = bytes(self.rx[:n])
        del self.rx[:n]
        return data or None

    def write(self, data):
        self.tx.extend(data)
        return len(data)


class BenchHal:
    """The HAL of firmware_py/hal.py with dummy parts and a clock the test advances."""

    def __init__(self, columns: int = 4, nvs: MemoryStore | None = None, empty_pins: bool = False) -> None:
        self.now = 5000
        self.uart = FakeUart()
        self.motor_pins = [RecordingPin() for _ in range(columns)]
        self.current_adcs = [DummyADC(RUN_RAW) for _ in range(columns)]
        self.drop_pins = [DummyPin(0) for _ in range(columns)]
        self.empty_pins = [DummyPin(0) for _ in range(columns)] if empty_pins else None
        self.door_pin = DummyPin(0)
        self.temp_adc = DummyADC(TEMP_4C)
        self.button_pins = [DummyPin(0), DummyPin(0)]
        self.nvs = nvs if nvs is not None else MemoryStore()
        self.board_id = "bench-1"
        self.reset_cause = "power_on"

    def ticks_ms(self) -> int:
        return self.now


class Bench:
    """A board on a bench: the test plays the controller (auto-ACKs the board's frames)."""

    def __init__(self, hal: BenchHal | None = None, **options) -> None:
        self.hal = hal or BenchHal()
        self.options = options
        self.board = Board(self.hal, **options)
        self.deframer = codec.Deframer()
        self.seq = 0
        self.received: list[codec.Message] = []
        self.acks: list[int] = []
        self.naks = 0
        self.auto_ack = True
        self.version = 1  # the frame version this controller sends (HELLO always goes as 1)

    def reboot(self, reason: str = "watchdog") -> None:
        """The board restarts between two steps: outputs reset, non-volatile storage kept."""
        for pin in self.hal.motor_pins:
            pin.value(0)
        self.hal.reset_cause = reason
        self.board = Board(self.hal, **self.options)

    def send(self, message: codec.Message, seq: int | None = None) -> int:
        if seq is None:
            self.seq = self.seq % 255 + 1
            seq = self.seq
        version = 1 if message.TYPE == codec.HELLO else self.version
        self.hal.uart.rx.extend(codec.encode_frame(codec.message_frame(seq, message), version))
        return seq

    def step(self, n: int = 1, advance_ms: int = 0) -> list[codec.Message]:
        """Advance the clock, run the main loop n times, return the messages the board sent."""
        got: list[codec.Message] = []
        for _ in range(n):
            self.hal.now += advance_ms
            self.board.step()
            got += self._drain()
        return got

    def _drain(self) -> list[codec.Message]:
        data = bytes(self.hal.uart.tx)
        self.hal.uart.tx.clear()
        got = []
        for frame in self.deframer.feed(data):
            if frame.type == codec.ACK:
                self.acks.append(frame.seq)
            elif frame.type == codec.NAK:
                self.naks += 1
            else:
                if self.auto_ack:
                    ack = codec.Frame(frame.seq, codec.ACK)
                    self.hal.uart.rx.extend(codec.encode_frame(ack, frame.version))
                message = codec.decode_message(frame)
                if isinstance(message, codec.HelloReply2):
                    self.version = message.protocol
                got.append(message)
        self.received += got
        return got

    def run_until(self, predicate, advance_ms: int = 1, limit: int = 10000) -> list[codec.Message]:
        got: list[codec.Message] = []
        for _ in range(limit):
            got += self.step(advance_ms=advance_ms)
            if predicate(got):
                return got
        raise AssertionError(f"condition not met after {limit} steps; board sent {got!r}")


def of_type(messages, cls):
    return [m for m in messages if isinstance(m, cls)]
