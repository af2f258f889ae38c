"""The reporter's outbox delivery as a hypothesis state machine, on the real ledger and a scripted client.

The client is a stand-in whose PUBACKs, refusals and connection losses the machine decides; the model is
the central store: what it received, what it acked. Invariants: the window is never exceeded, nothing
leaves the outbox before the central ack covers it, and a drain with a healthy broker always ends with
every event received and the outbox empty.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.clock import FakeClock
from controller.mqtt.client import CONNECTION_LOST, InboundMessage, MqttSettings, PublishHandle, PublishResult
from controller.mqtt.reporter import REFUSED_ALARM, Reporter
from schemas.models import parse_event
from tests.controller.mqtt.standins import StandInUnit, real_ledger

UNIT = "unit-sm"
WINDOW = 4


class ScriptedClient:
    """Publishes nothing; hands every QoS 1 event publish to the machine as a pending handle."""

    def __init__(self) -> None:
        self.pending: list[PublishHandle] = []
        self.connected = True

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        resend: bool = True,
        properties: dict[str, Any] | None = None,
    ) -> PublishHandle:
        data = payload.encode() if isinstance(payload, str) else payload
        handle = PublishHandle(topic, data, qos, retain, resend, properties)
        if "/event/" in topic:
            self.pending.append(handle)
        else:
            handle._resolve(PublishResult(1, 0, "Success"))
        return handle


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self.unit = StandInUnit(UNIT, self.clock)
        self.ledger = real_ledger(Path(self.tmp.name), UNIT, self.clock)
        settings_ = MqttSettings(
            inflight_window=WINDOW,
            refused_retry_s=5,
            ack_resend_s=60,
        )
        self.reporter = Reporter(settings_, self.unit, self.ledger, self.clock, unit_id=UNIT)
        self.client = ScriptedClient()
        self.reporter.client = self.client  # type: ignore[assignment]
        self.reporter._on_connected()
        self.received: set[int] = set()
        self.central_acked = 0

    def teardown(self) -> None:
        self.ledger.close()
        self.tmp.cleanup()

    def _pump(self) -> None:
        self.reporter._pump(self.clock.monotonic())
        self.reporter._check_ack_stall(self.clock.monotonic())
        self.reporter._update_alarms(self.clock.monotonic())

    @rule(n=st.integers(1, 6))
    def record_events(self, n: int) -> None:
        for _ in range(n):
            self.ledger.append_door()
        self._pump()

    @precondition(lambda self: self.client.pending)
    @rule(i=st.integers(0, 100), code=st.sampled_from([0x00, 0x10, 0x87, 0x97]))
    def puback(self, i: int, code: int) -> None:
        handle = self.client.pending.pop(i % len(self.client.pending))
        if code < 0x80:
            self.received.add(parse_event(handle.payload).seq)
        handle._resolve(PublishResult(1, code, hex(code)))
        self._pump()
        if code >= 0x80:
            assert REFUSED_ALARM in self.unit.alarms, "a refused PUBACK must raise the alarm"

    @rule()
    def connection_lost_and_back(self) -> None:
        lost, self.client.pending = self.client.pending, []
        for handle in lost:
            handle._resolve(PublishResult(0, CONNECTION_LOST, "lost"))
        self.reporter._on_connected()
        self._pump()

    @rule()
    def central_acks(self) -> None:
        while self.central_acked + 1 in self.received:
            self.central_acked += 1
        payload = json.dumps({"acked_seq": self.central_acked}).encode()
        self.reporter._handle_ack(
            InboundMessage(topic=f"nalox/v1/{UNIT}/ack", payload=payload, qos=1, retain=False)
        )
        self._pump()

    @rule(seconds=st.sampled_from([1.0, 6.0, 61.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._pump()

    @invariant()
    def window_is_never_exceeded(self) -> None:
        outstanding = set(self.reporter._inflight) | set(self.reporter._refused)
        assert len(outstanding) <= WINDOW
        assert len(self.client.pending) <= WINDOW

    @invariant()
    def nothing_leaves_before_the_central_ack(self) -> None:
        assert self.ledger.acked_seq() <= self.central_acked
        assert self.ledger.depth() == self.ledger.last_seq() - self.ledger.acked_seq()

    @invariant()
    def refusal_alarm_follows_refusals(self) -> None:
        if self.reporter._refused:
            assert REFUSED_ALARM in self.unit.alarms

    @rule()
    def healthy_broker_drains_everything(self) -> None:
        for _ in range(10 * (self.ledger.last_seq() + WINDOW)):
            if self.ledger.depth() == 0:
                break
            self.clock.advance(61)
            self._pump()
            while self.client.pending:
                self.puback(0, 0)
            self.central_acks()
        assert self.ledger.depth() == 0
        assert self.received >= set(range(1, self.ledger.last_seq() + 1))
        assert REFUSED_ALARM not in self.unit.alarms or not self.reporter._refused


OutboxMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestOutbox = OutboxMachine.TestCase
