"""Certificates for the production-broker tests, made by deploy/pki/make-certs.sh."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from controller.mqtt.client import MqttSettings, TlsSettings
from nalox.broker import DEPLOY, Broker, production_replacements

MAKE_CERTS = DEPLOY.parent / "pki" / "make-certs.sh"


@dataclass(frozen=True)
class Pki:
    root: Path

    def tls(self, name: str, revoked: bool = False) -> dict[str, str]:
        folder = self.root / "clients" / name
        return {
            "ca": str(folder / "ca.crt"),
            "cert": str(folder / (f"{name}.crt" + (".revoked" if revoked else ""))),
            "key": str(folder / f"{name}.key"),
        }

    def settings(self, port: int, name: str, tmp: Path, **extra: object) -> MqttSettings:
        t = self.tls(name)
        return MqttSettings(
            port=port,
            client_id=name,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
            connect_timeout_s=5,
            telemetry_interval_s=3600,
            tls=TlsSettings(ca_file=Path(t["ca"]), cert_file=Path(t["cert"]), key_file=Path(t["key"])),
            **extra,
        )  # type: ignore[arg-type]


def make_certs(root: Path, *args: str) -> None:
    done = subprocess.run(["sh", str(MAKE_CERTS), str(root), *args], capture_output=True, text=True)
    assert done.returncode == 0, f"make-certs.sh {' '.join(args)} failed: {done.stderr}"


def prod_config(pki: Pki, workdir: Path) -> Broker:
    """A Broker with deploy/mosquitto/prod.conf pointed at the generated certificates and the real ACL."""
    return Broker(DEPLOY / "prod.conf", workdir=workdir, replacements=production_replacements(pki.root))
