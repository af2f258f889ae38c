"""A whole board under MicroPython 1.27: the firmware's main loop on a simulated HAL inside the VM, its
UART bridged to a real pty, driven by the controller's real serial link (controller SerialBoard)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from controller.serial.board_api import BoardEvent, BoardRebooted, ButtonPressed
from controller.serial.board_link import SerialBoard
from simulator.mpboard import MicroPythonBoard
from simulator.pty import PtyPort
from tests.waiting import wait_for


class Rig:
    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.path = tmp_path / "dispenser"
        self.port = PtyPort(str(self.path))
        self.board = MicroPythonBoard(**options)
        self.board.attach(self.port)
        self.board.start()
        self.events: queue.Queue[BoardEvent] = queue.Queue()

    def close(self) -> None:
        self.board.stop()
        self.port.close()


@contextmanager
def door_open_link(rig: Rig) -> Iterator[SerialBoard]:
    """The door opened and a started SerialBoard (15 s requests) that has seen it, as for an update."""
    rig.board.set_door(True)
    with SerialBoard(str(rig.path), request_timeout=15.0) as link:
        link.start(on_event=rig.events.put)
        wait_for(lambda: link.status().door_open, 5, "the door open")
        yield link


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, columns=4, stock=30, spin_ms=20)
    yield r
    r.close()


def test_dispenses_over_the_controller_link_on_micropython(rig: Rig) -> None:
    with SerialBoard(str(rig.path)) as link:
        info = link.start(on_event=rig.events.put)
        assert (info.protocol, info.model, info.board_id) == (2, "nalox-mpsim", "mpsim-0001")
        outcomes = [link.dispense(cid, 1 + cid % 4) for cid in range(1, 21)]
        assert all(o.dropped for o in outcomes)
        assert link.dispense(7, 4).dropped, "a repeated command id answers from the journal"
        assert link.query_result(999).outcome == "unknown_command"
        rig.board.press(1)
        event = rig.events.get(timeout=5)
        while not isinstance(event, ButtonPressed):
            event = rig.events.get(timeout=5)
        assert event.index == 1
    stats = rig.board.stats()
    assert stats["implementation"] == "micropython"
    assert stats["dropped"] == 20
    assert stats["per_command"] == {str(cid): 1 for cid in range(1, 21)}


def test_reboot_mid_dispense_is_interrupted_never_doubled(tmp_path: Path) -> None:
    rig = Rig(tmp_path, columns=2, stock=10, spin_ms=3000)  # long enough to reboot it mid-turn under load
    try:
        with SerialBoard(str(rig.path)) as link:
            link.start(on_event=rig.events.put)
            result: list[Any] = []
            worker = threading.Thread(target=lambda: result.append(link.dispense(41, 1)))
            worker.start()
            wait_for(lambda: link.status().motors[0] == 1, 10, "the coil turning")
            rig.board.reboot()
            worker.join(20)
            assert result and result[0].outcome == "interrupted"
            boots = []
            while not rig.events.empty():
                event = rig.events.get_nowait()
                if isinstance(event, BoardRebooted):
                    boots.append(event.reason)
            assert boots[-1:] == ["sim_reboot"], boots
            assert link.dispense(41, 1).outcome == "interrupted", "the journal keeps the answer"
            assert link.dispense(42, 1).dropped
        stats = rig.board.stats()
        assert stats["per_command"] == {"42": 1} and stats["dropped"] == 1
    finally:
        rig.close()


def test_noisy_line_results_match_physical_drops(tmp_path: Path) -> None:
    rig = Rig(tmp_path, columns=4, stock=20, spin_ms=10, noise=0.02, seed=5)
    try:
        with SerialBoard(str(rig.path)) as link:
            link.start()
            outcomes = [link.dispense(cid, 1 + cid % 4) for cid in range(100, 140)]
            counters = link.counters
        stats = rig.board.stats()
        for o in outcomes:
            assert stats["per_command"].get(str(o.command_id), 0) == (1 if o.dropped else 0), o
        assert sum(o.dropped for o in outcomes) == stats["dropped"] == 40
        assert counters.crc_errors + counters.retransmissions > 5, "the noise really was there"
    finally:
        rig.close()


def test_status_light_and_host_silence(tmp_path: Path) -> None:
    rig = Rig(tmp_path, columns=2, stock=5, spin_ms=20, host_silent_ms=400)
    try:
        with SerialBoard(str(rig.path)) as link:
            link.start()
            state = link.light("blinking")
            assert (state.requested, state.shown) == ("blinking", "blinking")
            assert link.light("lit").shown == "lit"
            wait_for(lambda: rig.board.stats()["light_shown"] == 3, 10, "the host-silent pattern")
            assert rig.board.stats()["light"] in (0, 1)
            link.ping()
            wait_for(lambda: rig.board.stats()["light_shown"] == 1, 5, "lit again once the controller spoke")
    finally:
        rig.close()


def test_heap_after_start_during_a_dispense_burst_and_with_a_full_journal(rig: Rig) -> None:
    """The figures of the issue note (printed); the bounds keep the firmware inside an RP2040's heap."""
    start = rig.board.mem()
    rig.board.track_heap(True)
    with SerialBoard(str(rig.path)) as link:
        link.start()
        for cid in range(1, 31):
            link.dispense(cid, 1 + cid % 4)
        burst = rig.board.mem()
        rig.board.fill_journal(512, 10_000)
        full = rig.board.mem()
        for cid in range(31, 41):
            link.dispense(cid, 1 + cid % 4)
        after_full = rig.board.mem()
    firmware = start["live"] - start["before_firmware"]
    print(f"\nheap (bytes, live objects): before firmware {start['before_firmware']}, after start "
          f"{start['live']} (firmware {firmware}), peak during 30 dispenses {burst['peak_since_last']}, "
          f"after "
          f"the burst {burst['live']}, with a full 512-entry journal {full['live']}, peak dispensing with it "
          f"{after_full['peak_since_last']}")
    assert firmware < 120_000
    assert full["live"] < 160_000  # RP2040 MicroPython: about 190 KB of heap
    assert after_full["peak_since_last"] < 200_000


