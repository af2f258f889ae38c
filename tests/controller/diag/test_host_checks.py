"""Diagnostics of the unit's computer side against real parts: the production mosquitto with TLS client
certificates made by deploy/pki/make-certs.sh (one of them really expired, made with openssl), the
unit's SQLite ledger, real mpv on real clips. A full disk is the one fault faked."""

from __future__ import annotations

import shutil
import subprocess
from collections import namedtuple
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.clock import FakeClock, RealClock
from controller.diag import host_checks
from controller.diag.result import EXIT_CODES, Check, exit_code
from controller.ledger import Ledger
from nalox.broker import DEPLOY, Broker, free_port, production_replacements
from tests.controller.diag.conftest import make_config

MAKE_CERTS = DEPLOY.parent / "pki" / "make-certs.sh"


@dataclass(frozen=True)
class Pki:
    root: Path

    def tls(self, name: str, cert: Path | None = None) -> dict[str, str]:
        folder = self.root / "clients" / name
        return {"ca_file": str(folder / "ca.crt"), "cert_file": str(cert or folder / f"{name}.crt"),
                "key_file": str(folder / f"{name}.key")}


def sh(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki") / "pki"
    sh("sh", str(MAKE_CERTS), str(root), "init")
    sh("sh", str(MAKE_CERTS), str(root), "unit", "diag-unit-1")
    return Pki(root)


@pytest.fixture(scope="module")
def expired_cert(pki: Pki) -> Path:
    """A certificate for the same key, signed by the real device CA, valid only in 2024."""
    folder = pki.root / "clients" / "diag-unit-1"
    out = folder / "expired.crt"
    sh("openssl", "ca", "-batch", "-notext", "-config", str(pki.root / "device-ca" / "openssl.cnf"),
       "-startdate", "20240101000000Z", "-enddate", "20250101000000Z",
       "-in", str(folder / "diag-unit-1.csr"), "-out", str(out))
    return out


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(DEPLOY / "prod.conf", workdir=tmp_path_factory.mktemp("prod-broker"),
                    replacements=production_replacements(pki.root))
    with broker:
        yield broker


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def mqtt_config(tmp_path: Path, clips: dict[str, Path], port: int, tls: dict[str, str] | None) -> Any:
    mqtt: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    if tls:
        mqtt["tls"] = tls
    return make_config(tmp_path, clips, mqtt=mqtt)


# ---------------------------------------------------------------- broker


def test_broker_with_a_valid_certificate_passes(tmp_path: Path, clips: dict[str, Path], pki: Pki,
                                                tls_broker: Broker) -> None:
    config = mqtt_config(tmp_path, clips, tls_broker.port, pki.tls("diag-unit-1"))
    checks = by_name(host_checks.check_broker(config, RealClock()))
    assert [c.status for c in checks.values()] == ["pass", "pass", "pass"], checks
    assert 800 < checks["broker.certificate"].data["days_left"] <= 825
    assert checks["broker.tls"].data["tls_version"].startswith("TLSv1.")


def test_broker_down_fails_with_the_address(tmp_path: Path, clips: dict[str, Path], pki: Pki) -> None:
    port = free_port()
    checks = host_checks.check_broker(mqtt_config(tmp_path, clips, port, pki.tls("diag-unit-1")), RealClock())
    reach = by_name(checks)["broker.reach"]
    assert reach.status == "fail" and f"127.0.0.1:{port}" in reach.summary
    assert "refused" in (reach.found or "").lower() and "mosquitto" in (reach.action or "")
    assert "broker.tls" not in by_name(checks)  # no handshake without a connection
    assert exit_code(checks) == EXIT_CODES["broker"]


def test_expired_certificate_fails_and_the_broker_refuses_it(tmp_path: Path, clips: dict[str, Path], pki: Pki,
                                                             expired_cert: Path, tls_broker: Broker) -> None:
    config = mqtt_config(tmp_path, clips, tls_broker.port, pki.tls("diag-unit-1", cert=expired_cert))
    checks = by_name(host_checks.check_broker(config, RealClock()))
    cert = checks["broker.certificate"]
    assert cert.status == "fail" and "expired" in cert.summary and cert.found == "expired on 2025-01-01"
    assert "certificate" in (cert.action or "")
    assert checks["broker.tls"].status == "fail", checks["broker.tls"]  # mosquitto really refuses it
    assert "certificate" in (checks["broker.tls"].found or "").lower()
    assert exit_code(list(checks.values())) == EXIT_CODES["broker"]


def test_certificate_close_to_expiry_warns(tmp_path: Path, clips: dict[str, Path], pki: Pki) -> None:
    cert = Path(pki.tls("diag-unit-1")["cert_file"])
    clock = FakeClock(start=host_checks.certificate_not_after(cert) - timedelta(days=10))
    check = host_checks.check_certificate(cert, clock)
    assert check.status == "warn" and "expires in 10 days" in check.summary


def test_plain_mqtt_warns(tmp_path: Path, clips: dict[str, Path], broker: Broker) -> None:
    checks = by_name(host_checks.check_broker(mqtt_config(tmp_path, clips, broker.port, None), RealClock()))
    assert checks["broker.reach"].status == "pass" and checks["broker.tls"].status == "warn"


def test_no_config_skips_broker_ledger_video() -> None:
    for checks in (host_checks.check_broker(None, RealClock()),
                   host_checks.check_ledger(None, None, RealClock()),
                   host_checks.check_video(None)):
        assert [c.status for c in checks] == ["skipped"] and "no config" in checks[0].summary


# ---------------------------------------------------------------- ledger


def test_ledger_reports_outbox_and_acks(tmp_path: Path, clips: dict[str, Path]) -> None:
    from schemas.models import DoorEvent

    config = make_config(tmp_path, clips)
    clock = FakeClock()
    ledger = Ledger(config.paths.ledger_path(), clock, unit_id="diag-unit-1")
    try:
        for is_open in (True, False, True):
            ledger.record(DoorEvent, open=is_open)
        ledger.prune(1)
        [check] = host_checks.check_ledger(config, ledger, clock)
        assert check.status == "pass", check
        assert (check.data["outbox_depth"], check.data["last_seq"], check.data["acked_seq"]) == (2, 3, 1)
        clock.advance(7200)  # central has not acked for two hours
        [old] = host_checks.check_ledger(config, ledger, clock)
        assert old.status == "fail" and "oldest unacked 7200 s" in old.summary
        assert "nalox diag broker" in (old.action or "")
    finally:
        ledger.close()


def test_ledger_file_is_read_when_no_daemon_runs(tmp_path: Path, clips: dict[str, Path]) -> None:
    config = make_config(tmp_path, clips)
    [missing] = host_checks.check_ledger(config, None, RealClock())
    assert missing.status == "fail" and "no ledger" in missing.summary
    Ledger(config.paths.ledger_path(), RealClock(), unit_id="diag-unit-1").close()
    [fresh] = host_checks.check_ledger(config, None, RealClock())
    assert fresh.status == "pass" and fresh.data["outbox_depth"] == 0


# ---------------------------------------------------------------- video and disk


def test_each_configured_clip_plays_in_real_mpv(tmp_path: Path, clips: dict[str, Path]) -> None:
    checks = host_checks.check_video(make_config(tmp_path, clips))
    assert [(c.name, c.status) for c in checks] == [("video.en", "pass"), ("video.es", "pass")]


def test_missing_and_broken_clips_fail(tmp_path: Path, clips: dict[str, Path]) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    config = make_config(tmp_path, {"en": tmp_path / "gone.mp4", "es": broken})
    checks = by_name(host_checks.check_video(config))
    assert checks["video.en"].status == "fail" and "missing" in checks["video.en"].summary
    assert checks["video.es"].status == "fail" and "does not play" in checks["video.es"].summary
    assert exit_code(list(checks.values())) == EXIT_CODES["video"]


def test_disk_with_room_passes(tmp_path: Path, clips: dict[str, Path]) -> None:
    [check] = host_checks.check_disk(make_config(tmp_path, clips))
    assert check.status == "pass" and check.data["free_mb"] > 0


def test_full_disk_fails(tmp_path: Path, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    gib, mib = 2**30, 2**20
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(8 * gib, 8 * gib - 50 * mib, 50 * mib))
    [check] = host_checks.check_disk(make_config(tmp_path, clips))
    assert check.status == "fail" and check.found == "50 MB free"
    assert "never delete the ledger" in (check.action or "")
