"""What `nalox demo` tells its user: the greeting with where to look, and at the end the three accounts
of every unit (its own ledger, the simulated board's physical truth, the central store), whether they
agree, and the `--summary` JSON file.

Access to a running demo belongs here too: the demo login printed next to the dashboard URL
(`greeting`) and the `api_token` of the summary file (DESIGN.md, "Command line")."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nalox.access import DemoAccess
from nalox.central_api import CentralApi

Stock = dict[str, int]  # column (as text) -> kits


@dataclass
class UnitAccount:
    """One unit, counted three ways."""

    unit_id: str
    ledger_dispensed: int
    ledger_stock: Stock
    sim_dropped: int
    sim_stock: Stock
    double_drops: int  # command ids the board dropped more than one kit for
    central_dispensed: int
    central_stock: Stock


def count_unit(
    unit_id: str, ledger_dispensed: int, ledger_stock: Stock, board_stats: dict[str, Any], central: CentralApi
) -> UnitAccount:
    """One unit's account from its ledger's figures, the board's `stats` and the central store's API."""
    return UnitAccount(
        unit_id=unit_id,
        ledger_dispensed=ledger_dispensed,
        ledger_stock=ledger_stock,
        sim_dropped=int(board_stats["dropped"]),
        sim_stock={str(c): int(n) for c, n in board_stats["stock"].items()},
        double_drops=len(board_stats.get("double_drops", [])),
        central_dispensed=central.dispense_count(unit_id),
        central_stock=central.stock(unit_id),
    )


@dataclass
class Summary:
    presses: int
    units: list[str]
    ledger_dispensed: int
    sim_dropped: int
    central_dispensed: int
    double_drops: int
    stock: dict[str, dict[str, Stock]]  # "ledger" | "sim" | "central" -> unit -> column -> kits
    api_token: str | None = field(default=None)  # a viewer token for scripts, once the demo makes one

    @classmethod
    def of(cls, presses: int, accounts: list[UnitAccount]) -> Summary:
        return cls(
            presses=presses,
            units=[a.unit_id for a in accounts],
            ledger_dispensed=sum(a.ledger_dispensed for a in accounts),
            sim_dropped=sum(a.sim_dropped for a in accounts),
            central_dispensed=sum(a.central_dispensed for a in accounts),
            double_drops=sum(a.double_drops for a in accounts),
            stock={
                "ledger": {a.unit_id: a.ledger_stock for a in accounts},
                "sim": {a.unit_id: a.sim_stock for a in accounts},
                "central": {a.unit_id: a.central_stock for a in accounts},
            },
        )

    def agrees(self) -> bool:
        """Ledger, board and central store count the same kits and the same stock per column."""
        st = self.stock
        return (
            self.ledger_dispensed == self.sim_dropped == self.central_dispensed
            and st["ledger"] == st["sim"] == st["central"]
        )

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def line(self) -> str:
        verdict = "agree" if self.agrees() else "DIFFER"
        return (
            f"presses {self.presses}: ledger {self.ledger_dispensed}, simulator {self.sim_dropped}, "
            f"central {self.central_dispensed} ({verdict})"
        )

    def report(self, path: Path | None) -> None:
        """The verdict line on stdout; the JSON file at `path` when asked for."""
        print(self.line(), flush=True)
        if path is not None:
            path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")


def greeting(
    http_port: int, mqtt_port: int, link: Path | None = None, access: DemoAccess | None = None
) -> str:
    """Where to look while the demo runs and how to sign in; with a board's `link`, how to press its
    button by hand."""
    nalox = Path(sys.executable).parent / "nalox"  # the venv's command: not on a new user's PATH
    lines = [f"dashboard: http://127.0.0.1:{http_port}/   broker: mqtt://127.0.0.1:{mqtt_port}"]
    if access is not None:
        lines.append(f"sign in as {access.login} / {access.password}   (admin; made for this demo)")
        lines.append(
            f"API token (viewer): {access.api_token}   e.g. curl -H 'Authorization: Bearer <token>' "
            f"http://127.0.0.1:{http_port}/api/units"
        )
    if link is not None:
        lines.append(f"press the button yourself: {nalox} sim ctl --link {link} press [--lang es]")
    lines.append(f"watch the topics: mosquitto_sub -p {mqtt_port} -V mqttv5 -v -t 'nalox/v1/#'")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)
