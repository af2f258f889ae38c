"""A ledger that cannot write, on a real small file system (a 4 MiB tmpfs filled up, and a read-only
remount): the machine goes clearly out of service, never releases a kit it cannot record, says so in
its log and its state (the alarm cannot be recorded), stops feeding the watchdog, and vends again by
itself when the disk comes back. The same when the disk is already full or read-only when the daemon
starts: it comes up out of service instead of crash-looping, reports so over MQTT, backs off its
restarts, and vends by itself once the disk writes. Needs root (mount)."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.sdnotify import Notifier
from nalox.broker import Broker
from tests.controller.conftest import Rig, make_config
from tests.controller.mqtt.standins import Watcher


def screen(rig: Rig) -> tuple[str, object]:
    """What the kiosk shows: the screen's name and its reason."""
    kiosk = rig.daemon.flow.kiosk
    return kiosk.screen, kiosk.current.params.get("reason")


class CountingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__({"WATCHDOG_USEC": "2"})  # fed on every tick
        self.sent: list[str] = []

    def send(self, message: str) -> bool:
        self.sent.append(message)
        return True

    @property
    def fed(self) -> int:
        return self.sent.count("WATCHDOG=1")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    assert os.geteuid() == 0, "these tests mount a small tmpfs: run them as root"
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(data)], check=True)
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the file system says it is full."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\xff" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def rig_on(tmp_path: Path) -> tuple[Rig, CountingNotifier]:
    rig = Rig(tmp_path, make_config(tmp_path))
    notifier = CountingNotifier()
    rig.daemon.notifier = notifier
    return rig, notifier


def drops(rig: Rig) -> int:
    return sum(1 for o in rig.board.journal.values() if o.outcome == "dropped")


def accounted(rig: Rig) -> int:
    """Kits the ledger knows of: recorded dispenses plus journaled commands still to settle."""
    return len(rig.events("dispense")) + len(rig.daemon.ledger.pending_commands())


def assert_out_of_service(rig: Rig, notifier: CountingNotifier) -> None:
    d = rig.daemon
    assert d.ledger_down is not None and d.mode == "service"
    assert str(d.flow.phase) == "idle", "a failed write must not leave the vend flow stuck"
    assert screen(rig) == ("out_of_service", "ledger_down")
    state = d.snapshot_state()
    assert state.mode == "service"
    assert [a.severity for a in state.alarms if a.code == "ledger_unavailable"] == ["critical"]
    fed, plays, journal = notifier.fed, len(rig.player.plays), len(rig.board.journal)
    rig.press()  # a press while down: told so, no video, no kit
    rig.clock.advance(0.5)
    rig.daemon.pump()
    assert screen(rig) == ("out_of_service", "ledger_down")
    assert (len(rig.player.plays), len(rig.board.journal)) == (plays, journal)
    assert notifier.fed == fed, "the watchdog must not be fed while the ledger cannot write"


def test_disk_full_puts_the_unit_out_of_service_until_space_returns(
    small_fs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig, notifier = rig_on(tmp_path)
    try:
        rig.press()
        rig.complete()
        assert len(rig.events("dispense")) == 1
        filler = fill(small_fs)
        for _ in range(300):  # WAL pages already on disk take a few more writes: go until one fails
            rig.press()
            if rig.daemon.ledger_down is not None:
                break
            rig.complete()
            rig.clock.advance(61)
        assert rig.daemon.ledger_down is not None, "expected a write to fail on a full disk"
        assert "full" in rig.daemon.ledger_down
        assert drops(rig) == accounted(rig), "every kit that dropped is recorded or journaled"
        assert_out_of_service(rig, notifier)
        logged = capsys.readouterr().out
        assert re.search(r"crit\w*\s*\]?\s*ledger_unavailable", logged), "the alarm goes to the log too"
        filler.unlink()  # the technician frees space
        fed = notifier.fed
        rig.clock.advance(2.1)
        rig.daemon.pump()
        assert rig.daemon.ledger_down is None and rig.daemon.mode == "vending"
        assert screen(rig)[0] != "out_of_service"
        assert notifier.fed > fed, "the watchdog is fed again"
        before = len(rig.events("dispense"))
        rig.clock.advance(61)
        rig.press()
        rig.complete()
        assert len(rig.events("dispense")) == before + 1
        assert drops(rig) == len(rig.events("dispense")), "after recovery every kit is recorded once"
        codes = [(e.code, e.state) for e in rig.events("alarm") if e.code == "ledger_unavailable"]
        assert codes == [("ledger_unavailable", "raised"), ("ledger_unavailable", "cleared")]
    finally:
        rig.close()


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A 16 MiB ext4 on a loop device, mounted errors=remount-ro like a unit's SD card."""
    assert os.geteuid() == 0, "this test mounts a loop device: run it as root"
    image, data = tmp_path / "sd.img", tmp_path / "data"
    data.mkdir()
    with open(image, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mount_sd(image, data)
    try:
        yield image, data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def mount_sd(image: Path, data: Path) -> None:
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(data)], check=True)


