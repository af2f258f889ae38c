"""MQTT payload models: the one definition used by the unit daemon and the central service.

Every payload on `nalox/v1/...` is one of these pydantic models serialised as JSON. The
published JSON Schema and AsyncAPI document (schemas/*.json) are generated from this module.
No model carries anything that identifies a person at the machine.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
TOPIC_ROOT = "nalox/v1"
UnitId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Column = Annotated[int, Field(ge=1, le=64)]
Count = Annotated[int, Field(ge=0, le=100_000)]
MAX_SEQ = 2**53  # a seq beyond this loses precision in JSON readers (JavaScript numbers) and is refused
# the range a storage-temperature reading can physically take; a value outside is a sensor fault
CELSIUS_MIN, CELSIUS_MAX = -60.0, 100.0
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]
# every timestamp a unit sends carries its zone (a naive one would be read as the server's local time)
Timestamp = AwareDatetime


class Payload(BaseModel):
    """Base: unknown fields are refused so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- unit -> central


class Status(Payload):
    """`<unit>/status`, retained; also the Last Will. `session` increases on every connect."""

    state: Literal["online", "offline"]
    session: int = Field(ge=0, le=MAX_SEQ)
    ts: Timestamp


class LotExposure(Payload):
    """The heat one kit's lot saw in this unit from its load to this moment: seconds outside the
    label storage range and beyond the excursion limits, and the mean kinetic temperature."""

    seconds_outside_label: float = Field(ge=0)
    seconds_in_excursion: float = Field(ge=0)
    mkt_c: float | None = None


class LabelRange(Payload):
    """A product's label storage range and its allowed excursions (naloxone: 20-25 °C, excursions
    5-40 °C). The one definition of the temperature bands: the unit's product config carries it, the
    unit reports it in its state, and the central service judges readings and exposure by it."""

    storage_min_c: float = 20.0
    storage_max_c: float = 25.0
    excursion_min_c: float = 5.0
    excursion_max_c: float = 40.0

    def band(self, celsius: float) -> Literal["normal", "storage", "excursion"]:
        """normal: inside the label range; storage: outside it but within the excursions; else excursion."""
        if celsius < self.excursion_min_c or celsius > self.excursion_max_c:
            return "excursion"
        if celsius < self.storage_min_c or celsius > self.storage_max_c:
            return "storage"
        return "normal"


class LotSegment(Payload):
    """Kits of one lot lying together in a column's spiral; a column's segments are listed front
    (the next kit to drop) first."""

    lot: str | None = Field(default=None, max_length=64)
    expiry: date | None = None
    count: Count
    loaded_at: datetime | None = None
    exposure: LotExposure | None = None


class LotHold(Payload):
    """A lot the unit will not vend: a recall from the central service, or its own heat policy."""

    lot: str = Field(min_length=1, max_length=64)
    kind: Literal["recall", "heat"]
    reason: str = Field(max_length=300)
    by: str = Field(max_length=64, description="staff role or `unit` (no names)")
    since: datetime


class ColumnState(Payload):
    """One column of the dispenser: its product, stock and the lot loaded in it. `lot`/`expiry` are
    the front kit's (the next to drop); `lots` the whole queue, front first."""

    column: Column
    product: str
    capacity: Count
    par: Count
    stock: Count
    lot: str | None = None
    expiry: date | None = None
    fault: str | None = None
    lots: list[LotSegment] = []
    held: str | None = Field(default=None, description="why the front kit may not vend (expired, hold)")


class AlarmState(Payload):
    """An alarm that is active on the unit now."""

    code: str
    severity: Literal["info", "warning", "critical"] = "warning"
    message: str
    since: Timestamp
    column: Column | None = None


class UnitState(Payload):
    """`<unit>/state`, retained: the full picture of one unit."""

    schema_version: int = SCHEMA_VERSION
    unit: UnitId
    site: str
    ts: Timestamp
    mode: Literal["vending", "service", "locked", "starting"]
    firmware_version: str | None = None
    config_version: str
    columns: list[ColumnState] = Field(description="each column of the dispenser once")
    alarms: list[AlarmState] = []
    outbox_depth: int = Field(ge=0, le=MAX_SEQ)
    outbox_oldest_age_s: float | None = None
    last_seq: int = Field(ge=0, le=MAX_SEQ)
    temperature_c: float | None = None
    labels: dict[str, LabelRange] = Field(default={}, description="product -> its label storage range")
    holds: list[LotHold] = []
    cert_not_after: Timestamp | None = Field(
        default=None, description="when the unit's MQTT client certificate expires (central warns before)"
    )

    @field_validator("columns")
    @classmethod
    def _each_column_once(cls, columns: list[ColumnState]) -> list[ColumnState]:
        numbers = [c.column for c in columns]
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        if twice:
            raise ValueError(f"expected each column once, got column {', '.join(map(str, twice))} twice")
        return columns


