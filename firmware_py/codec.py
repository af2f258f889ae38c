"""Serial frame codec shared by firmware, simulator and controller (MicroPython-compatible).

One definition of the wire format; see PROTOCOL.md for the byte-level diagram.

    on the wire:   COBS( body ) 0x00
    body v1:       | 01 | seq:1 | type:1 | payload:0..MAX_PAYLOAD | crc16:2 |
    body v2:       | 02 | seq:1 | type:1 | len:1 | payload:len | crc32:4 |
    crc16:         CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over ver..payload, big endian
    crc32:         CRC-32/ISO-HDLC (zlib's) over ver..payload, big endian

The 0x00 delimiter never occurs inside a COBS-encoded frame, so a receiver that sees
garbage simply discards bytes up to the next 0x00 and starts again (resync). Version 2 adds
the payload length and a CRC-32: a frame that gains or loses bytes (a COBS code byte hit by
noise adds a trailing 0x00, which CRC-16 without a final XOR always accepts) is refused by the
length, and any other damage by a 32-bit check.

Only stdlib modules MicroPython has are used (struct, binascii); no typing, no dataclasses.
"""

try:
    import struct
except ImportError:  # pragma: no cover - MicroPython spelling
    import ustruct as struct  # type: ignore[no-redef]

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover - a port built without binascii.crc32
    _crc32 = None  # type: ignore[assignment]

PROTOCOL_VERSION = 2  # the highest version this code speaks
PROTOCOL_VERSIONS = (1, 2)
MAX_PAYLOAD = 200
MAX_BODY = 4 + MAX_PAYLOAD + 4
MIN_BODY = {1: 5, 2: 8}
# A COBS frame grows by at most one byte per 254, plus its delimiter.
MAX_WIRE = MAX_BODY + MAX_BODY // 254 + 2
DELIMITER = 0


class CodecError(Exception):
    """A frame or payload that does not decode; the message says what was expected and what came."""


# ---------------------------------------------------------------- CRC and COBS


