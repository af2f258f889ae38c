"""In-test stand-in for the unit daemon, the real ledger with a helper, and a paho watcher."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.clock import Clock
from controller.ledger import Ledger
from controller.mqtt.commands import CommandRefused, CommandResult, command_name
from schemas.models import AlarmState, ColumnState, CommandBase, DoorEvent, Telemetry, UnitState


class SqliteLedger(Ledger):
    """The real controller.ledger.Ledger, with a helper to record a door event."""

    def append_door(self, is_open: bool = True) -> DoorEvent:
        return self.record(DoorEvent, open=is_open)


def real_ledger(folder: Path, unit_id: str, clock: Clock) -> SqliteLedger:
    return SqliteLedger(folder / f"{unit_id}-{uuid.uuid4().hex[:6]}.sqlite", clock, unit_id=unit_id)


class Done(CommandResult):
    done: str


class StandInUnit:
    """What the reporter needs of the daemon: state, telemetry, commands, alarms. Records every call."""

    def __init__(self, unit_id: str, clock: Clock) -> None:
        self.unit_id, self.clock = unit_id, clock
        self.mode = "vending"
        self.alarms: dict[str, AlarmState] = {}
        self.alarm_log: list[tuple[str, str]] = []
        self.commands: list[tuple[str, CommandBase]] = []
        self.alarm_raised = threading.Event()

    def snapshot_state(self) -> UnitState:
        return UnitState(
            unit=self.unit_id,
            site="test-site",
            ts=self.clock.now(),
            mode=self.mode,  # type: ignore[arg-type]
            config_version="test",
            columns=[ColumnState(column=1, product="naloxone-4mg", capacity=20, par=5, stock=12)],
            alarms=list(self.alarms.values()),
            outbox_depth=0,
            last_seq=0,
        )

    def telemetry(self) -> Telemetry:
        return Telemetry(
            unit=self.unit_id, ts=self.clock.now(), temperature_c=21.5, uptime_s=1.0, outbox_depth=0
        )

    def run_command(self, cmd: CommandBase) -> Done:
        name = command_name(cmd)
        self.commands.append((name, cmd))
        if name == "test_vend" and self.mode != "service":
            raise CommandRefused(f"test_vend needs service mode, unit is in {self.mode} mode")
        if name == "lock":
            self.mode = "locked"
        if name == "unlock":
            self.mode = "vending"
        return Done(done=name)

    def raise_alarm(
        self, code: str, message: str, severity: str = "warning", column: int | None = None
    ) -> bool:
        self.alarms[code] = AlarmState(
            code=code,
            severity=severity,
            message=message,  # type: ignore[arg-type]
            since=self.clock.now(),
            column=column,
        )
        self.alarm_log.append(("raised", code))
        self.alarm_raised.set()
        return True

    def clear_alarm(self, code: str) -> bool:
        if self.alarms.pop(code, None) is None:
            return False
        self.alarm_log.append(("cleared", code))
        return True


class Watcher:
    """A plain paho v5 client: subscribes, collects messages, publishes commands and acks."""

    def __init__(
        self,
        port: int,
        filters: list[str],
        client_id: str | None = None,
        tls: dict[str, str] | None = None,
        connect: bool = True,
    ) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.filters = filters
        self.stash: list[paho.MQTTMessage] = []
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"w-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        if tls:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls["cert"], keyfile=tls["key"])
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.suback: list[int] = []  # reason codes of the last SUBACK (0x87: not authorized)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.port = port
        if connect:
            self.start()

    def start(self, timeout: float = 5.0) -> Watcher:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if self.filters:
            assert self.subscribed.wait(timeout), f"expected a SUBACK for {self.filters} within {timeout} s"
        return self

    def _on_subscribe(self, c: paho.Client, u: Any, mid: int, reasons: list[Any], p: Any) -> None:
        self.suback = [r.value for r in reasons]
        self.subscribed.set()

    def _on_connect(self, c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        self.connected.set()
        if self.filters:
            c.subscribe([(f, 1) for f in self.filters])

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, **props: Any
    ) -> paho.MQTTMessageInfo:
        properties = None
        if props:
            properties = Properties(PacketTypes.PUBLISH)
            for k, v in props.items():
                setattr(properties, k, v)
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        return info

    def next(self, topic: str | None = None, timeout: float = 5.0) -> paho.MQTTMessage:
        """The next message (on `topic` if given; others are kept for later calls) within `timeout` s."""
        for i, msg in enumerate(self.stash):
            if topic is None or msg.topic == topic:
                return self.stash.pop(i)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                break
            if topic is None or msg.topic == topic:
                return msg
            self.stash.append(msg)
        raise AssertionError(f"expected a message on {topic or 'any topic'} within {timeout} s, got none")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
