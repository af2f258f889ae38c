"""Firmware update over the serial link, against the simulated board (real firmware, real link):
a good update, refusals before sending, a corrupted chunk, a firmware that never says HELLO (rolled
back by the board itself), and a power cut at every stage (old or new firmware after, never neither)."""

from __future__ import annotations

import queue
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.diag import firmware_bundle as fwbundle
from controller.diag.firmware_update import UpdateFailed, UpdateRefused, update_board
from controller.serial.board_api import BoardEvent, DoorChanged
from controller.serial.board_link import SerialBoard
from firmware_py import bootsel
from firmware_py.board import FIRMWARE_VERSION
from firmware_py.nvs import MemoryStore
from simulator.board import SimulatedBoard
from simulator.memlink import serial_pair

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware_py"
NEW = "0.3.0"


class PowerCut(Exception):
    """Raised by the store at the chosen write: the board loses power there (the write never happens)."""


class CuttingStore:
    """A MemoryStore that records every write and can cut the power at write number `cut_at`."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.writes: list[tuple[str, str]] = []
        self.cut_at: int | None = None

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def _write(self, kind: str, key: str) -> None:
        self.writes.append((kind, key))
        if self.cut_at is not None and len(self.writes) == self.cut_at:
            self.cut_at = None
            raise PowerCut(f"power cut at write {len(self.writes)}: {kind} {key}")

    def put(self, key: str, value: bytes) -> None:
        self._write("put", key)
        self.inner.put(key, value)

    def append(self, key: str, data: bytes) -> None:
        self._write("append", key)
        self.inner.append(key, data)

    def drop(self, prefix: str) -> None:
        self._write("drop", prefix)
        self.inner.drop(prefix)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    path = tmp_path_factory.mktemp("keys") / "signing.pem"
    public = fwbundle.keygen(path)
    return fwbundle.load_private_key(path), public


def make_bundle(keys: tuple[Any, str], tmp: Path, version: str = NEW, model: str = "nalox-sim",
                patch: dict[str, bytes] | None = None) -> fwbundle.Bundle:
    files = fwbundle.collect(FIRMWARE)
    files.update(patch or {})
    out = tmp / f"fw-{version}-{model}.zip"
    fwbundle.sign(files, keys[0], version, model, out)
    bundle = fwbundle.read(out)
    assert fwbundle.verify(bundle, [keys[1]]) == keys[1]
    return bundle


class Rig:
    def __init__(self, store: Any = None, trial_ms: float = 15_000) -> None:
        ctl_end, board_end = serial_pair()
        self.board = SimulatedBoard(columns=2, stock=5, spin_ms=5, trial_ms=trial_ms, nvs=store)
        self.board.attach(board_end)
        self.board.start()
        self.board.set_door(True)  # service mode
        self.events: queue.Queue[BoardEvent] = queue.Queue()
        self.link = SerialBoard.from_port(ctl_end, request_timeout=10.0)
        self.link.start(self.events.put)

    def close_door(self) -> None:
        self.board.set_door(False)
        while True:
            event = self.events.get(timeout=10)
            if isinstance(event, DoorChanged) and not event.open:
                return

    def close(self) -> None:
        self.link.close()
        self.board.stop()

    def running(self) -> str:
        self.link.ping()
        assert self.link.info is not None
        return self.link.info.firmware


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_bundle_is_signed_whole_and_refused_when_touched(keys, tmp_path):
    bundle = make_bundle(keys, tmp_path)
    assert set(bundle.files) == {f"firmware_py/{p.name}" for p in FIRMWARE.glob("*.py")}
    other_private = tmp_path / "other.pem"
    other = fwbundle.keygen(other_private)
    with pytest.raises(fwbundle.BundleError, match="not signed by any of the 1 trusted keys"):
        fwbundle.verify(bundle, [other])
    with pytest.raises(fwbundle.BundleError, match="no trusted keys"):
        fwbundle.verify(bundle, [])
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tmp_path / f"fw-{NEW}-nalox-sim.zip") as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"\n# evil\n" if item.filename.endswith("board.py") else data)
    with pytest.raises(fwbundle.BundleError, match="board.py does not match its SHA-256"):
        fwbundle.read(tampered)


def test_good_update_runs_the_new_firmware(keys, tmp_path, rig):
    bundle = make_bundle(keys, tmp_path)
    assert rig.running() == FIRMWARE_VERSION
    result = update_board(rig.link, bundle, rig.events)
    assert (result.old_version, result.new_version) == (FIRMWARE_VERSION, NEW)
    assert result.chunks >= bundle.size // 180
    stats = rig.board.stats()
    assert (stats["firmware"], stats["slot"]) == (NEW, 1)
    assert rig.board.fw is not None and type(rig.board.fw).__module__ == "firmware_py.board"
    assert "<slot 1>" in type(rig.board.fw)._on_hello.__code__.co_filename, "the code the board received runs"
    assert not bootsel.in_trial(rig.board.nvs), "our HELLO confirmed it"
    rig.close_door()
    assert rig.link.dispense(77, 1).dropped
    seconds_at_115200 = result.wire_bytes * 10 / 115200
    print(f"\nupdate of {bundle.size} bytes: {result.chunks} chunks, {result.wire_bytes} bytes on the line "
          f"(= {seconds_at_115200:.1f} s at 115200 baud), {result.seconds:.1f} s here")


def test_refusals_before_anything_is_sent(keys, tmp_path, rig):
    before = rig.board.stats()["link"]["frames_received"]
    with pytest.raises(UpdateRefused, match=r"older than the running 0\.2\.0 \(a downgrade\); use --force"):
        update_board(rig.link, make_bundle(keys, tmp_path, version="0.1.9"), rig.events)
    with pytest.raises(UpdateRefused, match="already runs"):
        update_board(rig.link, make_bundle(keys, tmp_path, version=FIRMWARE_VERSION), rig.events)
    with pytest.raises(UpdateRefused, match="for board model 'nalox-esp32-6', this board is 'nalox-sim'"):
        update_board(rig.link, make_bundle(keys, tmp_path, model="nalox-esp32-6"), rig.events)
    rig.close_door()
    with pytest.raises(UpdateRefused, match="service door is closed"):
        update_board(rig.link, make_bundle(keys, tmp_path), rig.events)
    link = rig.board.stats()["link"]
    assert link["frames_received"] - before <= 8, "only pings, hellos and status requests"
    assert rig.board.stats()["slot"] == 0 and rig.running() == FIRMWARE_VERSION


def test_downgrade_with_force_installs_it(keys, tmp_path, rig):
    result = update_board(rig.link, make_bundle(keys, tmp_path, version="0.1.9"), rig.events, force=True)
    assert result.new_version == "0.1.9" and rig.running() == "0.1.9"


def test_corrupted_chunk_is_caught_by_the_board_and_nothing_switches(keys, tmp_path, rig):
    bundle = make_bundle(keys, tmp_path)

    def corrupt(index: int, offset: int, data: bytes) -> bytes:
        return bytes([data[0] ^ 0x20]) + data[1:] if (index, offset) == (3, 180) else data

    with pytest.raises(UpdateFailed, match="refused the switch .* bad_hash: file firmware_py/.* SHA-256"):
        update_board(rig.link, bundle, rig.events, chunk_filter=corrupt)
    assert bootsel.read(rig.board.nvs)[0] == 0 and rig.running() == FIRMWARE_VERSION
    assert update_board(rig.link, bundle, rig.events).new_version == NEW, "a clean retry goes through"


def test_firmware_that_never_says_hello_is_rolled_back_by_the_board(keys, tmp_path):
    board_py = (FIRMWARE / "board.py").read_text()
    hello = '        """Version negotiation:'
    mute = board_py.replace(hello, "        return\n" + hello, 1)
    assert mute != board_py
    rig = Rig(trial_ms=2500)
    try:
        bundle = make_bundle(keys, tmp_path, patch={"firmware_py/board.py": mute.encode()})
        with pytest.raises(UpdateFailed, match=r"did not come up; the board rolled back by itself"):
            update_board(rig.link, bundle, rig.events, timeout=30)
        assert rig.board.boot_reasons[-1] == "rolled_back"
        assert rig.running() == FIRMWARE_VERSION and bootsel.read(rig.board.nvs)[:3] == [0, 0, 0]
    finally:
        rig.close()


