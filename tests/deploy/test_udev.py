"""The udev rule parses with the machine's udevadm and, on a device it matches, makes
/dev/nalox-dispenser with group nalox-dispenser (not dialout). udevadm 252 `test` really applies what it
computes (creates links, changes modes),
so it runs in a private mount namespace with its own /dev and /run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy import DEPLOY

RULE = DEPLOY / "udev" / "99-nalox-dispenser.rules"
SYSFS = Path("/sys/class/tty/ttyS0")
SANDBOX = r"""set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev
mknod /dev/ttyS0 c 4 64
mkdir -p /run/udev/rules.d
cp "$1" /run/udev/rules.d/99-nalox-dispenser.rules
udevadm test --action=add /sys/class/tty/ttyS0 2>&1
echo "== dev"
ls -l /dev
"""


def can_sandbox() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not SYSFS.exists():
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.fixture(autouse=True)
def sandbox_available() -> None:
    assert can_sandbox(), "the udev tests need root, unshare (util-linux) and /sys/class/tty/ttyS0"
    if subprocess.run(["getent", "group", "nalox-dispenser"], capture_output=True).returncode != 0:
        # what deploy/install.sh creates on a unit; udevadm resolves the rule's GROUP by name
        subprocess.run(["groupadd", "--system", "nalox-dispenser"], check=True)


def udev_test(rule_text: str, tmp_path: Path) -> str:
    rule = tmp_path / "rule"
    rule.write_text(rule_text)
    script = tmp_path / "sandbox.sh"
    script.write_text(SANDBOX)
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", str(script), str(rule)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def our_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if "99-nalox-dispenser.rules" in ln]


def as_serial_console(rule_text: str) -> str:
    """The rule with its USB matches swapped for the serial console this machine has."""
    swapped, n = re.subn(r'ATTRS\{idVendor\}=="[^"]*", ATTRS\{idProduct\}=="[^"]*", ATTRS\{serial\}=="[^"]*"',
                         'KERNEL=="ttyS0"', rule_text)
    assert n >= 1, "expected USB vendor/product/serial matches in the rule"
    return swapped


def test_rule_parses_cleanly_and_does_not_match_other_ttys(tmp_path: Path) -> None:
    out = udev_test(RULE.read_text(), tmp_path)
    lines = our_lines(out)
    assert any("Reading rules file" in ln for ln in lines), out[-2000:]
    complaints = [ln for ln in lines if re.search(r"invalid|ignoring|error", ln, re.I)]
    assert complaints == []
    dev = out.split("== dev")[1]
    assert "nalox-dispenser" not in dev, "a plain serial port must not become the dispenser"


def test_rule_gives_the_dispenser_to_its_own_group_not_dialout(tmp_path: Path) -> None:
    out = udev_test(as_serial_console(RULE.read_text()), tmp_path)
    dev = out.split("== dev")[1]
    assert re.search(r"nalox-dispenser -> ttyS0", dev), dev
    assert re.search(r"^crw-rw---- .* nalox-dispenser .*ttyS0$", dev, re.M), dev
    assert "ID_MM_DEVICE_IGNORE=1" in out


def test_udevadm_reports_a_broken_rule(tmp_path: Path) -> None:
    """The clean-parse check above can fail: udevadm names a malformed line."""
    out = udev_test(RULE.read_text() + 'SUBSYSTEM=="tty", ATTRS{idVendor}="2e8a", SYMLNK+="x"\n', tmp_path)
    assert any(re.search(r"invalid", ln, re.I) for ln in our_lines(out)), out[-2000:]


def test_pinned_serial_rule_from_install_script(tmp_path: Path) -> None:
    subprocess.run([str(DEPLOY / "install.sh"), "--root", str(tmp_path / "root"), "--no-venv",
                    "--dispenser-serial", "E6614103E7"], check=True, capture_output=True, timeout=60)
    pinned = (tmp_path / "root/etc/udev/rules.d/99-nalox-dispenser.rules").read_text()
    assert 'ATTRS{serial}=="E6614103E7"' in pinned and 'ATTRS{serial}=="*"' not in pinned
    lines = our_lines(udev_test(pinned, tmp_path))
    assert lines and not [ln for ln in lines if re.search(r"invalid|ignoring", ln, re.I)]
