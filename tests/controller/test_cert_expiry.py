"""The unit reports its MQTT certificate's expiry in `state` (central warns 30 days before)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from controller.daemon import _certificate_expiry
from tests.controller.mqtt.certs import MAKE_CERTS


def config_with(cert: Path | None) -> Any:
    tls = SimpleNamespace(cert_file=cert) if cert else None
    return SimpleNamespace(mqtt=SimpleNamespace(tls=tls))


def test_certificate_expiry_comes_from_the_configured_certificate(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    env = {**os.environ, "NALOX_CERT_DAYS": "40"}
    for args in (["init"], ["unit", "unit-x"]):
        subprocess.run(["sh", str(MAKE_CERTS), str(root), *args], check=True, capture_output=True, env=env)
    when = _certificate_expiry(config_with(root / "clients" / "unit-x" / "unit-x.crt"))
    assert when is not None and 39 <= (when - datetime.now(UTC)).days <= 40


def test_no_tls_or_an_unreadable_certificate_reports_none(tmp_path: Path) -> None:
    assert _certificate_expiry(SimpleNamespace(mqtt=None)) is None  # type: ignore[arg-type]
    assert _certificate_expiry(config_with(None)) is None
    (tmp_path / "bad.crt").write_text("not a certificate")
    assert _certificate_expiry(config_with(tmp_path / "bad.crt")) is None