def crc16_ccitt(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def _crc32_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32_TABLE = None


def crc32(data):
    """CRC-32/ISO-HDLC (zlib, binascii): reflected poly 0xEDB88320, init and final XOR 0xFFFFFFFF."""
    if _crc32 is not None:
        return _crc32(data) & 0xFFFFFFFF
    global _CRC32_TABLE
    if _CRC32_TABLE is None:
        _CRC32_TABLE = _crc32_table()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def cobs_encode(data):
    """Consistent Overhead Byte Stuffing: the result contains no 0x00 byte."""
    out = bytearray()
    code_index = 0
    out.append(0)
    code = 1
    for byte in data:
        if byte == 0:
            out[code_index] = code
            code_index = len(out)
            out.append(0)
            code = 1
        else:
            out.append(byte)
            code += 1
            if code == 0xFF:
                out[code_index] = code
                code_index = len(out)
                out.append(0)
                code = 1
    out[code_index] = code
    return bytes(out)


def cobs_decode(data):
    """Inverse of cobs_encode; raises CodecError on a malformed block."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CodecError("COBS: expected a non-zero code byte, got 0x00 at offset %d" % i)
        end = i + code
        if end > n:
            raise CodecError("COBS: block of %d bytes runs past the frame end (%d bytes)" % (code, n))
        out.extend(data[i + 1:end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


# ---------------------------------------------------------------- frames


class Frame:
    """One link-layer frame: sequence number, message type and raw payload."""

    __slots__ = ("seq", "type", "payload", "version")

    def __init__(self, seq, type, payload=b"", version=0):
        self.seq = seq
        self.type = type
        self.payload = bytes(payload)
        self.version = version  # the frame version it arrived in (0: not decoded from the wire)

    def __eq__(self, other):
        return (
            isinstance(other, Frame)
            and self.seq == other.seq
            and self.type == other.type
            and self.payload == other.payload
        )

    def __hash__(self):
        return hash((self.seq, self.type, self.payload))

    def __repr__(self):
        return "Frame(seq=%d, type=0x%02x, payload=%r)" % (self.seq, self.type, self.payload)


def encode_frame(frame, version=1):
    """Frame -> bytes on the wire in frame `version` (1 or 2), delimiter included."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise CodecError("payload: expected at most %d bytes, got %d" % (MAX_PAYLOAD, len(frame.payload)))
    if not 0 <= frame.seq <= 255 or not 0 <= frame.type <= 255:
        raise CodecError("seq and type: expected 0..255, got seq=%r type=%r" % (frame.seq, frame.type))
    if version == 2:
        body = bytes((2, frame.seq, frame.type, len(frame.payload))) + frame.payload
        crc = crc32(body)
        body += bytes(((crc >> 24) & 0xFF, (crc >> 16) & 0xFF, (crc >> 8) & 0xFF, crc & 0xFF))
    elif version == 1:
        body = bytes((1, frame.seq, frame.type)) + frame.payload
        crc = crc16_ccitt(body)
        body += bytes(((crc >> 8) & 0xFF, crc & 0xFF))
    else:
        raise CodecError("frame version: expected 1 or 2, got %r" % (version,))
    return cobs_encode(body) + b"\x00"


def decode_body(encoded, accept=PROTOCOL_VERSIONS):
    """COBS bytes between two delimiters -> Frame, or CodecError saying what is wrong.

    `accept` lists the frame versions this receiver takes (a v2 session takes only 2)."""
    body = cobs_decode(encoded)
    if len(body) < 5:
        raise CodecError("frame: expected at least 5 bytes, got %d" % len(body))
    version = body[0]
    if version not in accept:
        raise CodecError("frame: protocol version expected one of %r, got %d" % (tuple(accept), version))
    if len(body) < MIN_BODY[version]:
        raise CodecError("frame: expected at least %d bytes, got %d" % (MIN_BODY[version], len(body)))
    if len(body) > MAX_BODY:
        raise CodecError("frame: expected at most %d bytes, got %d" % (MAX_BODY, len(body)))
    if version == 2:
        if body[3] != len(body) - 8:
            raise CodecError("frame: length byte says %d payload bytes, frame has %d" % (
                body[3], len(body) - 8))
        want = crc32(body[:-4])
        got = (body[-4] << 24) | (body[-3] << 16) | (body[-2] << 8) | body[-1]
        if want != got:
            raise CodecError("frame: CRC-32 expected 0x%08x, got 0x%08x" % (want, got))
        return Frame(body[1], body[2], body[4:-4], 2)
    if len(body) > 3 + MAX_PAYLOAD + 2:
        raise CodecError("frame: expected at most %d bytes, got %d" % (3 + MAX_PAYLOAD + 2, len(body)))
    want = crc16_ccitt(body[:-2])
    got = (body[-2] << 8) | body[-1]
    if want != got:
        raise CodecError("frame: CRC expected 0x%04x, got 0x%04x" % (want, got))
    return Frame(body[1], body[2], body[3:-2], 1)


class Deframer:
    """Byte stream -> frames. Feed any chunking; garbage is counted and skipped.

    Bytes accumulate until a 0x00 delimiter; the bytes before it are one candidate frame.
    A candidate that fails COBS, length, version or CRC checks is dropped and counted in
    `errors` (and the last error kept in `last_error`); an over-long run without a delimiter
    is discarded and counted in `resyncs`, so one lost delimiter costs at most two frames.
    """

    def __init__(self, accept=PROTOCOL_VERSIONS):
        self.accept = tuple(accept)
        self._buf = bytearray()
        self._overflow = False
        self.errors = 0
        self.resyncs = 0
        self.last_error = None

    def feed(self, data):
        """Return the list of good frames completed by `data`."""
        frames = []
        for byte in data:
            if byte != DELIMITER:
                if len(self._buf) < MAX_WIRE:
                    self._buf.append(byte)
                else:
                    self._overflow = True
                continue
            if self._overflow:
                self.resyncs += 1
                self._overflow = False
                self._buf = bytearray()
                continue
            if not self._buf:
                continue  # empty frame: idle delimiter or line noise, nothing to report
            candidate = bytes(self._buf)
            self._buf = bytearray()
            try:
                frames.append(decode_body(candidate, self.accept))
            except CodecError as exc:
                self.errors += 1
                self.last_error = str(exc)
        return frames


# ---------------------------------------------------------------- messages
#
# Field codes: B u8, H u16, h i16, I u32, s short string (u8 length + UTF-8),
# y short bytes (u8 length + raw bytes). Integers are big-endian.

ACK = 0x01
NAK = 0x02
HELLO = 0x10
HELLO_REPLY = 0x11
PING = 0x12
PONG = 0x13
STATUS_REQ = 0x14
STATUS = 0x15
DISPENSE = 0x20
DISPENSE_RESULT = 0x21
QUERY_RESULT = 0x22
MOTOR_TEST = 0x23
MOTOR_TEST_RESULT = 0x24
LIGHT = 0x25  # v2
LIGHT_STATE = 0x26  # v2
BUTTON = 0x30
DOOR = 0x31
FAULT = 0x32
BOOT = 0x33
ERROR = 0x40
UPDATE_BEGIN = 0x50  # v2: firmware update over the link
UPDATE_FILE = 0x51
UPDATE_CHUNK = 0x52
UPDATE_COMMIT = 0x53
UPDATE_REPLY = 0x54

# Command ids from DIAG_COMMAND_BASE up are reserved for technicians' drop tests straight on the port
# (daemon stopped); the unit daemon allocates below it, so the board's journal never answers a vend
# with a diagnostic's result.
DIAG_COMMAND_BASE = 0xF0000000

# Dispense and motor-test outcomes.
DROPPED = 0
JAMMED = 1
EMPTY = 2
NO_DROP_DETECTED = 3
MOTOR_FAULT = 4
DOOR_OPEN = 5
INTERRUPTED = 6  # the board rebooted while the coil turned; the journal proves no drop was seen
UNKNOWN_COMMAND = 7  # QUERY_RESULT for a command id the board never executed
BAD_COLUMN = 8
OK = 9  # motor test passed

OUTCOME_NAMES = {
    DROPPED: "dropped",
    JAMMED: "jammed",
    EMPTY: "empty",
    NO_DROP_DETECTED: "no_drop_detected",
    MOTOR_FAULT: "motor_fault",
    DOOR_OPEN: "door_open",
    INTERRUPTED: "interrupted",
    UNKNOWN_COMMAND: "unknown_command",
    BAD_COLUMN: "bad_column",
    OK: "ok",
}

LANGUAGES = ("en", "es")  # protocol 1: BUTTON index i is the language LANGUAGES[i]

# Status light patterns (LIGHT, LIGHT_STATE; protocol 2).
LIGHT_OFF = 0
LIGHT_LIT = 1  # ready
LIGHT_BLINK = 2  # busy (a vend in progress)
LIGHT_HOST_SILENT = 3  # shown by the board itself when the controller has been silent too long
LIGHT_NAMES = {LIGHT_OFF: "off", LIGHT_LIT: "lit", LIGHT_BLINK: "blinking", LIGHT_HOST_SILENT: "host_silent"}

# UPDATE_REPLY codes.
UPD_OK = 0
UPD_BAD_STATE = 1  # a request out of order (no BEGIN, a trial boot not yet confirmed, ...)
UPD_BAD_MODEL = 2
UPD_SERVICE_MODE = 3  # refused: the service door is closed
UPD_TOO_BIG = 4
UPD_BAD_OFFSET = 5  # `value` is the offset the board expects next
UPD_BAD_HASH = 6
UPD_STORAGE = 7
UPD_NAMES = {UPD_OK: "ok", UPD_BAD_STATE: "bad_state", UPD_BAD_MODEL: "bad_model",
             UPD_SERVICE_MODE: "service_mode_required", UPD_TOO_BIG: "too_big", UPD_BAD_OFFSET: "bad_offset",
             UPD_BAD_HASH: "bad_hash", UPD_STORAGE: "storage"}
UPDATE_CHUNK_MAX = 180  # data bytes per UPDATE_CHUNK (the payload stays within MAX_PAYLOAD)

# Fault codes (FAULT event `code`, bits of STATUS `faults`).
FAULT_JAM = 0
FAULT_MOTOR = 1
FAULT_DROP_SENSOR = 2
FAULT_TEMP_SENSOR = 3
FAULT_NVS = 4
FAULT_BROWNOUT = 5
FAULT_NAMES = {
    FAULT_JAM: "jam",
    FAULT_MOTOR: "motor",
    FAULT_DROP_SENSOR: "drop_sensor",
    FAULT_TEMP_SENSOR: "temp_sensor",
    FAULT_NVS: "nvs",
    FAULT_BROWNOUT: "brownout",
}

# Error codes (ERROR reply `code`).
ERR_UNKNOWN_TYPE = 1
ERR_BAD_PAYLOAD = 2
ERR_VERSION = 3
ERR_BUSY = 4
ERR_NVS = 5  # non-volatile storage failed: the board refuses to dispense without its journal


class Message:
    """Base of every typed message. Subclasses declare TYPE and FIELDS ((name, code), ...)."""

    TYPE = -1
    FIELDS = ()  # type: tuple

    def __init__(self, *args, **kwargs):
        names = [f[0] for f in self.FIELDS]
        if len(args) > len(names):
            raise TypeError("%s: expected at most %d fields, got %d" % (
                self.__class__.__name__, len(names), len(args)))
        for name, value in zip(names, args):  # noqa: B905 - MicroPython zip has no strict=
            setattr(self, name, value)
        for name in names[len(args):]:
            if name not in kwargs:
                raise TypeError("%s: missing field %r" % (self.__class__.__name__, name))
            setattr(self, name, kwargs.pop(name))
        if kwargs:
            raise TypeError("%s: unexpected fields %r" % (self.__class__.__name__, sorted(kwargs)))

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, f[0]) == getattr(other, f[0]) for f in self.FIELDS
        )

    def __hash__(self):
        return hash((self.TYPE,) + tuple(getattr(self, f[0]) for f in self.FIELDS))

    def __repr__(self):
        inner = ", ".join("%s=%r" % (f[0], getattr(self, f[0])) for f in self.FIELDS)
        return "%s(%s)" % (self.__class__.__name__, inner)

    def fields(self):
        return dict((f[0], getattr(self, f[0])) for f in self.FIELDS)

    def encode(self):
        out = bytearray()
        for name, code in self.FIELDS:
            value = getattr(self, name)
            try:
                if code == "s":
                    raw = value.encode("utf-8")
                    if len(raw) > 255:
                        raise CodecError("%s.%s: expected at most 255 bytes, got %d" % (
                            self.__class__.__name__, name, len(raw)))
                    out.append(len(raw))
                    out.extend(raw)
                elif code == "y":
                    raw = bytes(value)
                    if len(raw) > 255:
                        raise CodecError("%s.%s: expected at most 255 bytes, got %d" % (
                            self.__class__.__name__, name, len(raw)))
                    out.append(len(raw))
                    out.extend(raw)
                else:
                    out.extend(struct.pack(">" + code, value))
            except (struct.error, OverflowError, ValueError, TypeError, AttributeError) as exc:
                raise CodecError("%s.%s: expected a value for code %r, got %r (%s)" % (
                    self.__class__.__name__, name, code, value, exc)) from exc
        if len(out) > MAX_PAYLOAD:
            raise CodecError("%s: payload expected at most %d bytes, got %d" % (
                self.__class__.__name__, MAX_PAYLOAD, len(out)))
        return bytes(out)

    @classmethod
    def decode(cls, payload):
        values = []  # type: list
        i = 0
        n = len(payload)
        for name, code in cls.FIELDS:
            if code in ("s", "y"):
                if i >= n:
                    raise CodecError("%s.%s: expected a length byte at offset %d, payload has %d bytes" % (
                        cls.__name__, name, i, n))
                length = payload[i]
                i += 1
                if i + length > n:
                    raise CodecError("%s.%s: expected %d bytes at offset %d, payload has %d" % (
                        cls.__name__, name, length, i, n))
                raw = bytes(payload[i:i + length])
                i += length
                if code == "s":
                    try:
                        values.append(raw.decode("utf-8"))
                    except UnicodeError:
                        raise CodecError("%s.%s: expected UTF-8 text, got %r" % (
                            cls.__name__, name, raw)) from None
                else:
                    values.append(raw)
            else:
                size = struct.calcsize(">" + code)
                if i + size > n:
                    raise CodecError("%s.%s: expected %d bytes at offset %d, payload has %d" % (
                        cls.__name__, name, size, i, n))
                values.append(struct.unpack(">" + code, payload[i:i + size])[0])
                i += size
        if i != n:
            raise CodecError("%s: expected %d payload bytes, got %d" % (cls.__name__, i, n))
        return cls(*values)


