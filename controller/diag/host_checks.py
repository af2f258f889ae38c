"""Technician diagnostics of the unit's computer side: broker reachability and certificate, the ledger's
outbox, the video clips and the data disk. Each returns `Check` results (see controller.diag.result)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from controller.clock import Clock
from controller.config import UnitConfig
from controller.diag.result import Check, failed, passed, skipped, warned
from controller.ledger import Ledger
from controller.mqtt.client import TlsSettings

NO_CONFIG = "no config (give --config unit.toml)"
CERT_WARN_DAYS = 30
CONNECT_TIMEOUT_S = 5.0
DISK_MIN_FREE_BYTES = 200 * 1024 * 1024
DISK_MIN_FREE_FRACTION = 0.05
OUTBOX_ALARM_DEPTH = 1000
OUTBOX_ALARM_AGE_S = 3600.0
PKI_HELP = "provision a new unit certificate (deploy/mosquitto/README.md, deploy/pki/) and restart the unit"


# ---------------------------------------------------------------- broker


def check_broker(config: UnitConfig | None, clock: Clock) -> list[Check]:
    if config is None:
        return [skipped("broker", NO_CONFIG)]
    mqtt = config.mqtt
    if mqtt is None:
        return [skipped("broker", "the config has no [mqtt] section: this unit does not report")]
    host, port, tls = mqtt.host, mqtt.port, mqtt.tls
    checks = [check_tcp(host, port)]
    if tls is None:
        checks.append(warned("broker.tls", "no TLS: plain MQTT", expected="TLS with a unit certificate",
                             found="tls not configured", action="production units must use TLS: "
                             "see deploy/mosquitto/README.md"))
        return checks
    checks.append(check_certificate(tls.cert_file, clock))
    if checks[0].status == "pass":
        checks.append(check_tls(host, port, tls))
    return checks


def check_tcp(host: str, port: int) -> Check:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return passed("broker.reach", f"{host}:{port} accepts connections", host=host, port=port)
    except OSError as exc:
        return failed("broker.reach", f"cannot connect to the broker at {host}:{port}",
                      expected=f"a TCP connection to {host}:{port}", found=exc.strerror or str(exc),
                      action="check the unit's network (ping the server); is mosquitto running on the server "
                      "(`systemctl status mosquitto`)? a firewall?", host=host, port=port)


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


def check_tls(host: str, port: int, tls: TlsSettings) -> Check:
    """Handshake with the unit's certificate; a refused client certificate shows as an alert right after."""
    try:
        ctx = tls_context(tls)
    except (OSError, ssl.SSLError) as exc:
        return failed("broker.tls", "cannot load the unit's TLS files",
                      expected="readable CA, cert and key files", found=str(exc), action=PKI_HELP)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as conn:
            version = conn.version()
            _await_server_verdict(conn)
    except ssl.SSLError as exc:
        return failed("broker.tls", "TLS handshake with the broker failed", expected="a verified TLS session "
                      "with the unit certificate accepted", found=exc.reason or str(exc), action=PKI_HELP)
    except OSError as exc:
        return failed("broker.tls", "the broker closed the TLS connection", expected="a TLS session",
                      found=str(exc), action=PKI_HELP)
    return passed("broker.tls", f"TLS handshake ok ({version}), unit certificate accepted",
                  tls_version=version)


def _await_server_verdict(conn: ssl.SSLSocket) -> None:
    """TLS 1.3 servers reject a client certificate after the handshake: read briefly for their alert.
    mosquitto sends nothing until our MQTT CONNECT, so a timeout means accepted."""
    conn.settimeout(0.5)
    try:
        if conn.recv(1) == b"":
            raise ssl.SSLError("the broker closed the connection after the handshake")
    except TimeoutError:
        return


def certificate_not_after(path: Path) -> datetime:
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(path)], capture_output=True,
                         text=True, timeout=10)
    if out.returncode != 0 or "notAfter=" not in out.stdout:
        raise ValueError(out.stderr.strip() or out.stdout.strip() or "openssl gave no notAfter")
    stamp = out.stdout.strip().split("=", 1)[1]
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(stamp), UTC)


def check_certificate(path: Path, clock: Clock) -> Check:
    try:
        not_after = certificate_not_after(path)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return failed("broker.certificate", f"cannot read the unit certificate {path}",
                      expected="a PEM certificate", found=str(exc), action=PKI_HELP)
    days = (not_after - clock.now()).total_seconds() / 86400.0
    data = {"not_after": not_after.isoformat(), "days_left": round(days, 1), "file": str(path)}
    if days < 0:
        return failed("broker.certificate", f"unit certificate expired {-days:.0f} days ago",
                      expected="a certificate valid today", found=f"expired on {not_after:%Y-%m-%d}",
                      action=PKI_HELP, **data)
    if days < CERT_WARN_DAYS:
        return warned("broker.certificate", f"unit certificate expires in {days:.0f} days",
                      expected=f"more than {CERT_WARN_DAYS} days left", found=f"{days:.0f} days",
                      action=PKI_HELP, **data)
    return passed("broker.certificate", f"unit certificate valid for {days:.0f} more days", **data)


