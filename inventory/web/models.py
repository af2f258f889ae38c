"""The JSON API's answers as pydantic models, so /openapi.json describes every response."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from inventory.commands import SentCommand
from inventory.fleet import UnitView


class ColumnOut(BaseModel):
    column: int = Field(description="the column number on the board")
    product: str
    stock: int = Field(description="kits in the column")
    par: int = Field(description="the stock below which the column counts as low")
    capacity: int = Field(description="kits the column holds when full")
    lot: str | None = Field(description="the lot of the next kit to drop")
    expiry: date | None = Field(description="that lot's expiry")


class UnitOut(BaseModel):
    id: str
    site: str
    name: str | None
    online: bool
    status: str
    status_since: str | None
    stock: dict[int, int]
    columns: list[ColumnOut]
    temperature_c: float | None
    outbox_depth: int | None
    acked_seq: int
    last_seq: int
    days_left: float | None
    firmware_version: str | None = Field(None, description="the dispenser board's firmware (unit state)")


class EventOut(BaseModel):
    seq: int
    event_id: str
    type: str
    ts: str
    payload: dict[str, Any] = Field(description="the event as the unit sent it (schemas.models)")


class AcceptGap(BaseModel):
    through_seq: int = Field(ge=1, le=2**53)
    reason: str = Field(max_length=2000)


class AcceptedGap(BaseModel):
    from_seq: int
    through_seq: int
    accepted_at: str
    reason: str


class AcceptGapOut(BaseModel):
    unit: str
    given_up: int = Field(description="how many missing seqs were given up on")
    acked_seq: int
    gaps: list[AcceptedGap]


class FollowUpOut(BaseModel):
    acked_by: str | None
    acked_at: str | None
    note: str | None
    assignee: str | None
    snoozed_until: str | None


class AlertBase(BaseModel):
    alert_key: str
    unit: str | None
    site: str | None
    kind: str
    severity: str
    message: str
    raised_at: str


class AlertOut(AlertBase):
    follow_up: FollowUpOut | None = None


class AlertHistoryOut(AlertBase):
    cleared_at: str | None


class AlertAction(BaseModel):
    alert_key: str = Field(min_length=1, max_length=300)
    action: Literal["acknowledge", "assign", "snooze"]
    note: str | None = Field(default=None, max_length=500)
    assignee: str | None = Field(default=None, max_length=64)
    minutes: int | None = Field(default=None, description="snooze length")


class AlertActionOut(BaseModel):
    alert: AlertBase
    follow_up: FollowUpOut


class AlertsOut(BaseModel):
    active: list[AlertOut]
    history: list[AlertHistoryOut]


class DiscrepancyOut(BaseModel):
    unit: str
    event_id: str
    seq: int
    ts: str
    summary: str
    resolved_at: str | None


class Counts(BaseModel):
    kits: int
    doses: int
    test_vends: int
    vend_failures: int
    videos_started: int
    videos_completed: int
    kits_after_video: int
    out_of_stock: int
    vend_failure_rate: float


class MonthlyRow(Counts):
    month: str = Field(description="YYYY-MM in the reporting time zone")
    site: str
    unit: str


class PeriodRow(Counts):
    site: str
    unit: str


class YearlyRow(Counts):
    year: str
    site: str
    unit: str


class Funnel(BaseModel):
    videos_started: int
    videos_completed: int
    kits_after_video: int
    kits: int
    vend_failure_rate: float


class QuarantineOut(BaseModel):
    """A refused message kept for staff: why and how big, never what it said."""

    id: int
    unit: str
    topic: str
    reason: str
    detail: str
    size: int = Field(description="bytes of the refused payload")
    seq: int | None
    event_id: str | None
    first_at: str
    last_at: str
    count: int = Field(description="how often this refusal came")
    state: str = Field(description="open, released or accepted")
    resolved_at: str | None
    resolution: str | None


class QuarantineDecision(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class RejectOut(BaseModel):
    count: int
    last_at: str
    last_topic: str | None
    last_detail: str | None


class WorkerOut(BaseModel):
    client_id: str
    connected: bool
    shared: bool


class GapOut(BaseModel):
    missing_from_seq: int


class IngestOut(BaseModel):
    counters: dict[str, int]
    rejected: dict[str, RejectOut]
    mqtt_connected: bool | None = None
    workers: list[WorkerOut] = []
    open_gaps: dict[str, GapOut] = {}
    replays_requested: int | None = None
    command_responses: int | None = None


class Health(BaseModel):
    ok: bool
    schema_version: int | None = None
    mqtt_connected: bool | None = None
    error: str | None = None


class AuditOut(BaseModel):
    at: str
    actor: str = Field(description="staff member, token:<name>, or the service")
    role: str | None
    via: str = Field(description="password | sso | token | cli | mqtt (a unit's answer) | system")
    source: str | None = Field(description="client address, or the unit id for a unit's answer")
    action: str
    target: str | None
    outcome: str = Field(description="ok | refused | failed | sent | answered | timeout")
    before: Any
    after: Any
    detail: str | None


class CommandIn(BaseModel):
    """The fields of a staff command; each command takes only its own (see schemas.models)."""

    reason: str | None = Field(default=None, max_length=500, description="lock")
    column: int | None = Field(default=None, description="set_lot, test_vend")
    lot: str | None = Field(default=None, max_length=64, description="set_lot")
    expiry: date | None = Field(default=None, description="set_lot")
    from_seq: int | None = Field(default=None, description="replay")


class CommandOut(BaseModel):
    command_id: str
    unit: str
    name: str
    params: dict[str, Any]
    issued_by: str
    issued_at: str
    status: Literal["sent", "ok", "error", "timeout"]
    answer: dict[str, Any] | None
    answered_at: str | None


Out = TypeVar("Out", bound=BaseModel)


def copied(model: type[Out], source: object, **converted: Any) -> Out:
    """`model` from the attributes of `source` that have its fields' names, and `converted` for the
    fields whose values need converting (a time to text, a renamed attribute)."""
    same = {name: getattr(source, name) for name in model.model_fields if name not in converted}
    return model.model_validate(same | converted)


def command_out(c: SentCommand) -> CommandOut:
    return copied(
        CommandOut,
        c,
        issued_at=c.issued_at.isoformat(),
        answered_at=c.answered_at.isoformat() if c.answered_at else None,
    )


def unit_out(u: UnitView) -> UnitOut:
    return copied(
        UnitOut,
        u,
        id=u.unit,
        status_since=u.since.isoformat() if u.since else None,
        stock={c.column: c.stock for c in u.columns},
        columns=[ColumnOut.model_validate(c, from_attributes=True) for c in u.columns],
        days_left=round(u.days_left, 1) if u.days_left is not None else None,
    )
