"""deploy/install.sh in a scratch root: installs what a unit needs, and a second run gives the same tree."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from tests.deploy import DEPLOY

INSTALL = DEPLOY / "install.sh"


def run_install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), "--root", str(root), "--no-venv", *extra],
                          capture_output=True, text=True, timeout=120)


def tree(root: Path) -> dict[str, tuple[int, str, int]]:
    """path -> (mode, content digest or link target, mtime in ns) for everything under root."""
    out: dict[str, tuple[int, str, int]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            what = "-> " + os.readlink(path)
        elif path.is_file():
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = "dir"
        out[str(path.relative_to(root))] = (st.st_mode, what, st.st_mtime_ns if path.is_file() else 0)
    return out


def test_install_twice_gives_the_same_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = run_install(root, "--inventory")
    assert first.returncode == 0, first.stderr
    before = tree(root)
    second = run_install(root, "--inventory")
    assert second.returncode == 0, second.stderr
    assert tree(root) == before  # same files, modes, contents and even mtimes: nothing rewritten
    assert "installed" not in second.stdout


def test_install_lays_out_a_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run_install(root)
    assert result.returncode == 0, result.stderr
    for rel, mode in {
        "etc/systemd/system/nalox-unit.service": 0o644,
        "etc/udev/rules.d/99-nalox-dispenser.rules": 0o644,
        "etc/nalox/mpv/mpv.conf": 0o644,
        "etc/nalox/mpv/input.conf": 0o644,
        "etc/nalox": 0o750,
        "etc/nalox/pki": 0o750,
        "var/lib/nalox": 0o750,
    }.items():
        path = root / rel
        assert path.exists(), f"expected {rel} after install, not there"
        got = path.stat().st_mode & 0o777
        assert got == mode, f"{rel}: expected mode {mode:o}, got {got:o}"
    assert (root / "etc/systemd/system/nalox-unit.service").read_text() == (
        DEPLOY / "systemd/nalox-unit.service").read_text()
    assert not (root / "etc/systemd/system/nalox-inventory.service").exists()
    assert "user nalox system" in (root / "etc/nalox/install-user").read_text()
    assert os.readlink(root / "usr/local/bin/nalox") == "/opt/nalox/venv/bin/nalox"
    assert "not running systemctl" in result.stdout


def test_installed_config_has_production_paths(tmp_path: Path) -> None:
    from controller.config import load_config

    root = tmp_path / "root"
    assert run_install(root).returncode == 0
    text = (root / "etc/nalox/unit.toml").read_text()
    assert "/tmp/" not in _settings(text)
    config = load_config(root / "etc/nalox/unit.toml")
    assert config.serial.port == "/dev/nalox-dispenser"
    assert str(config.paths.data_dir) == "/var/lib/nalox"
    assert str(config.paths.control_socket) == "/run/nalox/control.sock"
    assert all(str(p).startswith("/var/lib/nalox/videos/") for p in config.videos.files.values())
    assert config.videos.headless is False


def _settings(text: str) -> str:
    """The config without comments."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_install_keeps_a_technicians_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = root / "etc/nalox/unit.toml"
    config.parent.mkdir(parents=True)
    config.write_text("# edited on site\n")
    assert run_install(root).returncode == 0
    assert config.read_text() == "# edited on site\n"


def test_install_refuses_bad_input(tmp_path: Path) -> None:
    bad = run_install(tmp_path / "root", "--dispenser-serial", "x/y")
    assert bad.returncode == 2 and "expected letters, digits" in bad.stderr
    unknown = run_install(tmp_path / "root", "--frobnicate")
    assert unknown.returncode == 2 and "unknown option '--frobnicate'" in unknown.stderr


def test_install_script_is_posix_sh() -> None:
    result = subprocess.run(["sh", "-n", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