def write_log(keys: tuple[Any, str], tmp: Path) -> list[tuple[str, str]]:
    store = CuttingStore()
    rig = Rig(store)
    try:
        start = len(store.writes)
        update_board(rig.link, make_bundle(keys, tmp), rig.events)
        return store.writes[start:]
    finally:
        rig.close()


def cut_points(log: list[tuple[str, str]]) -> list[int]:
    """Every write that is not a chunk append, and the first, a middle and the last append."""
    appends = [i for i, (kind, _) in enumerate(log) if kind == "append"]
    chosen = {i for i, (kind, _) in enumerate(log) if kind != "append"}
    chosen |= {appends[0], appends[len(appends) // 2], appends[-1]}
    return sorted(chosen)


def test_power_cut_at_every_stage_leaves_old_or_new_never_neither(keys, tmp_path):
    log = write_log(keys, tmp_path)
    kinds = {kind for kind, _ in log}
    assert {"drop", "put", "append"} <= kinds and ("put", bootsel.SLOT_KEY) in log
    bundle = make_bundle(keys, tmp_path)
    outcomes: dict[str, int] = {}
    for point in cut_points(log):
        store = CuttingStore()
        rig = Rig(store, trial_ms=8000)  # a cut rolls back at the next boot, never waiting for this
        try:
            store.cut_at = len(store.writes) + point + 1
            try:
                update_board(rig.link, bundle, rig.events, timeout=20)
                outcome = "new"
            except UpdateFailed:
                outcome = "failed"
            assert store.cut_at is None, f"the cut at {log[point]} happened"
            running = rig.running()
            assert running in (FIRMWARE_VERSION, NEW), f"cut at {log[point]}: runs {running!r}"
            active = bootsel.read(store)[0]
            assert bootsel.verify(store, active) is None, f"cut at {log[point]}: slot {active} is not whole"
            assert not bootsel.in_trial(store)
            outcomes[f"{outcome}/{running}"] = outcomes.get(f"{outcome}/{running}", 0) + 1
        finally:
            rig.close()
    print(f"\npower cut at {len(cut_points(log))} of {len(log)} writes: {outcomes}")
    assert outcomes.get(f"failed/{FIRMWARE_VERSION}", 0) > 0 and sum(
        n for k, n in outcomes.items() if k.endswith(NEW)) > 0
