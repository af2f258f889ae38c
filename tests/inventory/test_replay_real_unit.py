"""Replay with a real unit: a unit installed before it was registered centrally. Its events are
refused (unknown unit), the operator adds it and restarts the service, the service finds the gap
from the unit's retained state and asks for a replay; the unit's reporter sends its outbox again."""

from __future__ import annotations

from pathlib import Path

from inventory.clock import RealClock
from inventory.config import CentralConfig
from inventory.service import Service
from nalox.broker import Broker
from tests.inventory.conftest import make_config
from tests.inventory.mqttutil import wait_for
from tests.inventory.simunit import make_clip, start_unit


def central_config(tmp_path: Path, port: int, units: int) -> CentralConfig:
    return make_config(
        units,
        mqtt={"port": port, "client_id": "central-replay"},
        store={"db": str(tmp_path / "central.db")},
        ingest={"gap_timeout_s": 0.5},
    )


def test_unregistered_unit_is_replayed_after_it_is_added(broker: Broker, tmp_path: Path) -> None:
    unit = start_unit(
        "unit-001",
        "Site B",
        tmp_path / "unit",
        broker.port,
        make_clip(tmp_path / "clips"),
        stock=5,
        ack_resend_s=3600,  # only a replay command makes it send again
    )
    try:
        first = Service(central_config(tmp_path, broker.port, units=0), RealClock(), http=False, alerts=False)
        with first:
            assert first.wait_connected(10)
            store = first.store
            assert store is not None
            wait_for(lambda: store.rejects().get("unknown_unit", {}).get("count", 0) > 0, 20, "refusals")
            for n in (1, 2):
                unit.press()
                wait_for(lambda n=n: unit.physical_dropped() == n, 30, f"kit {n} dropped")  # type: ignore[misc]
            last = unit.daemon.ledger.last_seq()
            wait_for(lambda: store.rejects()["unknown_unit"]["count"] >= last, 20, "every event refused")
            assert store.count_events() == 0
        second = Service(
            central_config(tmp_path, broker.port, units=1), RealClock(), http=False, alerts=False
        )
        with second:
            store2 = second.store
            assert store2 is not None

            def caught_up() -> bool:
                row = store2.unit("unit-001")
                return row is not None and row.acked_seq == last and row.stock == unit.physical_stock()

            wait_for(caught_up, 30, "the replayed events to fill the gap")
            assert second.runtime()["replays_requested"] >= 1, "filled by a replay, not by chance"
            wait_for(
                lambda: second.runtime()["command_responses"] >= 1, 10, "the unit's answer to the replay"
            )
            assert store2.count_events("dispense", "unit-001") == unit.physical_dropped() == 2
            assert store2.count_events(unit="unit-001") == last
            wait_for(lambda: unit.daemon.ledger.acked_seq() == last, 20, "the unit to prune on our ack")
    finally:
        unit.stop()
