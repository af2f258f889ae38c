"""Dispenser board main loop: Board(hal).step() reads the link, runs the dispense state machine, polls inputs.

step() never blocks: a dispense is a state machine driven by ticks_ms, so pings and status
requests are answered while a coil turns. See PROTOCOL.md for the messages and their rules.
"""

try:
    import struct
except ImportError:  # pragma: no cover
    import ustruct as struct  # type: ignore[no-redef]

from firmware_py import bootsel, codec
from firmware_py.buttons import Buttons
from firmware_py.door import DoorSwitch
from firmware_py.dropsensor import DropSensor
from firmware_py.hal import ticks_diff
from firmware_py.journal import DONE, STARTED, Journal
from firmware_py.light import StatusLight
from firmware_py.link import Link
from firmware_py.motor import Motor
from firmware_py.temp import Thermistor
from firmware_py.update import Receiver

FIRMWARE_VERSION = "0.2.0"  # of this code; a board running an updated slot reports the slot's manifest
DEFAULT_MODEL = "nalox-board"
NO_TEMPERATURE = 0x7FFF  # STATUS temp_centi when the sensor is open or shorted
MOTOR_IDLE, MOTOR_RUNNING, MOTOR_FAULTY = 0, 1, 2
SENSOR_CLEAR, SENSOR_BLOCKED, SENSOR_FAULTY = 0, 1, 2

DEFAULTS = {
    "spin_timeout_ms": 3000,  # longest a coil may turn looking for a drop (one revolution and a half)
    "settle_ms": 100,  # after this long a running motor must draw at least dead_ma
    "test_ms": 250,  # how long a motor test turns the coil
    "jam_ma": 1200,  # current at or above this means the coil is jammed
    "dead_ma": 50,  # current below this after settle_ms means the motor is dead or disconnected
    "ack_timeout_ms": 100,
    "journal_size": 512,
    "button_debounce_ms": 50,
    "door_debounce_ms": 20,
    "pending_max": 4,  # DISPENSE commands queued behind the running one before ERROR(BUSY)
    "host_silent_ms": 10000,  # no good frame from the controller this long: the light says so
}


class Job:
    """One coil action: a dispense (journaled) or a motor test (not journaled)."""

    def __init__(self, kind, column, command_id=0):
        self.kind = kind  # "dispense" | "test"
        self.column = column
        self.command_id = command_id
        self.started = None
        self.peak_ma = 0