class TemperatureSample(Payload):
    """One reading of the storage temperature."""

    ts: datetime
    celsius: float = Field(ge=CELSIUS_MIN, le=CELSIUS_MAX)


class Telemetry(Payload):
    """`<unit>/telemetry`, QoS 0, periodic."""

    unit: UnitId
    ts: Timestamp
    temperature_c: float | None = None
    uptime_s: float = Field(ge=0)
    link: dict[Annotated[str, Field(max_length=64)], Annotated[int, Field(ge=0, le=MAX_SEQ)]] = Field(
        default={}, max_length=64
    )
    outbox_depth: int = Field(ge=0, le=MAX_SEQ)
    outbox_oldest_age_s: float | None = None
    samples: list[TemperatureSample] = Field(
        default=[], max_length=720, description="readings since the last telemetry, oldest first"
    )


class EventBase(Payload):
    """Fields every event carries. `event_id` is unique and immutable; `seq` strictly increases per unit."""

    schema_version: int = SCHEMA_VERSION
    event_id: str = Field(min_length=8, max_length=64)
    seq: Seq
    ts: Timestamp
    unit: UnitId


class DispenseEvent(EventBase):
    """One kit physically dropped (the board's drop sensor saw it)."""

    type: Literal["dispense"] = "dispense"
    column: Column
    product: str
    doses: int = Field(ge=1, le=20)
    lot: str | None = None
    expiry: date | None = None
    command_id: int = Field(ge=0, le=2**32 - 1)  # the serial protocol's u32
    language: str | None = None
    via: Literal["video", "extra", "emergency", "window", "fallback", "test"] = Field(
        description="video: after a completed video; extra: another kit for the same person inside "
        "their window; emergency: the emergency button or a long press, no video; window: the old "
        "machine-wide window (units before the kiosk change); fallback: the player was broken; test: "
        "a technician's drop test"
    )
    stock_after: Count
    exposure: LotExposure | None = None


class VendAttempt(Payload):
    """One dispense command sent to the board while trying to vend."""

    column: Column
    command_id: int = Field(ge=0, le=2**32 - 1)  # the serial protocol's u32
    outcome: str


class VendFailedEvent(EventBase):
    """A vend that ended without a kit (every column tried jammed, empty or faulted)."""

    type: Literal["vend_failed"] = "vend_failed"
    reason: str
    attempts: list[VendAttempt] = []


class VideoEvent(EventBase):
    """The overdose-response video started, completed, was abandoned or failed to play."""

    type: Literal["video"] = "video"
    phase: Literal["started", "completed", "abandoned", "failed"]
    language: str
    position_s: float | None = None
    detail: str | None = None


class OutOfStockEvent(EventBase):
    """A button press that found no vendable kit."""

    type: Literal["out_of_stock"] = "out_of_stock"
    product: str
    language: str | None = None


class RestockEvent(EventBase):
    """Kits loaded into a column. With a blind count, `counted_before` is what the technician
    found and `expected_before` what the ledger expected; they differ on a discrepancy."""

    type: Literal["restock"] = "restock"
    column: Column
    added: int = Field(ge=-100_000, le=100_000)
    stock_after: Count
    lot: str | None = None
    expiry: date | None = None
    expected_before: Count | None = None
    counted_before: Count | None = None
    discrepancy: int = Field(default=0, ge=-100_000, le=100_000)
    reason: str | None = None
    source: Literal["initial", "local", "remote"] = "local"


class DoorEvent(EventBase):
    """The service door opened or closed."""

    type: Literal["door"] = "door"
    open: bool


class AlarmEvent(EventBase):
    """An alarm raised or cleared on the unit."""

    type: Literal["alarm"] = "alarm"
    code: str
    state: Literal["raised", "cleared"]
    severity: Literal["info", "warning", "critical"] = "warning"
    message: str
    column: Column | None = None


class TemperatureEvent(EventBase):
    """Storage temperature entered or left a band; `lots` are the lots exposed."""

    type: Literal["temperature"] = "temperature"
    celsius: float
    band: Literal["storage", "excursion", "normal"]
    state: Literal["entered", "left"]
    lots: list[str] = []
    seconds_out_of_range: float = 0.0


