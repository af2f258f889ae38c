"""MQTT ingest logic: messages -> store, acks and replay requests. No MQTT client in here (see mqtt.py).

Every message is classified first; bad input is refused with a reason (counted in the store,
logged, and still acknowledged so the broker does not redeliver it forever). Good messages of
one batch are written in one transaction; the caller acknowledges them to the broker only after
that commit. After the commit the ingestor recomputes each touched unit's gap-free seq from the
database, publishes `nalox/v1/<unit>/ack`, and asks for a replay when a gap outlives its timeout.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pydantic

from inventory import log
from inventory.clock import Clock
from inventory.config import CentralConfig
from inventory.errors import InventoryError
from inventory.store import SeqProgress, Store, Tx
from schemas.models import (
    CELSIUS_MAX,
    CELSIUS_MIN,
    EVENT_TYPES,
    MAX_SEQ,
    SCHEMA_VERSION,
    TOPIC_ROOT,
    Ack,
    CommandResponse,
    DispenseEvent,
    EventBase,
    LotHoldCommand,
    ReplayCommand,
    RestockEvent,
    Status,
    Telemetry,
    UnitState,
    parse_event,
    topic,
)

REJECT_REASONS = (
    "oversized",
    "ts_out_of_window",
    "bad_topic",
    "malformed_json",
    "unknown_schema_version",
    "invalid_payload",
    "unit_mismatch",
    "type_mismatch",
    "unknown_unit",
    "internal_error",
)

EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{8,64}")
FIELD = re.compile(r"[a-z_]{1,40}")  # a field name of ours in an error's location (else "?")

# publish(topic, payload, qos, response_topic, correlation, expiry_s)
Publish = Callable[[str, bytes, int, str | None, bytes | None, int | None], None]


@dataclass(frozen=True)
class Incoming:
    """One message from the broker, as the MQTT edge hands it over."""

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 1
    generation: int = 0


@dataclass(frozen=True)
class Parsed:
    kind: str  # event | status | state | telemetry | response
    unit: str
    model: pydantic.BaseModel
    raw: str


@dataclass(frozen=True)
class Rejected:
    """A refusal: the reason and our own words about it, never the payload's content (a refused payload
    may carry anything: it reaches no log, table or API). `seq` and `event_id` only when they are
    well-formed, so staff can release the event or accept it as a gap."""

    reason: str
    detail: str
    unit: str | None = None
    size: int = 0
    seq: int | None = None
    event_id: str | None = None


class Refused(InventoryError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
        self.seq: int | None = None
        self.event_id: str | None = None


@dataclass(frozen=True)
class Window:
    """How far a payload's `ts` may lie from the time it was received."""

    now: datetime
    max_future_s: float
    max_past_s: float


def classify(msg: Incoming, max_bytes: int, window: Window | None = None) -> Parsed | Rejected:
    """Topic + payload -> a typed, normalised model, or the reason it is refused."""
    try:
        return _classify(msg, max_bytes, window)
    except Refused as r:
        return Rejected(r.reason, r.detail, _topic_unit(msg.topic), len(msg.payload), r.seq, r.event_id)


def _identity(obj: dict[str, Any], r: Refused) -> None:
    """The refused event's seq and event_id, when they are well-formed (never other content)."""
    seq, eid = obj.get("seq"), obj.get("event_id")
    if isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq <= MAX_SEQ:
        r.seq = seq
    if isinstance(eid, str) and EVENT_ID.fullmatch(eid):
        r.event_id = eid


def _topic_unit(t: str) -> str | None:
    parts = t.split("/")
    return parts[2] if len(parts) >= 4 and "/".join(parts[:2]) == TOPIC_ROOT else None


