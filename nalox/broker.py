"""Start a mosquitto of our own on a free port with the project's config (demo, tests, soak, bench)."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nalox.errors import NaloxError
from nalox.ports import free_port


class BrokerError(NaloxError):
    """mosquitto would not start, or its guard plugin would not build."""


def _deploy_dir() -> Path:
    """deploy/mosquitto of this checkout; after a plain `pip install nalox`, the copy pyproject.toml's
    data-files put under the environment's share/nalox/mosquitto."""
    checkout = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
    installed = Path(sys.prefix) / "share" / "nalox" / "mosquitto"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


DEPLOY = _deploy_dir()
GUARD_SOURCE = DEPLOY / "nalox_guard.c"
GUARD_BUILD = DEPLOY.parent.parent / "build" / "mosquitto" / "nalox_guard.so"


def guard_plugin() -> Path:
    """deploy/mosquitto/nalox_guard.c compiled for this machine's mosquitto (rebuilt when the source is
    newer). Needs gcc and Debian's mosquitto-dev + libmosquitto-dev (make setup installs them)."""
    if not GUARD_BUILD.exists() or GUARD_BUILD.stat().st_mtime < GUARD_SOURCE.stat().st_mtime:
        GUARD_BUILD.parent.mkdir(parents=True, exist_ok=True)
        partial = GUARD_BUILD.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(partial),
                               str(GUARD_SOURCE)], capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"expected {GUARD_SOURCE.name} to compile (apt install gcc mosquitto-dev "
                               f"libmosquitto-dev), gcc said: {done.stderr.strip()}")
        partial.replace(GUARD_BUILD)
    return GUARD_BUILD


class Broker:
    """A mosquitto process. `config` is a path whose `listener PORT ...` lines get our port.

    kill() is kill -9 (a crash); start() again reuses the port and the persistence directory,
    so retained messages and persistent sessions survive exactly as they would in production
    when the config turns persistence on.

    Run as root, mosquitto drops to user `mosquitto`, which cannot enter a root-only test folder:
    then its pid file and persistence go to a runtime folder of its own under /tmp, and every
    replacement value naming an existing file (certificates, keys, ACL, CRL) is copied there,
    owned by `mosquitto` and mode 0600, and the config points at the copy.
    """

    def __init__(self, config: Path | None = None, port: int | None = None, workdir: Path | None = None,
                 replacements: dict[str, str] | None = None) -> None:
        self.template = Path(config or DEPLOY / "dev.conf")
        self.port = port or free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="nalox-broker-"))
        self.replacements = replacements or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.runtime = self.workdir
        if os.geteuid() == 0 and _has_user("mosquitto"):
            self.runtime = Path(tempfile.mkdtemp(prefix="nalox-mosquitto-"))
            shutil.chown(self.runtime, user="mosquitto")
            atexit.register(shutil.rmtree, self.runtime, True)  # kept across stop/start, gone at exit

    def render(self) -> str:
        text = self.template.read_text()
        text = re.sub(r"^listener\s+\d+", f"listener {self.port}", text, count=1, flags=re.M)
        for key, value in self.replacements.items():
            text = text.replace(key, self._readable(value))
        text = re.sub(r"^persistence_location\s+.*$", f"persistence_location {self.runtime}/", text,
                      flags=re.M)
        return text + f"\npid_file {self.runtime}/mosquitto.pid\n"

    def _readable(self, value: str) -> str:
        """A path mosquitto can read after dropping privileges (a copy when we run as root)."""
        source = Path(value)
        if self.runtime == self.workdir or not source.is_file():
            return value
        copy = self.runtime / f"{len(list(self.runtime.iterdir()))}-{source.name}"
        shutil.copyfile(source, copy)
        os.chmod(copy, 0o600)
        shutil.chown(copy, user="mosquitto")
        return str(copy)

    def start(self, timeout: float = 10.0) -> Broker:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.conf_path.write_text(self.render())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf_path)], stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise BrokerError(f"mosquitto did not listen on {self.port} within {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9: the broker crashes without saving anything it had not saved."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the runtime folder made for a root run (after stop(); the workdir is the caller's)."""
        if self.runtime != self.workdir:
            shutil.rmtree(self.runtime, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def production_replacements(pki: Path, acl: Path | None = None) -> dict[str, str]:
    """Point deploy/mosquitto/prod.conf at a folder made by deploy/pki/make-certs.sh (tests, demos):
    `Broker(DEPLOY / "prod.conf", replacements=production_replacements(pki))`."""
    return {
        "/etc/nalox/pki/device-ca.crt": str(pki / "device-ca" / "ca.crt"),
        "/etc/nalox/pki/broker.crt": str(pki / "broker" / "broker.crt"),
        "/etc/nalox/pki/broker.key": str(pki / "broker" / "broker.key"),
        "/etc/nalox/pki/crl.pem": str(pki / "device-ca" / "crl.pem"),
        "/etc/nalox/mosquitto/acl": str(acl or DEPLOY / "acl"),
        "/usr/lib/nalox/nalox_guard.so": str(guard_plugin()),
    }