class Hello(Message):
    """controller -> board: start of a session, with the controller's protocol version."""
    TYPE = HELLO
    FIELDS = (("protocol", "B"),)


class HelloReply(Message):
    """board -> controller (protocol 1 session): identity and capabilities; `boot_count` tells
    reboots apart."""
    TYPE = HELLO_REPLY
    FIELDS = (("protocol", "B"), ("firmware", "s"), ("board_id", "s"), ("columns", "B"), ("boot_count", "H"))


class HelloReply2(Message):
    """board -> controller (protocol 2 session): HelloReply plus the board model (bundles name it)."""
    TYPE = HELLO_REPLY
    FIELDS = HelloReply.FIELDS + (("model", "s"),)


class Ping(Message):
    TYPE = PING
    FIELDS = (("nonce", "I"),)


class Pong(Message):
    TYPE = PONG
    FIELDS = (("nonce", "I"),)


class StatusRequest(Message):
    TYPE = STATUS_REQ
    FIELDS = ()


class Status(Message):
    """board -> controller: door (1 open), temperature in centi-degrees C, fault bit mask,
    per-column motor state (0 idle, 1 running, 2 fault) and drop-sensor state (0 clear, 1 blocked,
    2 fault). temp_centi 0x7FFF means no reading (sensor open or shorted)."""
    TYPE = STATUS
    FIELDS = (("door_open", "B"), ("temp_centi", "h"), ("faults", "H"), ("motors", "y"), ("sensors", "y"))