def _classify(msg: Incoming, max_bytes: int, window: Window | None) -> Parsed:
    if len(msg.payload) > max_bytes:
        raise Refused("oversized", f"expected at most {max_bytes} bytes, got {len(msg.payload)}")
    kind, unit, etype = _parse_topic(msg.topic)
    try:
        text = msg.payload.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        if isinstance(e, UnicodeDecodeError):
            where = f"at byte {e.start}"
        elif isinstance(e, json.JSONDecodeError):
            where = f"at line {e.lineno} column {e.colno}"
        else:
            where = "nested too deep"
        raise Refused(
            "malformed_json", f"expected a UTF-8 JSON object of {len(msg.payload)} bytes, it breaks {where}"
        ) from None
    if not isinstance(obj, dict):
        raise Refused("malformed_json", f"expected a JSON object, got {type(obj).__name__}")
    # PostgreSQL text cannot hold U+0000: refused here, not a failed batch. Strict JSON has it only
    # as the escape \u0000, so a text without one needs no walk through every value
    if "\\u0000" in text and _has_nul(obj):
        raise Refused("invalid_payload", "expected text without U+0000 (NUL), got a string holding one")
    try:
        version = obj.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise Refused(
                "unknown_schema_version", f"expected schema_version {SCHEMA_VERSION}, got another"
            )
        model = _validate(kind, text)
        payload_unit = getattr(model, "unit", unit)
        if payload_unit != unit:
            raise Refused("unit_mismatch", f"topic is for unit {unit!r}, the payload names another unit")
        if kind == "event" and getattr(model, "type", None) != etype:
            raise Refused("type_mismatch", f"topic is event/{etype}, the payload's type differs")
        _check_window(model, window)
    except Refused as r:
        if kind == "event":
            _identity(obj, r)
        raise
    # the validated model, normalised (defaults filled in, lax input such as "3" for 3 made typed):
    # what is stored and what every page reads, never the text that came
    return Parsed(kind, unit, model, model.model_dump_json())


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _check_window(model: pydantic.BaseModel, window: Window | None) -> None:
    ts = getattr(model, "ts", None)
    if window is None or not isinstance(ts, datetime):
        return
    try:
        ahead = (ts - window.now).total_seconds()
    except OverflowError:  # year 1 with a zone east of UTC: before anything we keep
        raise Refused("ts_out_of_window", "expected ts after year 1, got one before it") from None
    if ahead > window.max_future_s:
        raise Refused(
            "ts_out_of_window",
            f"expected ts at most {window.max_future_s:.0f} s after receipt, got {ahead:.0f} s ahead",
        )
    if -ahead > window.max_past_s:
        raise Refused(
            "ts_out_of_window",
            f"expected ts at most {window.max_past_s / 86400:.0f} days before receipt, "
            f"got {-ahead / 86400:.0f} days",
        )


def _parse_topic(t: str) -> tuple[str, str, str | None]:
    parts = t.split("/")
    if "/".join(parts[:2]) != TOPIC_ROOT or len(parts) < 4:
        raise Refused("bad_topic", f"expected {TOPIC_ROOT}/<unit>/<kind>, got {t!r}")
    unit, kind = parts[2], parts[3]
    if kind == "cmd_response" and len(parts) >= 5:  # answers to our replay requests
        return "response", unit, None
    if kind in ("status", "state", "telemetry") and len(parts) == 4:
        return kind, unit, None
    if kind == "event" and len(parts) == 5 and parts[4] in EVENT_TYPES:
        return kind, unit, parts[4]
    raise Refused(
        "bad_topic", f"expected status, state, telemetry or event/<{'|'.join(EVENT_TYPES)}>, got {t!r}"
    )


def _validate(kind: str, text: str) -> pydantic.BaseModel:
    try:
        if kind == "event":
            return parse_event(text)
        models: dict[str, type[pydantic.BaseModel]] = {
            "status": Status,
            "state": UnitState,
            "telemetry": Telemetry,
            "response": CommandResponse,
        }
        model = models[kind]
        return model.model_validate_json(text)
    except pydantic.ValidationError as e:
        err = e.errors(include_input=False, include_url=False)[0]
        parts = [x if isinstance(x, int) or FIELD.fullmatch(x) else "?" for x in err["loc"]]
        if err["type"] == "extra_forbidden":
            parts[-1:] = ["<a field the schema does not have>"]
        where = ".".join(str(x) for x in parts)[:200]
        raise Refused("invalid_payload", f"{kind}: field {where}: {err['msg'][:300]}") from None