def test_firmware_update_on_micropython_good_and_rolled_back(tmp_path: Path) -> None:
    """The update end to end on the real interpreter: a corrupted chunk is refused by the board's hash
    check; a good bundle's slot is imported by MicroPython from its file system; a firmware that never
    answers HELLO is rolled back by the board itself."""
    from controller.diag import firmware_bundle as fwbundle
    from controller.diag.firmware_update import UpdateFailed, update_board
    from firmware_py.board import FIRMWARE_VERSION

    firmware = Path(__file__).resolve().parents[2] / "firmware_py"
    key = tmp_path / "k.pem"
    public = fwbundle.keygen(key)
    files = fwbundle.collect(firmware)
    good = fwbundle.sign(files, fwbundle.load_private_key(key), "0.3.0", "nalox-mpsim", tmp_path / "good.zip")
    board_py = files["firmware_py/board.py"].decode()
    hello = '        """Version negotiation:'
    mute = board_py.replace(hello, "        return\n" + hello, 1)
    bad = fwbundle.sign({**files, "firmware_py/board.py": mute.encode()}, fwbundle.load_private_key(key),
                        "0.4.0", "nalox-mpsim", tmp_path / "bad.zip")
    for bundle in (good, bad):
        fwbundle.verify(fwbundle.read(tmp_path / ("good.zip" if bundle is good else "bad.zip")), [public])
    rig = Rig(tmp_path, columns=2, stock=5, spin_ms=20, trial_ms=4000)
    try:
        with door_open_link(rig) as link:

            def corrupt(index: int, offset: int, data: bytes) -> bytes:
                return data[:-1] + bytes([data[-1] ^ 1]) if (index, offset) == (4, 0) else data

            with pytest.raises(UpdateFailed, match="bad_hash"):
                update_board(link, good, rig.events, timeout=60, chunk_filter=corrupt)
            assert rig.board.stats()["slot"] == 0, "a corrupted chunk switches nothing"
            result = update_board(link, good, rig.events, timeout=60)
            assert (result.old_version, result.new_version) == (FIRMWARE_VERSION, "0.3.0")
            stats = rig.board.stats()
            assert (stats["firmware"], stats["slot"], stats["implementation"]) == ("0.3.0", 1, "micropython")
            with pytest.raises(UpdateFailed, match=r"rolled back by itself and runs 0\.3\.0"):
                update_board(link, bad, rig.events, timeout=60)
            stats = rig.board.stats()
            assert (stats["firmware"], stats["slot"], stats["reasons"][-1]) == ("0.3.0", 1, "rolled_back")
    finally:
        rig.close()


POWER_CUTS = [  # (kind, key, nth write of that kind to that key): the stages of an update
    ("append", "fw1/firmware_py/codec.py", 40),  # in the middle of the transfer
    ("put", "fwslot", 1),  # the switch itself (the write that would make the new slot active)
    ("put", "fwslot", 2),  # the new firmware's first start, on trial, before it said HELLO
    ("put", "fwslot", 3),  # the confirmation, as it answers HELLO
]


@pytest.mark.parametrize("cut", POWER_CUTS, ids=lambda c: f"{c[0]}-{c[1].replace('/', '_')}-{c[2]}")
def test_power_cut_during_an_update_on_micropython(tmp_path: Path, cut: tuple[str, str, int]) -> None:
    """After the cut the board runs the old firmware or the new one, from a whole slot, never neither."""
    from controller.diag import firmware_bundle as fwbundle
    from controller.diag.firmware_update import UpdateFailed, update_board
    from firmware_py.board import FIRMWARE_VERSION

    firmware = Path(__file__).resolve().parents[2] / "firmware_py"
    key = tmp_path / "k.pem"
    fwbundle.keygen(key)
    bundle = fwbundle.sign(fwbundle.collect(firmware), fwbundle.load_private_key(key), "0.3.0", "nalox-mpsim",
                           tmp_path / "fw.zip")
    rig = Rig(tmp_path, columns=2, stock=5, spin_ms=20, trial_ms=8000)
    try:
        with door_open_link(rig) as link:
            rig.board.cut_power_at(*cut)
            try:
                update_board(link, bundle, rig.events, timeout=30)
            except UpdateFailed:
                pass
            link.ping()
            assert link.info is not None
            running = link.info.firmware
        stats = rig.board.stats()
        assert stats["cuts"] == [f"{cut[0]} {cut[1]}"], "the power really was cut there"
        assert running in (FIRMWARE_VERSION, "0.3.0") and stats["firmware"] == running
        assert stats["slot_ok"] and not stats["on_trial"]
        assert (running == "0.3.0") == (cut[2] == 2 and cut[1] == "fwslot"), (cut, running)
    finally:
        rig.close()
