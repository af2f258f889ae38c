"""deploy/pki/make-certs.sh: what it makes (CN, key usage, SAN, CRL) and what it refuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nalox.broker import DEPLOY

MAKE_CERTS = DEPLOY.parent / "pki" / "make-certs.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(MAKE_CERTS), *args], capture_output=True, text=True)


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki") / "pki"
    assert run(str(root), "init", "broker.county.example").returncode == 0
    assert run(str(root), "unit", "unit-7").returncode == 0
    return root


def test_unit_certificate_is_a_client_cert_with_the_unit_id_as_cn(pki: Path) -> None:
    crt = str(pki / "clients/unit-7/unit-7.crt")
    text = openssl("x509", "-in", crt, "-noout", "-subject", "-ext", "extendedKeyUsage,basicConstraints")
    assert "CN = unit-7" in text and "TLS Web Client Authentication" in text and "CA:FALSE" in text
    verify = openssl("verify", "-CAfile", str(pki / "device-ca/ca.crt"), crt)
    assert verify.strip().endswith("OK")
    assert (pki / "clients/unit-7/unit-7.key").stat().st_mode & 0o077 == 0


def test_broker_certificate_comes_from_the_server_ca_with_the_names_asked(pki: Path) -> None:
    crt = str(pki / "broker/broker.crt")
    san = openssl("x509", "-in", crt, "-noout", "-ext", "subjectAltName")
    assert "DNS:localhost" in san and "IP Address:127.0.0.1" in san and "DNS:broker.county.example" in san
    assert openssl("verify", "-CAfile", str(pki / "server-ca/ca.crt"), crt).strip().endswith("OK")
    wrong_ca = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki / "device-ca/ca.crt"), crt], capture_output=True, text=True
    )
    assert wrong_ca.returncode != 0  # the device CA never signs the broker


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("unit", "inventory"), "reserved"),
        (("unit", "../etc"), "expected a name"),
        (("service", "unit-9"), "expected inventory, inventory-0 .. inventory-31, dashboard or operations"),
        (("service", "inventory-32"), "expected inventory, inventory-0"),
        (("unit", "inventory-3"), "reserved"),
        (("init",), "refusing to overwrite"),
        (("revoke", "nobody"), "expected a certificate"),
        (("unit", "unit-7"), "exists"),
    ],
)
def test_refusals_say_why(pki: Path, args: tuple[str, ...], message: str) -> None:
    done = run(str(pki), *args)
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_revoke_lists_the_serial_in_the_crl(pki: Path) -> None:
    assert run(str(pki), "unit", "unit-8").returncode == 0
    serial = (
        openssl("x509", "-in", str(pki / "clients/unit-8/unit-8.crt"), "-noout", "-serial")
        .split("=")[1]
        .strip()
    )
    assert run(str(pki), "revoke", "unit-8").returncode == 0
    crl = openssl("crl", "-in", str(pki / "device-ca/crl.pem"), "-noout", "-text")
    assert f"Serial Number: {serial}" in crl
