"""`python -m bench.firmware_update [--baud 115200]`: how long a firmware update of this checkout's firmware
takes on a line paced at the baud rate (each write takes len * 10 bits / baud before the peer sees it, in
both directions), against the simulated board with the real firmware and the controller's real link.
"""

from __future__ import annotations

import argparse
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

from controller.diag import firmware_bundle
from controller.diag.firmware_update import update_board
from controller.serial.board_api import BoardEvent
from controller.serial.board_link import SerialBoard
from firmware_py.board import FIRMWARE_VERSION
from simulator.board import SimulatedBoard
from simulator.memlink import serial_pair


class PacedPort:
    """A memlink end whose writes take the time the bytes need on a serial line at `baud` (8N1)."""

    def __init__(self, inner: Any, baud: int) -> None:
        self._inner = inner
        self._byte_s = 10.0 / baud

    def write(self, data: bytes) -> int:
        time.sleep(len(data) * self._byte_s)
        written: int = self._inner.write(data)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_inner", "_byte_s"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)


def measure(baud: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "k.pem"
        firmware_bundle.keygen(key)
        bundle = firmware_bundle.sign(firmware_bundle.collect(Path(firmware_bundle.__file__).parents[2] /
                                                              "firmware_py"),
                                      firmware_bundle.load_private_key(key), "9.0.0", "nalox-sim",
                                      Path(tmp) / "fw.zip")
    ctl_end, board_end = serial_pair()
    board = SimulatedBoard(columns=2, stock=5, spin_ms=5)
    board.attach(PacedPort(board_end, baud))
    board.start()
    board.set_door(True)
    events: queue.Queue[BoardEvent] = queue.Queue()
    link = SerialBoard.from_port(PacedPort(ctl_end, baud), request_timeout=30.0)
    try:
        link.start(events.put, timeout=10)
        result = update_board(link, bundle, events, timeout=120)
    finally:
        link.close()
        board.stop()
    return {"baud": baud, "files": len(bundle.files), "bytes": bundle.size, "chunks": result.chunks,
            "wire_bytes": result.wire_bytes, "seconds": round(result.seconds, 1),
            "from": FIRMWARE_VERSION, "to": result.new_version}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--baud", type=int, default=115200)
    print(measure(p.parse_args().baud))


if __name__ == "__main__":
    main()
