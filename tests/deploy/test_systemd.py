"""The systemd units verify with systemd-analyze and carry the hardening the brief asks for."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy import DEPLOY

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
EXEC = "/opt/nalox/venv/bin/nalox"


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["systemd-analyze", "verify", str(unit)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def scratch_copy(unit: Path, tmp_path: Path, exe: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (the venv is not installed)."""
    text = unit.read_text()
    assert EXEC in text, f"{unit.name}: expected ExecStart={EXEC} ..., not found"
    copy = tmp_path / unit.name
    copy.write_text(text.replace(EXEC, str(exe)))
    return copy


@pytest.fixture
def fake_exe(tmp_path: Path) -> Path:
    exe = tmp_path / "nalox"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return exe


def test_units_exist() -> None:
    assert {u.name for u in UNITS} >= {"nalox-unit.service", "nalox-inventory.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_without_a_single_warning(unit: Path, tmp_path: Path, fake_exe: Path) -> None:
    result = verify(scratch_copy(unit, tmp_path, fake_exe))
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == "", f"expected no output, got: {result.stderr}"


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_shipped_unit_only_misses_the_venv(unit: Path) -> None:
    """As shipped, the only complaint may be the venv binary that install.sh creates."""
    result = verify(unit)
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    others = [ln for ln in lines if f"Command {EXEC} is not executable" not in ln]
    assert others == [], f"expected only the missing venv binary, got: {others}"


def test_verify_catches_a_broken_unit(tmp_path: Path, fake_exe: Path) -> None:
    """The check above can fail: a typo in the unit shows up in systemd-analyze's output."""
    unit = DEPLOY / "systemd" / "nalox-unit.service"
    broken = scratch_copy(unit, tmp_path, fake_exe)
    broken.write_text(broken.read_text().replace("Type=notify", "Type=notifyy").replace(
        "Restart=always", "Restart=always\nWachdogSec=30"))
    out = verify(broken)
    text = out.stdout + out.stderr
    assert "notifyy" in text and "WachdogSec" in text


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_daemon_hardening() -> None:
    d = directives(DEPLOY / "systemd" / "nalox-unit.service")
    expected = {
        "Type": ["notify"], "Restart": ["always"], "User": ["nalox"], "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"], "PrivateTmp": ["yes"], "RuntimeDirectory": ["nalox"],
        "ReadWritePaths": ["/var/lib/nalox"], "DevicePolicy": ["closed"],
    }
    for key, value in expected.items():
        assert d.get(key) == value, f"{key}: expected {value}, found {d.get(key)}"
    assert "/dev/nalox-dispenser rw" in d["DeviceAllow"]
    groups = d["SupplementaryGroups"][0].split()
    assert "nalox-dispenser" in groups and "dialout" not in groups
    assert int(d["WatchdogSec"][0]) > 0


def test_inventory_unit_hardening() -> None:
    d = directives(DEPLOY / "systemd" / "nalox-inventory.service")
    for key, value in {"Restart": ["always"], "User": ["nalox"], "NoNewPrivileges": ["yes"],
                       "ProtectSystem": ["strict"], "PrivateTmp": ["yes"], "PrivateDevices": ["yes"]}.items():
        assert d.get(key) == value, f"{key}: expected {value}, found {d.get(key)}"
    assert d["ExecStart"][0].startswith(f"{EXEC} inventory serve")


def test_tool_present() -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze missing: `make setup` installs package systemd"
