"""Reports per language: kits and videos counted by the language each person chose at the machine."""

from __future__ import annotations

from datetime import date

from inventory import reports
from inventory.clock import FakeClock
from inventory.config import CentralConfig
from inventory.store import Store
from tests.inventory.gen import UnitStream
from tests.inventory.test_ingest import feed, ingestor


def test_kits_and_videos_per_language(store: Store, config: CentralConfig, clock: FakeClock) -> None:
    s = UnitStream("unit-001", "Site A")
    s.restock(0, 1, 20)
    for i in range(5):
        s.vend(10 + 10 * i, 1)
    # the second and fourth person chose Spanish: their video events and kit carry "es"
    spanish = {id(e) for e in s.events if getattr(e, "language", None)}
    per_person = [e for e in s.events if id(e) in spanish]
    chosen = per_person[3:6] + per_person[9:12]  # video started, completed, kit, for persons 2 and 4
    s.events = [e.model_copy(update={"language": "es"}) if e in chosen else e for e in s.events]
    ing, _ = ingestor(store, config, clock)
    feed(ing, s.messages(), batch=10)
    period = reports.date_range(date(2026, 9, 1), date(2026, 9, 30), "UTC")
    got = reports.period_report(store, period, "language")
    rows = {r["language"]: r for r in got}
    assert (rows["en"]["kits"], rows["en"]["videos_started"], rows["en"]["videos_completed"]) == (3, 3, 3)
    assert (rows["es"]["kits"], rows["es"]["videos_started"], rows["es"]["videos_completed"]) == (2, 2, 2)
    assert rows[""]["kits"] == 0, "events without a language (restocks) count no kit"
    assert "language" in reports.period_csv(list(rows.values()), period, "language").splitlines()[2]