class Dispense(Message):
    """controller -> board: turn `column` (1-based) once; `command_id` is journaled by the board."""
    TYPE = DISPENSE
    FIELDS = (("command_id", "I"), ("column", "B"))


class DispenseResult(Message):
    TYPE = DISPENSE_RESULT
    FIELDS = (("command_id", "I"), ("column", "B"), ("outcome", "B"))


class QueryResult(Message):
    """controller -> board: the journaled result of `command_id`, never executing it."""
    TYPE = QUERY_RESULT
    FIELDS = (("command_id", "I"),)


class MotorTest(Message):
    TYPE = MOTOR_TEST
    FIELDS = (("column", "B"),)


class MotorTestResult(Message):
    """outcome OK, JAMMED, MOTOR_FAULT, DOOR_OPEN (test refused with the door closed) or BAD_COLUMN."""
    TYPE = MOTOR_TEST_RESULT
    FIELDS = (("column", "B"), ("outcome", "B"), ("current_ma", "H"))


class Button(Message):
    """board -> controller: button `index` (0-based) was pressed. Protocol 2: the unit's config says
    which language a button means; protocol 1 read the index as LANGUAGES[index]."""
    TYPE = BUTTON
    FIELDS = (("index", "B"),)


class Button2(Message):
    """board -> controller (protocol 2 session): button `index` (0-based) was pressed and released.
    `age_ms`: ms since the release, measured as this copy of the frame leaves the board (a resend
    carries the new age), saturating at AGE_MAX_MS; `hold_ms`: how long it was held, saturating at
    HOLD_MAX_MS. The unit's config says which language a button means and how long a long press is."""
    TYPE = BUTTON
    FIELDS = (("index", "B"), ("age_ms", "H"), ("hold_ms", "H"))


