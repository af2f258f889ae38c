"""Replay with a real unit: a unit installed before it was registered centrally. Its events are
refused (unknown unit), the operator adds it and restarts the service, the service finds the gap
from the unit's retained state and asks for a replay; the unit's reporter sends its outbox again.
Run on the development broker and on the production one (TLS client certificates + the real ACL),
where the unit may answer only under nalox/v1/<unit>/cmd_response/... and the service logs in as
`inventory`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inventory.clock import RealClock
from inventory.config import CentralConfig
from inventory.service import Service
from nalox.broker import DEPLOY, Broker, production_replacements
from nalox.simunit import start_unit
from tests.inventory.conftest import make_config, sim_spec
from tests.waiting import wait_for

MAKE_CERTS = DEPLOY.parent / "pki" / "make-certs.sh"


@dataclass(frozen=True)
class BrokerUnderTest:
    port: int
    unit_tls: dict[str, str] | None = None
    central_tls: dict[str, str] | None = None


def client_files(pki: Path, name: str) -> dict[str, str]:
    folder = pki / "clients" / name
    return {
        "ca": str(folder / "ca.crt"),
        "cert": str(folder / f"{name}.crt"),
        "key": str(folder / f"{name}.key"),
    }


def make_certs(pki: Path, *args: str) -> None:
    done = subprocess.run(
        ["sh", str(MAKE_CERTS), str(pki), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"make-certs.sh {' '.join(args)}: {done.stderr}"


@pytest.fixture(params=["dev", "prod"])
def mqtt_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerUnderTest]:
    if request.param == "dev":
        b = Broker(workdir=tmp_path / "broker")
        b.workdir.mkdir()
        with b:
            yield BrokerUnderTest(b.port)
        return
    pki = tmp_path / "pki"
    make_certs(pki, "init")
    make_certs(pki, "unit", "unit-001")
    make_certs(pki, "service", "inventory")
    b = Broker(DEPLOY / "prod.conf", workdir=tmp_path / "broker", replacements=production_replacements(pki))
    b.workdir.mkdir()
    with b:
        yield BrokerUnderTest(b.port, client_files(pki, "unit-001"), client_files(pki, "inventory"))


def central_config(tmp_path: Path, b: BrokerUnderTest, units: int) -> CentralConfig:
    mqtt: dict[str, object] = {"port": b.port, "client_id": "central-replay"}
    if b.central_tls:
        t = b.central_tls
        mqtt["tls"] = {"ca_file": t["ca"], "cert_file": t["cert"], "key_file": t["key"]}
    return make_config(
        units, mqtt=mqtt, store={"db": str(tmp_path / "central.db")}, ingest={"gap_timeout_s": 0.5}
    )


def test_unregistered_unit_is_replayed_after_it_is_added(
    mqtt_broker: BrokerUnderTest, tmp_path: Path
) -> None:
    spec = sim_spec(
        "unit-001",
        "Site B",
        stock=5,
        ack_resend_s=3600,  # only a replay command makes it send again
        tls=mqtt_broker.unit_tls,
    )
    unit = start_unit(spec, tmp_path / "unit", mqtt_broker.port, clips=tmp_path / "clips")
    try:
        first = Service(central_config(tmp_path, mqtt_broker, units=0), RealClock(), http=False, alerts=False)
        with first:
            assert first.wait_connected(10)
            store = first.store
            assert store is not None
            wait_for(lambda: store.rejects().get("unknown_unit", {}).get("count", 0) > 0, 20, "refusals")
            for n in (1, 2):
                unit.press()
                wait_for(lambda n=n: unit.physical_dropped() == n, 30, f"kit {n} dropped")  # type: ignore[misc]
            # the kit drops a moment before the unit records it: wait for the record, then read last_seq
            wait_for(lambda: unit.daemon.ledger.count("dispense") == 2, 10, "both kits in the ledger")
            last = unit.daemon.ledger.last_seq()
            wait_for(lambda: store.rejects()["unknown_unit"]["count"] >= last, 20, "every event refused")
            assert store.count_events() == 0
        second = Service(
            central_config(tmp_path, mqtt_broker, units=1), RealClock(), http=False, alerts=False
        )
        with second:
            store2 = second.store
            assert store2 is not None

            def caught_up() -> bool:
                row = store2.unit("unit-001")
                return row is not None and row.acked_seq == last and row.stock == unit.physical_stock()

            wait_for(caught_up, 30, "the replayed events to fill the gap")
            assert second.runtime()["replays_requested"] >= 1, "filled by a replay, not by chance"
            wait_for(lambda: second.runtime()["command_responses"] >= 1, 10, "the unit's answer")
            assert store2.count_events("dispense", "unit-001") == unit.physical_dropped() == 2
            assert store2.count_events(unit="unit-001") == last
            wait_for(lambda: unit.daemon.ledger.acked_seq() == last, 20, "the unit to prune on our ack")
    finally:
        unit.stop()