def sd_card_error(data: Path) -> None:
    """What a failing SD card does: ext4 sees an error and the kernel remounts it read-only."""
    source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(data)], capture_output=True, text=True,
                            check=True).stdout.strip()
    Path(f"/sys/fs/ext4/{os.path.basename(source)}/trigger_fs_error").write_text("nalox test\n")
    options = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", str(data)], capture_output=True, text=True,
                             check=True).stdout
    assert "ro" in re.split(r"[,\s]", options) or "emergency_ro" in options, options


def test_read_only_remount_mid_video_gives_no_kit_and_vends_after_the_card_is_back(
    ext4: tuple[Path, Path], tmp_path: Path
) -> None:
    image, data = ext4
    rig, notifier = rig_on(tmp_path)
    try:
        rig.press()  # the video is playing when the SD card goes read-only
        sd_card_error(data)
        rig.complete()  # the completed-video record fails: no kit may drop
        assert drops(rig) == 0 and len(rig.board.journal) == 0
        assert_out_of_service(rig, notifier)
        rig.clock.advance(2.1)
        rig.daemon.pump()
        assert rig.daemon.ledger_down is not None, "a read-only card stays out of service"
        # no watchdog: systemd restarts the daemon; the card is checked and mounted again
        rig.daemon.stop()
        subprocess.run(["umount", str(data)], check=True)
        assert subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True).returncode in (0, 1)
        mount_sd(image, data)
        rig.restart()
        assert_vends_again(rig, kits=1)
    finally:
        rig.close()


def assert_vends_again(rig: Rig, kits: int) -> None:
    """Back in service: the next press gives a kit, and every kit that dropped is recorded once."""
    assert rig.daemon.ledger_down is None and rig.daemon.mode == "vending"
    rig.clock.advance(61)
    rig.press()
    rig.complete()
    assert drops(rig) == len(rig.events("dispense")) == kits


# ---------------------------------------------------------------- a ledger that cannot write at start


def mqtt_rig(tmp_path: Path, broker: Broker) -> tuple[Rig, CountingNotifier]:
    """A rig whose ledger lives on tmp_path/data (the small file system) and whose runtime folder (the
    count of starts with the ledger down) lives beside it, reporting to a real mosquitto."""
    mqtt = {"port": broker.port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5,
            "telemetry_interval_s": 3600}
    paths = {"data_dir": "data", "runtime_dir": str(tmp_path / "run")}
    config = make_config(tmp_path, mqtt=mqtt, paths=paths)
    rig = Rig(tmp_path, config)
    notifier = CountingNotifier()
    rig.daemon.notifier = notifier
    return rig, notifier


def restarted(rig: Rig) -> CountingNotifier:
    """What systemd does when the watchdog lapses: a new daemon on the same files."""
    rig.daemon.stop()
    rig.restart()
    notifier = CountingNotifier()
    rig.daemon.notifier = notifier
    return notifier


