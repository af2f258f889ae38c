"""Fixtures for the unit daemon tests: a config built in code, a daemon on fakes with a FakeClock."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.clock import FakeClock
from controller.config import UnitConfig, parse_config
from controller.daemon import UnitDaemon
from controller.fakes import FakeBoard, FakePlayer

BASE: dict[str, Any] = {
    "unit": {"id": "test-unit-1", "site": "Test site"},
    "serial": {"port": "/dev/null"},
    "products": {"nasal-4mg": {"name": "Naloxone nasal spray 4 mg", "doses": 2}},
    "columns": [
        {
            "column": c,
            "product": "nasal-4mg",
            "capacity": 30,
            "par": 5,
            "initial_stock": 20,
            "lot": f"LOT-{c}",
            "expiry": f"2028-0{c}-01",
        }
        for c in range(1, 7)
    ],
    "videos": {
        "files": {"en": "en.mp4", "es": "es.mp4"},
        "expected_length_s": 3.0,
        "grace_s": 10.0,
        "headless": True,
    },
    "policies": {"multi_kit_window_s": 60.0, "status_poll_s": 30.0},
    "paths": {"data_dir": "data"},
}


def make_config(tmp_path: Path, **sections: Any) -> UnitConfig:
    data = copy.deepcopy(BASE)
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(name), dict):
            data[name].update(values)
        else:
            data[name] = values
    return parse_config(data, source="test", base_dir=tmp_path)


class Rig:
    """A daemon on a FakeBoard and FakePlayer with a FakeClock, driven by pump()."""

    def __init__(
        self,
        tmp_path: Path,
        config: UnitConfig | None = None,
        board: FakeBoard | None = None,
        auto: str | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.config = config or make_config(tmp_path)
        self.clock = FakeClock()
        self.board = board or FakeBoard(columns=len(self.config.columns), stock=20)
        self.player = FakePlayer(self.clock, duration_s=3.0, auto=auto)
        self.daemon = UnitDaemon(self.config, self.board, self.player, self.clock)
        self.daemon.open()
        self.daemon.pump()

    def press(self, lang: str = "en") -> None:
        self.board.press(lang)
        self.daemon.pump()

    def complete(self) -> None:
        self.clock.advance(3.0)
        self.player.complete()
        self.daemon.pump()

    def events(self, kind: str) -> list[Any]:
        return self.daemon.ledger.events(event_type=kind)

    def restart(self) -> None:
        """A new daemon on the same ledger file and board (after a crash, the old one is just dropped)."""
        self.daemon.ledger.close()
        self.player = FakePlayer(self.clock, duration_s=3.0, auto=self.player.auto)
        self.daemon = UnitDaemon(self.config, self.board, self.player, self.clock)
        self.daemon.open()
        self.daemon.pump()

    def close(self) -> None:
        self.daemon.stop()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lot_rig(tmp_path: Path, stock: int, *lots: tuple[str, str], **sections: Any) -> Rig:
    """A rig with one nasal-4mg column (capacity 30, `stock` kits) per (lot, expiry), numbered from 1."""
    cols = [
        {"column": c, "product": "nasal-4mg", "capacity": 30, "initial_stock": stock, "lot": lot, "expiry": e}
        for c, (lot, e) in enumerate(lots, start=1)
    ]
    board = FakeBoard(columns=len(lots), stock=stock)
    return Rig(tmp_path, make_config(tmp_path, columns=cols, **sections), board)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()