Event = Annotated[
    DispenseEvent
    | VendFailedEvent
    | VideoEvent
    | OutOfStockEvent
    | RestockEvent
    | DoorEvent
    | AlarmEvent
    | TemperatureEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
EVENT_TYPES = ("dispense", "vend_failed", "video", "out_of_stock", "restock", "door", "alarm", "temperature")


def parse_event(raw: bytes | str) -> EventBase:
    """JSON bytes -> the typed event; raises pydantic.ValidationError naming the bad field."""
    return EVENT_ADAPTER.validate_json(raw)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- central -> unit


class Ack(Payload):
    """`<unit>/ack`: the highest seq the central store committed without gaps."""

    acked_seq: int = Field(ge=0)


class CommandBase(Payload):
    """Fields every command carries. `command_id` makes a command idempotent; `issued_at` bounds its age."""

    command_id: str = Field(min_length=1, max_length=64)
    issued_at: datetime
    issued_by: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the staff member who sent it from the central dashboard (kept in the unit's ledger); "
        "never a person at the machine",
    )


class RestockCommand(CommandBase):
    """`cmd/restock`: a column was loaded (remote record of a technician's restock)."""

    column: Column
    count: Count = Field(description="kits in the column after loading")
    counted_before: Count | None = Field(default=None, description="blind count of kits found before loading")
    lot: str | None = None
    expiry: date | None = None
    reason: str | None = None


class SetLotCommand(CommandBase):
    """`cmd/set_lot`: the lot and expiry of the kits in a column."""

    column: Column
    lot: str = Field(min_length=1, max_length=64)
    expiry: date


class LockCommand(CommandBase):
    """`cmd/lock`: stop vending until unlocked."""

    reason: str | None = None


class UnlockCommand(CommandBase):
    """`cmd/unlock`: resume vending."""

    reason: str | None = None


class RebirthCommand(CommandBase):
    """`cmd/rebirth`: publish status and the full state again."""

    pass


REPLAY_MAX_SEQS = 1000  # the most seqs one replay request may ask for (the unit clips to its own cap)


class ReplayCommand(CommandBase):
    """`cmd/replay`: send the outbox rows `from_seq` .. `to_seq` again (the central saw a gap). Without
    `to_seq` (older centrals) the unit sends at most its cap of rows from `from_seq`; a longer range is
    clipped to the cap and the answer says so."""

    from_seq: int = Field(ge=1, le=MAX_SEQ)
    to_seq: int | None = Field(
        default=None, ge=1, le=MAX_SEQ, description="the last seq wanted (inclusive); at most "
        f"{REPLAY_MAX_SEQS} seqs from from_seq are sent"
    )

    @model_validator(mode="after")
    def _ordered(self) -> ReplayCommand:
        if self.to_seq is not None and self.to_seq < self.from_seq:
            raise ValueError(f"expected to_seq >= from_seq {self.from_seq}, got {self.to_seq}")
        return self


class DiagCommand(CommandBase):
    """`cmd/diag`: run the diagnostics and return the report."""

    pass


class LotHoldCommand(CommandBase):
    """`cmd/lot_hold`: stop (hold=true) or resume (hold=false) vending every kit of `lot`; kept in the
    unit's ledger so it survives restarts. `by` is a staff role or account name, never a person's."""

    lot: str = Field(min_length=1, max_length=64)
    hold: bool
    reason: str = Field(min_length=1, max_length=300)
    by: str = Field(min_length=1, max_length=64)


class TestVendCommand(CommandBase):
    """`cmd/test_vend`: dispense one kit from a column for a test; only in service mode."""

    __test__ = False  # not a pytest test class
    column: Column


COMMANDS: dict[str, type[CommandBase]] = {
    "restock": RestockCommand,
    "set_lot": SetLotCommand,
    "lock": LockCommand,
    "unlock": UnlockCommand,
    "rebirth": RebirthCommand,
    "replay": ReplayCommand,
    "diag": DiagCommand,
    "test_vend": TestVendCommand,
    "lot_hold": LotHoldCommand,
}
MAX_COMMAND_BYTES = 4096


class CommandResponse(Payload):
    """Sent on the command's v5 response topic with its correlation data."""

    command_id: str | None
    status: Literal["ok", "error"]
    reason: str | None = None
    result: dict[str, Any] | None = None


# ---------------------------------------------------------------- central -> everyone


class Alert(Payload):
    """`nalox/v1/_central/alert`: an alert raised or cleared by the central service."""

    alert_id: str
    unit: str | None = None
    site: str | None = None
    kind: str
    severity: Literal["info", "warning", "critical"]
    state: Literal["raised", "cleared"]
    message: str
    ts: datetime


def topic(unit: str, *parts: str) -> str:
    return "/".join((TOPIC_ROOT, unit) + parts)