def reported_state(watcher: Watcher, want: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """The first retained/live state on the broker for which `want` holds."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        state: dict[str, Any] = json.loads(watcher.next("nalox/v1/test-unit-1/state", timeout=15).payload)
        if want(state):
            return state
    raise AssertionError(f"expected a state over MQTT with {what}")


def out_of_service(state: dict[str, Any]) -> bool:
    return state["mode"] == "service" and any(
        a["code"] == "ledger_unavailable" and a["severity"] == "critical" for a in state["alarms"])


def assert_watchdog_held(rig: Rig, notifier: CountingNotifier, hold_s: float, starts: int) -> None:
    """Fed while the start's hold lasts (the unit is alive and says it is out of service), then not:
    systemd restarts it, the hold twice as long with each start in a row."""
    assert (rig.tmp_path / "run" / "ledger-down-starts").read_text().strip() == str(starts)
    rig.clock.advance(hold_s - 1)
    fed = notifier.fed
    rig.daemon.pump()
    assert notifier.fed > fed, f"expected the watchdog fed during the {hold_s:.0f} s hold"
    rig.clock.advance(2)
    rig.daemon.pump()
    fed = notifier.fed
    rig.clock.advance(2.1)
    rig.daemon.pump()
    assert notifier.fed == fed, f"expected the watchdog stopped after the {hold_s:.0f} s hold"


@pytest.fixture
def vended_once(small_fs: Path, tmp_path: Path, broker: Broker) -> Iterator[tuple[Rig, Watcher]]:
    """A reporting rig on the small file system that gave one kit, and a watcher of its state."""
    rig, _ = mqtt_rig(tmp_path, broker)
    watcher = Watcher(broker.port, ["nalox/v1/test-unit-1/state"])
    try:
        rig.press()
        rig.complete()
        assert len(rig.events("dispense")) == 1
        yield rig, watcher
    finally:
        watcher.close()
        rig.close()


def test_disk_full_before_start_comes_up_out_of_service_says_so_and_vends_when_space_returns(
    vended_once: tuple[Rig, Watcher], small_fs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig, watcher = vended_once
    filler = fill(small_fs)  # the disk fills while the daemon is stopped (a log, an update)
    notifier = restarted(rig)
    assert rig.daemon.ledger_down is not None and "full" in rig.daemon.ledger_down, "and did not crash"
    state = reported_state(watcher, out_of_service, "mode service and the critical ledger alarm")
    assert [c["stock"] for c in state["columns"]][:1] == [19], "what the ledger holds is still reported"
    assert re.search(r"crit\w*\s*\]?\s*ledger_unavailable", capsys.readouterr().out), "and logged"
    assert_watchdog_held(rig, notifier, 60, starts=1)
    assert_out_of_service(rig, notifier)  # a press: told so, no video, no kit
    notifier = restarted(rig)  # systemd: the disk is still full
    assert_watchdog_held(rig, notifier, 120, starts=2)
    filler.unlink()  # the technician frees space: no restart needed
    rig.clock.advance(2.1)
    rig.daemon.pump()
    assert rig.daemon.ledger_down is None and rig.daemon.mode == "vending"
    assert not (tmp_path / "run" / "ledger-down-starts").exists()
    fed = notifier.fed
    rig.daemon.pump()
    assert notifier.fed > fed, "the watchdog is fed again"
    reported_state(watcher, lambda s: s["mode"] == "vending" and not s["alarms"], "vending again")
    assert_vends_again(rig, kits=2)
    codes = [(e.code, e.state) for e in rig.events("alarm") if e.code == "ledger_unavailable"]
    assert codes == [("ledger_unavailable", "raised"), ("ledger_unavailable", "cleared")]


def test_read_only_before_start_comes_up_out_of_service_and_vends_once_writable(
    vended_once: tuple[Rig, Watcher], small_fs: Path
) -> None:
    rig, watcher = vended_once
    rig.daemon.stop()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    rig.restart()
    notifier = CountingNotifier()
    rig.daemon.notifier = notifier
    assert rig.daemon.ledger_down is not None and "read" in rig.daemon.ledger_down.lower()
    assert screen(rig) == ("out_of_service", "ledger_down")
    state = reported_state(watcher, out_of_service, "mode service and the critical ledger alarm")
    assert state["last_seq"] == rig.daemon.ledger.last_seq() > 0, "the read-only ledger is still read"
    assert_watchdog_held(rig, notifier, 60, starts=1)
    assert_out_of_service(rig, notifier)
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    rig.clock.advance(2.1)
    rig.daemon.pump()
    assert_vends_again(rig, kits=2)