@dataclass
class Gap:
    acked: int
    since: float
    known: int = 0  # the highest seq known to exist (committed, or announced by the unit's state)
    requested_at: float | None = None
    requests: int = 0  # replay requests sent for this gap: each waits twice as long, capped


@dataclass
class BatchResult:
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    other: int = 0
    units: set[str] = field(default_factory=set)
    lowest_new_seq: dict[str, int] = field(default_factory=dict)  # per unit, among events first seen now


class Ingestor:
    """Writes classified messages to the store; tracks seq gaps on an injected clock."""

    def __init__(
        self, store: Store, config: CentralConfig, clock: Clock, publish: Publish, response_suffix: str
    ) -> None:
        self.store, self.config, self.clock, self.publish = store, config, clock, publish
        self.response_suffix = (
            response_suffix  # replies come on <unit>/cmd_response/<suffix> (the ACL's place)
        )
        self.responses_received = 0
        self.log = log.get("ingest")
        self._known = store.known_units()
        self._gaps: dict[str, Gap] = {}
        self._pending_status: dict[str, Status] = {}
        self.replays_requested = 0
        self._lock = threading.Lock()
        self._hold_sent: dict[tuple[str, str, bool], float] = {}
        self._hold_out: list[tuple[str, LotHoldCommand]] = []

    # ---------------------------------------------------------------- batch
    def process(self, msgs: Sequence[Incoming]) -> BatchResult:
        """Classify and commit one batch. Raises only when the database itself fails (nothing committed)."""
        cfg = self.config.ingest
        window = Window(self.clock.now(), cfg.max_future_s, cfg.max_past_days * 86400)
        items = [(m, classify(m, cfg.max_payload_bytes, window)) for m in msgs]
        items.sort(key=lambda it: _order(it[1]))
        for attempt in range(5):
            try:
                result = self._commit(items)
                break
            except Exception as e:
                if attempt == 4 or not self.store.is_retryable(e):
                    raise
                self.log.warning("batch_retry", error=str(e), attempt=attempt + 1)
        self._after_commit(result.units)
        self._send_holds()
        return result

    def process_each(self, msgs: Sequence[Incoming]) -> None:
        """One message per transaction; one that fails on its own (not the database) is refused as
        internal_error so a single poisonous message never stops ingest."""
        for m in msgs:
            try:
                self.process([m])
            except Exception as e:
                # the error's type only: its text may quote the payload
                self.log.error("message_failed", topic=m.topic[:200], error=type(e).__name__,
                               bytes=len(m.payload))
                with self.store.tx() as tx:  # raises again if the database itself is the problem
                    now = self.clock.now()
                    self.store.count_reject(tx, "internal_error", m.topic, type(e).__name__, now)
                    unit = _topic_unit(m.topic)
                    if unit is not None:
                        self.store.quarantine(tx, unit, m.topic, "internal_error", type(e).__name__,
                                              len(m.payload), None, None, now,
                                              self.config.ingest.quarantine_per_unit)

    def _commit(self, items: list[tuple[Incoming, Parsed | Rejected]]) -> BatchResult:
        """Rows are locked in one global order by every writer (units rows by unit, then events by
        (unit, event_id), then stock by (unit, column), then counters by name), so concurrent
        writers on PostgreSQL wait for each other but never deadlock."""
        result, now = BatchResult(), self.clock.now()
        refused: list[tuple[Incoming, Rejected]] = []
        stock: dict[tuple[str, int], tuple[int, int, datetime]] = {}
        events: list[Parsed] = []  # in (unit, event_id) order: the batch is sorted that way
        with self.store.tx() as tx:
            for msg, c in items:
                if isinstance(c, Parsed) and c.kind != "response" and not self._admit(tx, c, now):
                    c = Rejected(
                        "unknown_unit", f"expected an enrolled unit, got {c.unit!r}", c.unit, len(msg.payload)
                    )
                if isinstance(c, Rejected):
                    refused.append((msg, c))
                elif c.kind == "event":
                    events.append(c)
                else:
                    self._apply(tx, c, now, result, stock)
            self._insert_events(tx, events, now, result, stock)
            self.store.move_stock(tx, stock)
            for unit, seq in sorted(result.lowest_new_seq.items()):
                self.store.flag_reused_seq(tx, unit, seq, now)
            for msg, r in sorted(refused, key=lambda mr: mr[1].reason):
                self.store.count_reject(tx, r.reason, msg.topic, r.detail, now)
                if r.unit is not None:
                    self.store.quarantine(tx, r.unit, msg.topic, r.reason, r.detail, r.size, r.seq,
                                          r.event_id, now, self.config.ingest.quarantine_per_unit)
            result.rejected = len(refused)
            self.store.bump_many(
                tx,
                {
                    "events_duplicate": result.duplicates,
                    "events_inserted": result.inserted,
                    "messages": len(items),
                },
            )
        for msg, r in refused:
            self.log.warning(
                "ingest_refused", reason=r.reason, detail=r.detail, topic=msg.topic[:200], bytes=r.size,
                seq=r.seq,
            )
        return result

    def _admit(self, tx: Tx, c: Parsed, now: datetime) -> bool:
        if c.unit in self._known:
            return True
        self._known = {r[0] for r in tx.rows("SELECT unit FROM units")}
        if c.unit in self._known:
            return True
        if c.kind == "status" and self.config.enrollment.from_state:
            assert isinstance(c.model, Status)
            self._pending_status[c.unit] = c.model
        if c.kind == "state" and self.config.enrollment.from_state:
            assert isinstance(c.model, UnitState)
            self.store.enroll(tx, c.unit, c.model.site, "state", now)
            self._known.add(c.unit)
            self.log.info("unit_enrolled", unit=c.unit, site=c.model.site)
            return True
        return False

    def _insert_events(
        self,
        t: Tx,
        events: list[Parsed],
        now: datetime,
        result: BatchResult,
        stock: dict[tuple[str, int], Any],
    ) -> None:
        """All the batch's events in a few multi-row statements (not one round trip each); only the
        copies this transaction inserted count and move stock."""
        if not events:
            return
        models: list[tuple[EventBase, str]] = []
        for c in events:
            assert isinstance(c.model, EventBase)
            models.append((c.model, c.raw))
        inserted = self.store.insert_events(t, models, now)
        low = result.lowest_new_seq
        for ev, _raw in models:
            unit = ev.unit
            result.units.add(unit)
            if (unit, ev.event_id) not in inserted:
                result.duplicates += 1
                continue
            inserted.discard((unit, ev.event_id))  # a second copy in this batch is a duplicate
            result.inserted += 1
            low[unit] = min(low.get(unit, ev.seq), ev.seq)
            if isinstance(ev, DispenseEvent | RestockEvent):
                key = (unit, ev.column)
                if key not in stock or stock[key][0] < ev.seq:
                    stock[key] = (ev.seq, ev.stock_after, ev.ts)

    def _apply(
        self, t: Tx, c: Parsed, now: datetime, result: BatchResult, stock: dict[tuple[str, int], Any]
    ) -> None:
        if c.kind == "event":
            self._insert_events(t, [c], now, result, stock)
        elif c.kind == "state":
            assert isinstance(c.model, UnitState)
            self.store.put_state(t, c.model, c.raw, now)
            self._reconcile_holds(t, c.model)
            pending = self._pending_status.pop(c.unit, None)
            if pending is not None:
                self.store.put_status(t, c.unit, pending, now)
            result.units.add(c.unit)
            result.other += 1
        elif c.kind == "status":
            assert isinstance(c.model, Status)
            self.store.put_status(t, c.unit, c.model, now)
            result.other += 1
        elif c.kind == "telemetry":
            assert isinstance(c.model, Telemetry)
            self.store.put_telemetry(t, c.model, c.raw)
            tm = c.model
            samples = [(x.ts, x.celsius) for x in tm.samples] or (
                [(tm.ts, tm.temperature_c)] if tm.temperature_c is not None else []
            )
            # a reading no storage space can have is a sensor fault, not history (and 1e308 would
            # overflow the bucket's sum on PostgreSQL and fail the whole batch)
            samples = [(at, c) for at, c in samples if CELSIUS_MIN <= c <= CELSIUS_MAX]
            self.store.add_temperatures(t, c.unit, samples, self.config.temperature_history.bucket_s)
            result.other += 1
        else:
            self.log.info("command_response", unit=c.unit, response=c.model.model_dump(mode="json"))
            self.responses_received += 1
            result.other += 1

    # ---------------------------------------------------------------- recall holds
    HOLD_RESEND_S = 30.0

    def _reconcile_holds(self, t: Tx, state: UnitState) -> None:
        """A unit whose state shows a recalled lot without its hold (it was offline, or loaded the lot
        since) is told again; one whose recall hold central released is told to release. Sent after
        the batch commits; the same order at most every HOLD_RESEND_S per unit and lot."""
        held = {
            r[0]: (r[1], r[2])
            for r in t.rows("SELECT lot, reason, held_by FROM lot_holds WHERE kind = 'recall'")
        }
        present = {seg.lot for col in state.columns for seg in col.lots if seg.lot} | {
            col.lot for col in state.columns if col.lot
        }
        unit_recalls = {h.lot for h in state.holds if h.kind == "recall"}
        now = self.clock.monotonic()
        for lot in sorted(present & held.keys() - unit_recalls):
            self._queue_hold(state.unit, lot, True, *held[lot], now)
        for lot in sorted(unit_recalls - held.keys()):
            self._queue_hold(state.unit, lot, False, "released at central", "central", now)

    def _queue_hold(self, unit: str, lot: str, hold: bool, reason: str, by: str, now: float) -> None:
        key = (unit, lot, hold)
        with self._lock:
            last = self._hold_sent.get(key)
            if last is not None and now - last < self.HOLD_RESEND_S:
                return
            self._hold_sent[key] = now
            cmd = LotHoldCommand(
                command_id=f"lot-{uuid.uuid4().hex[:16]}",
                issued_at=self.clock.now(),
                lot=lot,
                hold=hold,
                reason=reason[:300] or "recall",
                by=by[:64] or "central",
            )
            self._hold_out.append((unit, cmd))

    def _send_holds(self) -> None:
        with self._lock:
            out, self._hold_out = self._hold_out, []
        for unit, cmd in out:
            self.publish(
                topic(unit, "cmd", "lot_hold"),
                cmd.model_dump_json().encode(),
                1,
                topic(unit, "cmd_response", self.response_suffix),
                cmd.command_id.encode(),
                3600,
            )
            self.log.warning(
                "lot_hold_sent", unit=unit, lot=cmd.lot, hold=cmd.hold, command_id=cmd.command_id
            )

    # ---------------------------------------------------------------- acks and gaps
    def _after_commit(self, units: set[str]) -> None:
        if units:
            for p in self.store.advance_acked_many(sorted(units)):
                self._progress(p, announce=True)

    def _progress(self, p: SeqProgress, announce: bool) -> None:
        if p.paused:  # numbering restarted at the unit: an ack would prune events we have not seen
            with self._lock:
                self._gaps.pop(p.unit, None)
            return
        if announce and p.acked_seq > 0:
            self.publish(
                topic(p.unit, "ack"),
                Ack(acked_seq=p.acked_seq).model_dump_json().encode(),
                1,
                None,
                None,
                None,
            )
        with self._lock:
            if p.max_seq <= p.acked_seq:
                self._gaps.pop(p.unit, None)
                return
            gap = self._gaps.get(p.unit)
            if gap is None or gap.acked != p.acked_seq:
                gap = self._gaps[p.unit] = Gap(p.acked_seq, self.clock.monotonic())
            gap.known = max(gap.known, p.max_seq)

    def tick(self) -> list[ReplayCommand]:
        """Re-check open gaps against the database; ask for a replay of any that outlived the timeout."""
        with self._lock:
            units = list(self._gaps)
        for p in self.store.advance_acked_many(units) if units else []:
            self._progress(p, announce=False)
        return self._request_replays()

    def check_all(self) -> None:
        """Look at every unit once (start-up, and now and then): finds gaps no new event would reveal."""
        for p in self.store.advance_acked_many(sorted(self.store.known_units())):
            self._progress(p, announce=False)

    def _request_replays(self) -> list[ReplayCommand]:
        """Ask for what is missing after gap_timeout_s, then after twice as long each time, capped at
        replay_backoff_max_s: from the first missing seq to the end of the hole (the next committed seq,
        or the last the unit announced), at most replay_max_seqs of them per request. Never while the
        next missing seq sits in quarantine: the same event would be refused again; staff release it
        (after upgrading central) or accept it as a gap."""
        cfg = self.config.ingest
        timeout, now, sent = cfg.gap_timeout_s, self.clock.monotonic(), []

        def wait(g: Gap) -> float:
            return float(min(timeout * 2 ** min(g.requests, 30), max(cfg.replay_backoff_max_s, timeout)))

        with self._lock:
            due = [
                (u, g)
                for u, g in self._gaps.items()
                if now - g.since >= timeout and (g.requested_at is None or now - g.requested_at >= wait(g))
            ]
        held = self.store.quarantined_seqs([u for u, _ in due]) if due else {}
        due = [(u, g) for u, g in due if g.acked + 1 not in held.get(u, set())]
        ends = self.store.gap_ends({u: g.acked for u, g in due}) if due else {}
        with self._lock:
            for _, g in due:
                g.requested_at = now
                g.requests += 1
        for unit, g in due:
            # only what is missing: up to the next committed seq (or the last one known), capped
            last = ends[unit] - 1 if unit in ends else g.known
            to_seq = max(g.acked + 1, min(last, g.acked + cfg.replay_max_seqs))
            cmd = ReplayCommand(
                command_id=f"replay-{uuid.uuid4().hex[:16]}",
                issued_at=self.clock.now(),
                from_seq=g.acked + 1,
                to_seq=to_seq,
            )
            self.publish(
                topic(unit, "cmd", "replay"),
                cmd.model_dump_json().encode(),
                1,
                topic(unit, "cmd_response", self.response_suffix),
                cmd.command_id.encode(),
                int(max(timeout * 2, 60)),
            )
            self.log.warning(
                "replay_requested", unit=unit, from_seq=g.acked + 1, to_seq=to_seq, command_id=cmd.command_id,
                request=g.requests,
            )
            sent.append(cmd)
            self.replays_requested += 1
        return sent

    def open_gaps(self) -> dict[str, int]:
        with self._lock:
            return {u: g.acked + 1 for u, g in self._gaps.items()}


def _order(c: Parsed | Rejected) -> tuple[int, str, int, str]:
    """The batch's write order: units rows by unit (state before status before telemetry, so a unit
    enrolled by its state is known to the rest of its batch), then events by (unit, event_id)."""
    if isinstance(c, Rejected):
        return (3, c.reason, 0, "")
    if c.kind in ("state", "status", "telemetry"):
        return (0, c.unit, ("state", "status", "telemetry").index(c.kind), "")
    if c.kind == "event":
        return (1, c.unit, 0, getattr(c.model, "event_id", ""))
    return (2, c.unit, 0, "")