AGE_MAX_MS = 0xFFFF  # Button2.age_ms and hold_ms saturate here (65.5 s)
HOLD_MAX_MS = 0xFFFF


class ButtonEvent:
    """What the board queues for a press: framed at each (re)send by Link, as Button (protocol 1) or as
    Button2 with the press's age at that moment. `released_at` is in ticks_ms."""

    TYPE = BUTTON

    def __init__(self, index, hold_ms, released_at):
        self.index = index
        self.hold_ms = hold_ms
        self.released_at = released_at

    def at_send(self, version, age_ms):
        if version < 2:
            return Button(self.index)
        return Button2(self.index, min(max(age_ms, 0), AGE_MAX_MS), min(max(self.hold_ms, 0), HOLD_MAX_MS))


class Door(Message):
    TYPE = DOOR
    FIELDS = (("open", "B"),)


class Fault(Message):
    TYPE = FAULT
    FIELDS = (("code", "B"), ("column", "B"), ("detail", "s"))


class Boot(Message):
    """board -> controller, unsolicited after every start: the board's link state is new."""
    TYPE = BOOT
    FIELDS = (("boot_count", "H"), ("reason", "s"))


class Error(Message):
    TYPE = ERROR
    FIELDS = (("code", "B"), ("detail", "s"))


