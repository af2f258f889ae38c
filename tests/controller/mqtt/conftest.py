"""Fixtures for the MQTT tests: a stand-in unit and ledger, a reporter on the dev broker, a watcher."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.clock import RealClock
from controller.mqtt.client import MqttSettings
from controller.mqtt.reporter import Reporter
from nalox.broker import Broker
from tests.controller.mqtt.certs import Pki, make_certs
from tests.controller.mqtt.standins import SqliteLedger, StandInUnit, Watcher, real_ledger


def fast_settings(port: int, tmp_path: Path, **overrides: Any) -> MqttSettings:
    base: dict[str, Any] = dict(
        port=port,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
        connect_timeout_s=5,
        telemetry_interval_s=3600,
    )
    base.update(overrides)
    return MqttSettings(**base)


@pytest.fixture
def unit_id() -> str:
    return f"unit-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_reporter(broker: Broker, tmp_path: Path, unit_id: str) -> Iterator[Callable[..., Reporter]]:
    made: list[Reporter] = []
    ledgers: list[SqliteLedger] = []  # one per test unless a test brings its own: restarts keep the session

    def make(
        clock: Any = None,
        ledger: SqliteLedger | None = None,
        unit: StandInUnit | None = None,
        **overrides: Any,
    ) -> Reporter:
        clock = clock or RealClock()
        unit = unit or StandInUnit(unit_id, clock)
        if ledger is None:
            if not ledgers:
                ledgers.append(real_ledger(tmp_path, unit_id, clock))
            ledger = ledgers[0]
        reporter = Reporter(fast_settings(broker.port, tmp_path, **overrides), unit, ledger, clock)
        made.append(reporter)
        return reporter

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def watcher(broker: Broker, unit_id: str) -> Iterator[Watcher]:
    w = Watcher(broker.port, [f"nalox/v1/{unit_id}/#"])
    yield w
    w.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki") / "pki"
    make_certs(root, "init")
    for name in ("unit-a", "unit-b", "unit-c", "unit-outage"):
        make_certs(root, "unit", name)
    for name in ("inventory", "inventory-0", "dashboard", "operations"):
        make_certs(root, "service", name)
    make_certs(root, "revoke", "unit-c")
    return Pki(root)
