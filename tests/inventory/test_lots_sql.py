"""The lots page read in SQL from the tables kept from each unit's state equals the fresh computation
from every unit's state (inventory.planning.fleet_lots) on both backends, for a generated fleet: lot
queues and single-lot columns, counted stock overriding the state's, a counted column no state
describes, zero-count and unnamed segments, heat exposure, the units' own holds and central's holds,
kits dispensed; every filter and every page; and again after states change."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from inventory import planning
from inventory.fleet import fleet
from inventory.planning import LotView, fleet_lots, lots_page
from inventory.store import Store
from schemas.models import ColumnState, DispenseEvent, LotExposure, LotHold, LotSegment, UnitState
from tests.inventory.gen import vending_state

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LOTS = [f"L{i:02d}" for i in range(14)] + [None, ""]
PRODUCTS = ["nasal-4mg", "im-5mg"]


def _segment(rng: random.Random) -> LotSegment:
    exposure = None
    if rng.random() < 0.6:
        exposure = LotExposure(
            seconds_outside_label=rng.choice([0.0, 600.0, 7200.0]),
            seconds_in_excursion=rng.choice([0.0, 60.0]),
            mkt_c=rng.choice([None, 21.5, 23.25, 26.0]),
        )
    return LotSegment(
        lot=rng.choice(LOTS),
        expiry=rng.choice([None, date(2027, 1, 1) + timedelta(days=rng.randrange(0, 700))]),
        count=rng.choice([0, 1, 3, 6]),
        exposure=exposure,
    )


def _state(rng: random.Random, unit: str, site: str, at: datetime) -> UnitState:
    cols = []
    for n in range(1, rng.randrange(2, 5)):
        segs = [_segment(rng) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
        first = segs[0] if segs else _segment(rng)
        cols.append(
            ColumnState(
                column=n,
                product=rng.choice(PRODUCTS),
                capacity=20,
                par=5,
                stock=sum(s.count for s in segs) if segs else rng.choice([0, 4, 9]),
                lot=first.lot,
                expiry=first.expiry,
                lots=segs,
            )
        )
    holds = [
        LotHold(lot=lot, kind=rng.choice(["heat", "recall"]), reason=f"r{unit}", by="unit", since=at)
        for lot in rng.sample(["L01", "L05", "L09", "L99"], rng.randrange(0, 3))
    ]
    return vending_state(unit, site, at, cols, holds=holds)


def build(store: Store, rng: random.Random, at: datetime) -> list[str]:
    units = [(f"unit-{i:03d}", f"Site {'ABCDE'[rng.randrange(5)]}", None) for i in range(1, 41)]
    store.sync_config_units(units, at)
    with store.tx() as tx:
        for unit, site, _ in units[:-1]:  # the last unit never sent a state
            state = _state(rng, unit, site, at)
            store.put_state(tx, state, state.model_dump_json(), at)
        counted = {
            (u, c): (1, rng.choice([0, 2, 5]), at) for u, _, _ in units for c in (1, 9) if rng.random() < 0.3
        }
        store.move_stock(tx, counted)
        kits = [
            DispenseEvent(
                event_id=f"kit-{i:08d}",
                seq=i + 1,
                ts=at - timedelta(days=1),
                unit="unit-001",
                column=1,
                product="nasal-4mg",
                doses=2,
                command_id=i + 1,
                via="video",
                stock_after=3,
                lot=rng.choice(["L00", "L03", "L07"]),
            )
            for i in range(12)
        ]
        store.insert_events(tx, [(e, e.model_dump_json()) for e in kits], at)
    store.hold_lot("L03", "recall", "notice 1", "inventory", at)
    store.hold_lot("L77", "recall", "in no column", "inventory", at)
    return [u for u, _, _ in units]


def fresh(store: Store, at: datetime) -> list[LotView]:
    return fleet_lots(fleet(store, at), store.lot_holds(), store.dispensed_by_lot_fresh())


def check(store: Store, at: datetime) -> None:
    want = fresh(store, at)
    got = lots_page(store, limit=None)
    assert got.lots == want
    assert got.total == len(want)
    assert got.products == sorted({v.product for v in want})
    assert got.sites == sorted({s for v in want for s in v.sites})
    for product, site, text in [
        ("nasal-4mg", "", ""),
        ("im-5mg", "", ""),
        ("?", "", ""),
        ("", "Site A", ""),
        ("", "Site C", ""),
        ("", "", "l0"),
        ("", "", "no"),
        ("nasal-4mg", "Site B", "L1"),
    ]:
        shown = [
            v
            for v in want
            if (not product or v.product == product)
            and (not site or site in v.sites)
            and (not text or text.lower() in v.lot.lower())
        ]
        for offset in range(0, len(shown) + 7, 7):
            page = lots_page(store, product, site, text, offset, 7)
            assert page.lots == shown[offset : offset + 7], (product, site, text, offset)
            assert page.total == len(shown)


def test_lots_page_in_sql_equals_the_fresh_computation(store: Store) -> None:
    rng = random.Random(15)
    units = build(store, rng, NOW)
    want = fresh(store, NOW)
    assert len(want) >= 10 and any(v.unit_holds for v in want) and any(v.hold for v in want)
    assert any(v.dispensed for v in want) and any(v.worst_mkt_c is not None for v in want)
    assert any(v.lot == "(no lot)" for v in want) and any(v.product == "?" for v in want)
    check(store, NOW)
    later = NOW + timedelta(hours=2)
    with store.tx() as tx:  # new states: queues replaced, holds dropped or added
        for unit in units[:20]:
            state = _state(rng, unit, "Site A", later)
            store.put_state(tx, state, state.model_dump_json(), later)
        store.move_stock(tx, {(units[3], 1): (9, 0, later), (units[4], 2): (9, 1, later)})
    store.release_lot("L03", "cleared", "inventory", later)
    check(store, later)
    assert planning.LOTS_PER_PAGE == 100
