"""Several central ingest workers on the production broker (deploy/mosquitto/prod.conf, its acl, the
nalox_guard plugin, certificates from deploy/pki/make-certs.sh): each worker connects with its own
certificate (inventory-0, inventory-1: the broker makes the CN the client id), both join the
`$share/inventory/...` group and share the load, the totals are exact on both backends, and a unit's
certificate still cannot join the group."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from inventory.clock import RealClock
from inventory.service import Service
from nalox.broker import Broker
from tests.controller.mqtt.certs import Pki, make_certs, prod_config
from tests.controller.mqtt.standins import Watcher
from tests.inventory.conftest import make_config
from tests.inventory.mqttutil import UnitSide
from tests.inventory.test_mqtt_ingest import _check_exact, streams
from tests.waiting import wait_for

UNITS = ("unit-001", "unit-002", "unit-003")
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki") / "pki"
    make_certs(root, "init")
    for name in (*UNITS, "unit-thief"):
        make_certs(root, "unit", name)
    for name in ("inventory-0", "inventory-1", "dashboard"):
        make_certs(root, "service", name)
    return Pki(root)


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with prod_config(pki, tmp_path_factory.mktemp("workers-broker")) as b:
        yield b


def tls_section(pki: Pki, name: str) -> dict[str, str]:
    t = pki.tls(name)
    return {"ca_file": t["ca"], "cert_file": t["cert"], "key_file": t["key"]}


def test_two_workers_with_their_own_certificates_share_the_load_exactly(
    db_url: tuple[str, str | None], broker: Broker, pki: Pki
) -> None:
    # cert and key .../inventory-{worker}/inventory-{worker}.crt: one certificate per worker
    worker_tls = {k: v if k == "ca_file" else v.replace("inventory-0", "inventory-{worker}")
                  for k, v in tls_section(pki, "inventory-0").items()}
    cfg = make_config(
        len(UNITS),
        mqtt={"port": broker.port, "workers": 2, "tls": worker_tls,
              "commands_tls": tls_section(pki, "dashboard")},
        store={"db": db_url[0]},
        ingest={"batch_size": 20},
    )
    svc = Service(cfg, RealClock(), schema=db_url[1], http=False, alerts=False).start()
    units = [UnitSide(broker.port, u, subscribe=(f"nalox/v1/{u}/ack",), tls=pki.tls(u)) for u in UNITS]
    thief = Watcher(broker.port, ["$share/inventory/nalox/v1/+/event/#"], tls=pki.tls("unit-thief"))
    try:
        assert svc.wait_connected(10), "expected both workers connected and subscribed"
        assert thief.suback == [NOT_AUTHORIZED], "a unit certificate must not join central's group"
        log = broker.log_path.read_text()
        for cn in ("inventory-0", "inventory-1"):
            assert f"u'{cn}'" in log, f"expected a worker connected as {cn}: {broker.log_tail()}"
        ss = {s.unit: s for s in streams(len(UNITS), 80, seed=5)}
        total = sum(len(s.events) for s in ss.values())
        for side in units:
            msgs = ss[side.client._client_id.decode()].messages()
            side.publish_all(msgs + random.Random(7).sample(msgs, 20))  # with duplicates, as after a resend
        store = svc.store
        assert store is not None
        wait_for(lambda: store.count_events() == total, 60, f"{total} events")
        _check_exact(store, list(ss.values()))
        for side, s in zip(units, ss.values(), strict=True):  # acks went out through the workers' rights
            acks = f"nalox/v1/{s.unit}/ack"
            wait_for(lambda side=side, s=s, acks=acks: any(  # type: ignore[misc]
                f'"acked_seq":{s.seq}' in m.payload.decode() for m in side.messages(acks)
            ), 10, f"the ack of {s.unit}'s last seq {s.seq}")
        inserted = [w.inserted_total for w in svc.workers]
        assert sum(inserted) == total and all(n > 0 for n in inserted), f"both take events: {inserted}"
        assert thief.messages.empty(), "the thief received nothing"
    finally:
        for side in units:
            side.close()
        thief.close()
        svc.stop()