class Light(Message):
    """controller -> board (protocol 2): show `pattern` (LIGHT_OFF, LIGHT_LIT, LIGHT_BLINK)."""
    TYPE = LIGHT
    FIELDS = (("pattern", "B"),)


class LightState(Message):
    """board -> controller: the pattern asked for and the one shown (LIGHT_HOST_SILENT while the
    controller has been silent longer than the board's host_silent_ms)."""
    TYPE = LIGHT_STATE
    FIELDS = (("requested", "B"), ("shown", "B"))


class UpdateBegin(Message):
    """controller -> board: a firmware bundle of `files` files for `model` follows, into the spare slot."""
    TYPE = UPDATE_BEGIN
    FIELDS = (("token", "I"), ("version", "s"), ("model", "s"), ("files", "B"))


class UpdateFile(Message):
    """controller -> board: file `index` of the bundle: its name, size and SHA-256."""
    TYPE = UPDATE_FILE
    FIELDS = (("token", "I"), ("index", "B"), ("name", "s"), ("size", "I"), ("sha256", "y"))


class UpdateChunk(Message):
    """controller -> board: `data` of file `index` at `offset` (at most UPDATE_CHUNK_MAX bytes)."""
    TYPE = UPDATE_CHUNK
    FIELDS = (("token", "I"), ("index", "B"), ("offset", "I"), ("data", "y"))


class UpdateCommit(Message):
    """controller -> board: check every hash, switch to the new slot atomically and restart into it."""
    TYPE = UPDATE_COMMIT
    FIELDS = (("token", "I"),)


class UpdateReply(Message):
    """board -> controller: the answer to the update request with the same `token`; `code` UPD_*,
    `value` the next offset the board expects (chunks) or 0."""
    TYPE = UPDATE_REPLY
    FIELDS = (("token", "I"), ("code", "B"), ("value", "I"), ("detail", "s"))


MESSAGE_TYPES_V1 = {}  # type: dict
for _cls in (Hello, HelloReply, Ping, Pong, StatusRequest, Status, Dispense, DispenseResult,
             QueryResult, MotorTest, MotorTestResult, Button, Door, Fault, Boot, Error):
    MESSAGE_TYPES_V1[_cls.TYPE] = _cls
MESSAGE_TYPES = dict(MESSAGE_TYPES_V1)  # type: dict  # protocol 2
for _v2 in (HelloReply2, Button2, Light, LightState, UpdateBegin, UpdateFile, UpdateChunk, UpdateCommit,
            UpdateReply):
    MESSAGE_TYPES[_v2.TYPE] = _v2
MESSAGES = {1: MESSAGE_TYPES_V1, 2: MESSAGE_TYPES}


def decode_message(frame, version=None):
    """Frame -> typed Message; CodecError for an unknown type or a bad payload. The message table is
    the frame's own version (a v2 frame carries protocol 2 messages), else `version`, else the newest."""
    if version is None:
        version = frame.version or PROTOCOL_VERSION
    cls = MESSAGES[version].get(frame.type)
    if cls is None:
        raise CodecError("message: expected a known type of protocol %d, got 0x%02x" % (version, frame.type))
    return cls.decode(frame.payload)


def message_frame(seq, message):
    """Typed Message -> Frame with the given link sequence number."""
    return Frame(seq, message.TYPE, message.encode())