# ---------------------------------------------------------------- ledger


def check_ledger(config: UnitConfig | None, ledger: Ledger | None, clock: Clock) -> list[Check]:
    """Outbox depth, oldest unacknowledged event and the last seq acked by central."""
    if ledger is None and config is None:
        return [skipped("ledger", NO_CONFIG)]
    if ledger is None:
        assert config is not None
        return _with_ledger_file(config, clock)
    return [ledger_result(ledger, config, clock)]


def _with_ledger_file(config: UnitConfig, clock: Clock) -> list[Check]:
    path = Path(config.paths.ledger_path())
    if not path.exists():
        return [failed("ledger", f"no ledger at {path}", expected="the unit's ledger file",
                       found="missing", action="start the unit once (`systemctl start nalox-unit`); "
                       "check paths.data_dir in the config")]
    ledger = Ledger(path, clock)
    try:
        return [ledger_result(ledger, config, clock)]
    finally:
        ledger.close()


def ledger_result(ledger: Ledger, config: UnitConfig | None, clock: Clock) -> Check:
    depth, last, acked = ledger.depth(), ledger.last_seq(), ledger.acked_seq()
    oldest = ledger.oldest_pending_at()
    age = (clock.now() - oldest).total_seconds() if oldest else None
    max_depth, max_age = _outbox_limits(config)
    data = {"outbox_depth": depth, "last_seq": last, "acked_seq": acked,
            "oldest_pending_at": oldest.isoformat() if oldest else None,
            "oldest_age_s": round(age, 1) if age is not None else None}
    summary = f"outbox {depth} event(s), last seq {last}, acked by central up to {acked}"
    if age is not None:
        summary += f", oldest unacked {age:.0f} s old"
    if depth > max_depth or (age is not None and age > max_age):
        return failed("ledger", summary, expected=f"outbox under {max_depth} events and "
                      f"{max_age:.0f} s old", found=f"{depth} events, oldest {age or 0:.0f} s",
                      action="events are not reaching central: run `nalox diag broker`; they are kept "
                      "safely until acknowledged", **data)
    return passed("ledger", summary, **data)


def _outbox_limits(config: UnitConfig | None) -> tuple[int, float]:
    mqtt = config.mqtt if config is not None else None
    if mqtt is None:
        return OUTBOX_ALARM_DEPTH, OUTBOX_ALARM_AGE_S
    return mqtt.outbox_alarm_depth, mqtt.outbox_alarm_age_s


# ---------------------------------------------------------------- video


def check_video(config: UnitConfig | None, seconds: float = 1.0, on_screen: bool = False) -> list[Check]:
    if config is None:
        return [skipped("video", NO_CONFIG)]
    videos = config.videos
    clips = videos.files.items()
    return [play_clip(lang, Path(path), videos.mpv, seconds, on_screen) for lang, path in clips]


def play_clip(lang: str, path: Path, mpv: str, seconds: float, on_screen: bool) -> Check:
    name = f"video.{lang}"
    if not path.is_file():
        return failed(name, f"{lang} clip missing", expected=f"a video file at {path}",
                      found="no such file",
                      action="copy the clips to the unit (deploy/README.md) or fix videos.files in unit.toml")
    out_args = [] if on_screen else ["--vo=null", "--ao=null"]
    cmd = [mpv, "--no-config", *out_args, f"--length={seconds}", "--really-quiet", "--idle=no", str(path)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return failed(name, f"{lang} clip: the player did not run", expected="mpv plays the clip",
                      found=str(exc),
                      action="install mpv (`apt install mpv`) or fix videos.mpv in the config")
    if res.returncode != 0:
        return failed(name, f"{lang} clip does not play", expected="mpv exits 0",
                      found=f"exit {res.returncode}: {(res.stderr or res.stdout).strip()[-200:]}",
                      action="the file is damaged or not a video: copy it again")
    return passed(name, f"{lang} clip plays ({path.name}, {seconds:g} s checked)", file=str(path))


# ---------------------------------------------------------------- disk


def check_disk(config: UnitConfig | None) -> list[Check]:
    path = Path(config.paths.data_dir) if config is not None else Path("/")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb, total_mb = usage.free / 2**20, usage.total / 2**20
    data = {"path": str(path), "free_mb": round(free_mb), "total_mb": round(total_mb)}
    summary = f"{free_mb:.0f} MB free of {total_mb:.0f} MB on {probe}"
    if usage.free < DISK_MIN_FREE_BYTES or usage.free < usage.total * DISK_MIN_FREE_FRACTION:
        return [failed("disk", summary, expected=f"at least {DISK_MIN_FREE_BYTES // 2**20} MB and "
                       f"{DISK_MIN_FREE_FRACTION:.0%} free", found=f"{free_mb:.0f} MB free",
                       action="free space: `journalctl --vacuum-size=100M`, remove old files in /var/log; "
                       "never delete the ledger", **data)]
    return [passed("disk", summary, **data)]