class Board:
    def __init__(self, hal, **options):
        self.hal = hal
        self.opt = dict(DEFAULTS)
        for key in options:
            if key not in DEFAULTS:
                raise TypeError("Board: unknown option %r, expected one of %r" % (key, sorted(DEFAULTS)))
        self.opt.update(options)
        self.columns = len(hal.motor_pins)
        self.motors = [Motor(p, a) for p, a in zip(hal.motor_pins, hal.current_adcs)]  # noqa: B905
        self.drops = [DropSensor(p) for p in hal.drop_pins]
        self.empties = hal.empty_pins
        self.door = DoorSwitch(hal.door_pin, self.opt["door_debounce_ms"])
        self.thermistor = Thermistor(hal.temp_adc)
        self.buttons = Buttons(hal.button_pins, self.opt["button_debounce_ms"])
        self.link = Link(hal.uart, self.opt["ack_timeout_ms"])
        self.model = getattr(hal, "board_model", DEFAULT_MODEL)
        self.light = StatusLight(getattr(hal, "light_pin", None), self.opt["host_silent_ms"])
        self.updater = Receiver(hal.nvs, self.model)
        self.restart_pending = False
        self.started_at = hal.ticks_ms()
        self.motor_fault = [0] * self.columns  # per column: 0 ok, else the fault code
        self.sensor_fault = [False] * self.columns
        self.job = None
        self.pending = []
        self.nvs_error = None
        self.boot_count = self._count_boot()
        self.journal = Journal(hal.nvs, self.opt["journal_size"])
        self.firmware = bootsel.version_of(hal.nvs, bootsel.read(hal.nvs)[0], FIRMWARE_VERSION)
        self.interrupted = self._recover()
        self.link.send(codec.Boot(self.boot_count, hal.reset_cause), persistent=True)
        if self.nvs_error is not None:
            self._fault(codec.FAULT_NVS, 0, "storage write failed at boot: %s" % self.nvs_error)

    def _count_boot(self):
        raw = self.hal.nvs.get("boot")
        count = (struct.unpack(">H", raw)[0] + 1) & 0xFFFF if raw and len(raw) == 2 else 1
        try:
            self.hal.nvs.put("boot", struct.pack(">H", count))
        except OSError as exc:
            self.nvs_error = exc
        return count

    def _recover(self):
        """STARTED entries become INTERRUPTED (in memory even when the write fails)."""
        started = sorted(cid for cid, e in self.journal.entries.items() if e[2] == STARTED)
        try:
            self.journal.recover()
        except OSError as exc:
            self.nvs_error = exc
        return started

    # ------------------------------------------------------------ main loop

    def step(self):
        now = self.hal.ticks_ms()
        for message, error, frame in self.link.poll(now):
            if message is None:
                self._bad_request(frame, error)
            else:
                self._handle(message, now)
        self._run_job(now)
        self._poll_inputs(now)
        self.link.service(now)
        heard = self.link.last_rx_at if self.link.last_rx_at is not None else self.started_at
        self.light.update(now, ticks_diff(now, heard))
        if self.restart_pending and self.link.idle():
            self.restart_pending = False
            reset = getattr(self.hal, "reset", None)
            if reset is not None:
                reset()  # into the new slot, on trial (bootsel.choose)

    def busy(self):
        """True while a coil turns, a command waits, the link has queued frames or a reply waits for
        its ACK: step again soon. (The reply's retransmission timer adapts to the round trip, a few
        ms on a quiet line: a loop that slept its idle wait would fire it tens of ms late.) An event
        backed off while the controller is away does not count."""
        out = self.link.out
        waiting = out is not None and not out[4]
        queued = bool(self.pending) or bool(self.link.queue)
        return self.job is not None or queued or self.restart_pending or waiting

    def _bad_request(self, frame, error):
        known = codec.MESSAGES[self.link.version]
        code = codec.ERR_UNKNOWN_TYPE if frame.type not in known else codec.ERR_BAD_PAYLOAD
        self.link.send(codec.Error(code, error[:120]))

    # ------------------------------------------------------------ requests

    def _handle(self, msg, now):
        handler = self.HANDLERS.get(msg.TYPE)
        if handler is None:
            detail = "board does not accept %s" % msg.__class__.__name__
            self.link.send(codec.Error(codec.ERR_UNKNOWN_TYPE, detail))
            return
        handler(self, msg, now)

    def _on_hello(self, msg, now):
        """Version negotiation: the controller says the highest protocol it speaks; the session runs at
        the lower of its and ours. A firmware on trial is confirmed here (bootsel)."""
        if msg.protocol < 1:
            detail = "protocol: board speaks 1..%d, controller sent %d" % (
                codec.PROTOCOL_VERSION, msg.protocol)
            self.link.send(codec.Error(codec.ERR_VERSION, detail))
            return
        version = min(msg.protocol, codec.PROTOCOL_VERSION)
        self.link.set_version(version, now)
        if version >= 2:
            self.link.send(codec.HelloReply2(version, self.firmware, self.hal.board_id, self.columns,
                                             self.boot_count, self.model))
        else:
            self.link.send(codec.HelloReply(version, self.firmware, self.hal.board_id, self.columns,
                                            self.boot_count))
        try:
            bootsel.confirm(self.hal.nvs)
        except OSError as exc:
            self.nvs_error = exc

    def _on_light(self, msg, now):
        if msg.pattern in (codec.LIGHT_OFF, codec.LIGHT_LIT, codec.LIGHT_BLINK):
            self.light.requested = msg.pattern
        heard = self.link.last_rx_at if self.link.last_rx_at is not None else self.started_at
        shown = self.light.update(now, ticks_diff(now, heard))
        self.link.send(codec.LightState(self.light.requested, shown))

    def _update_reply(self, token, answer):
        code, value, detail = answer
        self.link.send(codec.UpdateReply(token, code, value, detail[:120]))

    def _on_update_begin(self, msg, now):
        self._update_reply(msg.token, self.updater.begin(msg, self.door.open))

    def _on_update_file(self, msg, now):
        self._update_reply(msg.token, self.updater.file(msg))

    def _on_update_chunk(self, msg, now):
        self._update_reply(msg.token, self.updater.chunk(msg))

    def _on_update_commit(self, msg, now):
        answer = self.updater.commit(msg)
        self._update_reply(msg.token, answer)
        if answer[0] == codec.UPD_OK:
            self.restart_pending = True

    def _on_ping(self, msg, now):
        self.link.send(codec.Pong(msg.nonce))

    def _on_status(self, msg, now):
        self.link.send(self.status())

    def _on_dispense(self, msg, now):
        cid = msg.command_id
        entry = self.journal.lookup(cid)
        if entry is not None and entry[1] == DONE:
            self.link.send(codec.DispenseResult(cid, entry[0], entry[2]))
            return
        if self._in_progress(cid):
            return  # the result frame is sent when the coil stops
        if self.job is None:
            self._start_dispense(Job("dispense", msg.column, cid), now)
        elif len(self.pending) < self.opt["pending_max"]:
            self.pending.append(Job("dispense", msg.column, cid))
        else:
            self.link.send(codec.Error(codec.ERR_BUSY, "command %d refused: %d commands waiting" % (
                cid, len(self.pending))))

    def _on_query(self, msg, now):
        cid = msg.command_id
        entry = self.journal.lookup(cid)
        if entry is not None and entry[1] == DONE:
            self.link.send(codec.DispenseResult(cid, entry[0], entry[2]))
        elif not self._in_progress(cid):
            self.link.send(codec.DispenseResult(cid, 0, codec.UNKNOWN_COMMAND))

    def _on_motor_test(self, msg, now):
        col = msg.column
        if not 1 <= col <= self.columns:
            self.link.send(codec.MotorTestResult(col, codec.BAD_COLUMN, 0))
        elif not self.door.open:
            self.link.send(codec.MotorTestResult(col, codec.DOOR_OPEN, 0))  # refused: service mode required
        elif self.job is not None:
            self.link.send(codec.Error(codec.ERR_BUSY, "motor test refused: a coil is turning"))
        else:
            self._start_job(Job("test", col), now)

    HANDLERS = {
        codec.HELLO: _on_hello,
        codec.PING: _on_ping,
        codec.STATUS_REQ: _on_status,
        codec.DISPENSE: _on_dispense,
        codec.QUERY_RESULT: _on_query,
        codec.MOTOR_TEST: _on_motor_test,
        codec.LIGHT: _on_light,
        codec.UPDATE_BEGIN: _on_update_begin,
        codec.UPDATE_FILE: _on_update_file,
        codec.UPDATE_CHUNK: _on_update_chunk,
        codec.UPDATE_COMMIT: _on_update_commit,
    }

    def _in_progress(self, cid):
        if self.job is not None and self.job.kind == "dispense" and self.job.command_id == cid:
            return True
        for job in self.pending:
            if job.command_id == cid:
                return True
        return False

    # ------------------------------------------------------------ dispense state machine

    def _start_dispense(self, job, now):
        """Refusals that never turn the coil are answered at once and not journaled."""
        col = job.column
        refusal = None
        if not 1 <= col <= self.columns:
            refusal = codec.BAD_COLUMN
        elif self.door.open:
            refusal = codec.DOOR_OPEN
        elif self.empties is not None and self.empties[col - 1].value() == 1:
            refusal = codec.EMPTY
        elif self.drops[col - 1].blocked():
            self.sensor_fault[col - 1] = True
            self._fault(codec.FAULT_DROP_SENSOR, col, "drop beam blocked before the coil turned")
            refusal = codec.NO_DROP_DETECTED
        if refusal is not None:
            self.link.send(codec.DispenseResult(job.command_id, col, refusal))
            return
        self.sensor_fault[col - 1] = False
        try:
            self.journal.begin(job.command_id, col)
        except OSError as exc:
            self.nvs_error = exc
            self._fault(codec.FAULT_NVS, col, "journal write failed: %s" % exc)
            detail = "command %d refused: journal write failed" % job.command_id
            self.link.send(codec.Error(codec.ERR_NVS, detail))
            return
        self._start_job(job, now)

    def _start_job(self, job, now):
        job.started = now
        self.job = job
        self.drops[job.column - 1].arm()
        self.motors[job.column - 1].on()

    def _run_job(self, now):
        job = self.job
        if job is None:
            if self.pending:
                self._start_dispense(self.pending.pop(0), now)
            return
        outcome = self._check_job(job, now)
        if outcome is not None:
            self._finish(job, outcome)

    def _check_job(self, job, now):
        """One look at the turning coil; returns an outcome when the job is over, else None."""
        elapsed = ticks_diff(now, job.started)
        col = job.column
        if job.kind == "test":
            return self._check_test(job, elapsed)
        if self.drops[col - 1].fired():
            return codec.DROPPED
        if elapsed >= self.opt["spin_timeout_ms"]:
            return codec.NO_DROP_DETECTED
        if self.hal.door_pin.value() == 1:
            return codec.DOOR_OPEN
        return self._check_current(job, elapsed)

    def _check_current(self, job, elapsed):
        current = self.motors[job.column - 1].current_ma()
        job.peak_ma = max(job.peak_ma, current)
        if current >= self.opt["jam_ma"]:
            return codec.JAMMED
        if elapsed >= self.opt["settle_ms"] and current < self.opt["dead_ma"]:
            return codec.MOTOR_FAULT
        return None

    def _check_test(self, job, elapsed):
        outcome = self._check_current(job, elapsed)
        if outcome is None and elapsed >= self.opt["test_ms"]:
            return codec.OK
        return outcome

    def _finish(self, job, outcome):
        """Stop the coil and, in this same step, journal and report the outcome."""
        col = job.column
        self.motors[col - 1].off()
        self.job = None
        if outcome in (codec.JAMMED, codec.MOTOR_FAULT):
            self.motor_fault[col - 1] = outcome
            code = codec.FAULT_JAM if outcome == codec.JAMMED else codec.FAULT_MOTOR
            self._fault(code, col, "%s at %d mA" % (codec.OUTCOME_NAMES[outcome], job.peak_ma))
        elif outcome in (codec.DROPPED, codec.OK):
            self.motor_fault[col - 1] = 0
        if job.kind == "test":
            self.link.send(codec.MotorTestResult(col, outcome, min(job.peak_ma, 0xFFFF)))
            return
        try:
            self.journal.finish(job.command_id, outcome)
        except OSError as exc:
            self.nvs_error = exc
            self._fault(codec.FAULT_NVS, col, "journal write failed: %s" % exc)
        self.link.send(codec.DispenseResult(job.command_id, col, outcome))

    def _fault(self, code, column, detail):
        self.link.send(codec.Fault(code, column, detail), persistent=True)

    # ------------------------------------------------------------ inputs and status

    def _poll_inputs(self, now):
        door = self.door.poll(now)
        if door is not None:
            self.link.send(codec.Door(1 if door else 0), persistent=True)
        for index, hold_ms, released_at in self.buttons.poll(now):
            self.link.send(codec.ButtonEvent(index, hold_ms, released_at), persistent=True)

    def status(self):
        motors = bytearray()
        sensors = bytearray()
        for i in range(self.columns):
            running = self.job is not None and self.job.column == i + 1
            motors.append(MOTOR_RUNNING if running else (MOTOR_FAULTY if self.motor_fault[i] else MOTOR_IDLE))
            if self.sensor_fault[i]:
                sensors.append(SENSOR_FAULTY)
            elif running:
                sensors.append(SENSOR_BLOCKED if self.drops[i].last else SENSOR_CLEAR)
            else:
                sensors.append(SENSOR_BLOCKED if self.drops[i].blocked() else SENSOR_CLEAR)
        temp = self.thermistor.read_centi()
        return codec.Status(1 if self.door.open else 0, NO_TEMPERATURE if temp is None else temp,
                            self._fault_bits(temp), bytes(motors), bytes(sensors))

    def _fault_bits(self, temp):
        bits = 0
        if codec.JAMMED in self.motor_fault:
            bits |= 1 << codec.FAULT_JAM
        if codec.MOTOR_FAULT in self.motor_fault:
            bits |= 1 << codec.FAULT_MOTOR
        if True in self.sensor_fault:
            bits |= 1 << codec.FAULT_DROP_SENSOR
        if temp is None:
            bits |= 1 << codec.FAULT_TEMP_SENSOR
        if self.nvs_error is not None:
            bits |= 1 << codec.FAULT_NVS
        return bits
