"""Commands staff send to a unit from the dashboard, through the central service's own broker identity.

Each command carries `issued_by` (the staff member's name), goes out on `nalox/v1/<unit>/cmd/<name>`
(QoS 1, never retained, v5 message expiry, response topic `nalox/v1/<unit>/cmd_response/<client id>`,
correlation data = command id) and is kept in `staff_commands`: `sent`, then `ok` / `error` with the
unit's answer, or `timeout` when no answer came within `[server] command_timeout_s`. Sending, the
answer and the time-out each land in the audit trail.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from inventory import log
from inventory.audit import Actor, AuditTrail
from inventory.clock import Clock
from inventory.config import CentralConfig
from inventory.mqtt import make_client, stop_client
from inventory.store import Store, StoreError, iso, parse_iso
from schemas.models import COMMANDS, TOPIC_ROOT, CommandResponse, topic

# what staff may send from the dashboard, with the role each needs
STAFF_COMMANDS = ("lock", "unlock", "set_lot", "diag", "test_vend", "replay")


class CommandError(StoreError):
    """A command staff asked for that cannot be sent (unknown name, bad field, no broker)."""


@dataclass(frozen=True)
class SentCommand:
    command_id: str
    unit: str
    name: str
    params: dict[str, Any]
    issued_by: str
    issued_at: datetime
    status: str  # sent | ok | error | timeout
    answer: dict[str, Any] | None
    answered_at: datetime | None


_COLS = "command_id, unit, name, params, issued_by, issued_at, status, answer, answered_at"


def _row(r: tuple[Any, ...]) -> SentCommand:
    return SentCommand(
        r[0],
        r[1],
        r[2],
        json.loads(r[3]),
        r[4],
        parse_iso(r[5]) or datetime.min,
        r[6],
        json.loads(r[7]) if r[7] else None,
        parse_iso(r[8]),
    )


def recent(store: Store, unit: str | None = None, limit: int = 20) -> list[SentCommand]:
    sql, params = f"SELECT {_COLS} FROM staff_commands", list[Any]()
    if unit:
        sql, params = sql + " WHERE unit = ?", [unit]
    with store.tx() as tx:
        rows = tx.rows(sql + " ORDER BY issued_at DESC LIMIT ?", [*params, limit])
    return [_row(r) for r in rows]


def get(store: Store, command_id: str) -> SentCommand | None:
    with store.tx() as tx:
        r = tx.one(f"SELECT {_COLS} FROM staff_commands WHERE command_id = ?", (command_id,))
    return _row(r) if r else None


class Commander:
    """One MQTT session (its own client id, the service's identity) for staff commands and their answers."""

    def __init__(self, config: CentralConfig, store: Store, clock: Clock, audit: AuditTrail) -> None:
        self.config, self.store, self.clock, self.audit = config, store, clock, audit
        self.client_id = config.mqtt.commands_client_id
        self.response_filter = f"{TOPIC_ROOT}/+/cmd_response/{self.client_id}"
        self.timeout = timedelta(seconds=config.server.command_timeout_s)
        self.log = log.get("commands")
        self.connected = threading.Event()
        self.answered = threading.Condition()
        self._stop = threading.Event()
        settings = config.mqtt
        if settings.commands_tls is not None:
            settings = settings.model_copy(update={"tls": settings.commands_tls})
        self.client = make_client(settings, self.client_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self._sweeper = threading.Thread(target=self._sweep_loop, name="commands-timeout", daemon=True)

    def start(self) -> Commander:
        self.client.connect_async(
            self.config.mqtt.host, self.config.mqtt.port, keepalive=self.config.mqtt.keepalive
        )
        self.client.loop_start()
        self._sweeper.start()
        return self

    def stop(self) -> None:
        stop_client(self.client, self._stop, self._sweeper, timeout=5)

    # ---------------------------------------------------------------- paho callbacks
    def _on_connect(self, client: paho.Client, userdata: object, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.log.error("mqtt_connect_refused", reason=str(reason))
            return
        client.subscribe([(self.response_filter, 1)])
        self.connected.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            parts = msg.topic.split("/")
            unit = parts[2]
            response = CommandResponse.model_validate_json(msg.payload)
        except (ValidationError, IndexError, UnicodeDecodeError) as e:
            self.log.warning("command_answer_refused", topic=msg.topic[:200], error=str(e)[:200])
            return
        try:
            self.record_answer(unit, response)
        except Exception as e:  # the database refused: the answer is logged, the page shows a time-out
            self.log.error("command_answer_not_stored", unit=unit, error=repr(e))

    # ---------------------------------------------------------------- sending
    def send(self, unit: str, name: str, fields: dict[str, Any], actor: Actor) -> SentCommand:
        if name not in STAFF_COMMANDS:
            raise CommandError(f"expected a command among {', '.join(STAFF_COMMANDS)}, got {name!r}")
        now = self.clock.now()
        command_id = f"staff-{uuid.uuid4().hex[:20]}"
        try:
            cmd = COMMANDS[name].model_validate(
                {"command_id": command_id, "issued_at": now, "issued_by": actor.name[:64], **fields}
            )
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise CommandError(f"{name}: field {where}: {err['msg']} (found {err.get('input')!r})") from e
        if not self.connected.is_set():
            raise CommandError("not connected to the MQTT broker: nothing was sent, try again shortly")
        params = {k: v for k, v in cmd.model_dump(mode="json").items() if k in fields}
        with self.store.tx() as tx:
            tx.execute(
                f"INSERT INTO staff_commands ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, 'sent', NULL, NULL)",
                (command_id, unit, name, json.dumps(params), actor.name, iso(now)),
            )
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topic(unit, "cmd_response", self.client_id)
        props.CorrelationData = command_id.encode()
        props.MessageExpiryInterval = max(1, int(self.timeout.total_seconds()))
        self.client.publish(topic(unit, "cmd", name), cmd.model_dump_json().encode(), qos=1, properties=props)
        self.audit.record(actor, f"command_{name}", now, target=unit, outcome="sent", after=params)
        self.log.info("command_sent", unit=unit, name=name, command_id=command_id, issued_by=actor.name)
        sent = get(self.store, command_id)
        assert sent is not None
        return sent

    def record_answer(self, unit: str, response: CommandResponse) -> None:
        if not response.command_id:
            return
        sent = get(self.store, response.command_id)
        if sent is None or sent.unit != unit:
            return  # another client's command (replays from ingest) or a forged unit
        now = self.clock.now()
        answer = response.model_dump(mode="json", exclude_none=True)
        size = len(json.dumps(answer))
        audited = (
            answer
            if size <= 2000
            else {  # a diagnostics report is long: the unit page has it whole
                "status": response.status,
                "result": f"{size} bytes: on the unit's page and in /api/units/{unit}/commands",
            }
        )
        with self.store.tx() as tx:
            n = tx.execute(
                "UPDATE staff_commands SET status = ?, answer = ?, answered_at = ? "
                "WHERE command_id = ? AND status IN ('sent', 'timeout')",
                (response.status, json.dumps(answer), iso(now), response.command_id),
            )
        if n != 1:
            return  # a repeated answer
        self.audit.record(
            Actor(sent.issued_by, None, "mqtt", unit),
            f"command_{sent.name}",
            now,
            target=unit,
            outcome="answered" if response.status == "ok" else "failed",
            before=sent.params,
            after=audited,
            detail=f"the unit answered {response.status}"
            + (f": {response.reason}" if response.reason else ""),
        )
        self.log.info("command_answered", unit=unit, command_id=response.command_id, status=response.status)
        with self.answered:
            self.answered.notify_all()

    def sweep(self) -> int:
        """Mark commands whose answer is overdue as timed out; returns how many."""
        now = self.clock.now()
        with self.store.tx() as tx:
            rows = tx.rows(
                f"SELECT {_COLS} FROM staff_commands WHERE status = 'sent' AND issued_at < ?",
                (iso(now - self.timeout),),
            )
            for r in rows:
                tx.execute("UPDATE staff_commands SET status = 'timeout' WHERE command_id = ?", (r[0],))
        for c in map(_row, rows):
            self.audit.record(
                Actor(c.issued_by, None, "mqtt", c.unit),
                f"command_{c.name}",
                now,
                target=c.unit,
                outcome="timeout",
                before=c.params,
                detail=f"no answer within {self.timeout.total_seconds():.0f} s",
            )
        return len(rows)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sweep()
            except Exception as e:
                self.log.error("command_sweep_failed", error=repr(e))
