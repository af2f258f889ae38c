"""Central keeps a kit's time only at the privacy granularity, on both backends: the stored row, the
stored payload (every other field as the unit sent it) and the time it was received; a coarser
setting coarsens what is stored already, a finer one changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from inventory.clock import FakeClock
from inventory.store import Store
from schemas.models import DispenseEvent, DoorEvent, topic
from tests.inventory.conftest import make_config
from tests.inventory.test_ingest import feed, ingestor

EXACT = datetime(2026, 10, 3, 14, 37, 12, 345678, tzinfo=UTC)


def test_kit_times_are_coarsened_and_technician_events_are_not(store: Store, clock: FakeClock) -> None:
    ing, _ = ingestor(store, make_config(1), clock)
    kit = DispenseEvent(
        event_id="kit-00000001",
        seq=1,
        ts=EXACT,
        unit="unit-001",
        column=1,
        product="p",
        doses=2,
        lot="LOT-9",
        command_id=7,
        language="es",
        via="video",
        stock_after=4,
    )
    door = DoorEvent(event_id="door-0000001", seq=2, ts=EXACT, unit="unit-001", open=True)
    feed(ing, [(topic("unit-001", "event", e.type), e.model_dump_json().encode()) for e in (kit, door)])
    rows = {e.type: e for e in store.events("unit-001")}
    assert rows["dispense"].ts == datetime(2026, 10, 3, 14, 0, tzinfo=UTC)
    stored = json.loads(rows["dispense"].payload)
    sent = json.loads(kit.model_dump_json())
    assert stored.pop("ts") == "2026-10-03T14:00:00Z" and sent.pop("ts") != "2026-10-03T14:00:00Z"
    assert stored == sent, "every other field as the unit sent it"
    assert rows["door"].ts == EXACT, "a technician's door is not a person's kit"
    with store.tx() as tx:
        received = tx.rows("SELECT received_at FROM events")
    assert all(r[0].endswith(":00:00.000000Z") for r in received)
    assert store.use_kit_time_granularity(86400) == 1
    assert store.events("unit-001", type_="dispense")[0].ts == datetime(2026, 10, 3, tzinfo=UTC)
    assert store.use_kit_time_granularity(3600) == 0, "a finer setting cannot bring a time back"
