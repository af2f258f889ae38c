"""The one builder of an in-process simulated unit, for `nalox demo --units K`, the benchmarks and the
tests: a SimulatedBoard on the simulator's in-memory serial line, the real SerialBoard link, the real
UnitDaemon (ledger, mpv, MQTT reporter) loaded from a generated unit.toml as `nalox unit run` loads it.

The same UnitSpec and unit.toml drive the process-per-room Stack (nalox/stack.py) of the demo and soak."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller.clock import RealClock
from controller.config import load_config
from controller.daemon import UnitDaemon
from controller.serial.board_api import Board
from controller.serial.board_link import SerialBoard
from controller.vend.video import MpvPlayer, VideoPlayer
from nalox.census import TERMINAL_EVENTS
from nalox.configs import ROOM_TEMPERATURE_C, UnitSpec, unit_toml
from nalox.tools import CACHE, clip
from simulator.board import BUSY_WAIT_S, IDLE_WAIT_S, SimulatedBoard
from simulator.memlink import serial_pair


@dataclass
class SimUnit:
    """One simulated unit: board, link, player and daemon, all in this process."""

    spec: UnitSpec
    board: SimulatedBoard
    daemon: UnitDaemon

    @property
    def unit_id(self) -> str:
        return self.spec.unit_id

    def press(self, lang: str = "en") -> None:
        self.board.press(lang)

    def terminal(self) -> int:
        """Presses that have ended in the ledger (dispensed, failed, out of stock)."""
        return sum(self.daemon.ledger.count(t) for t in TERMINAL_EVENTS)

    def ledger_dispensed(self) -> int:
        return int(self.daemon.ledger.count("dispense"))

    def ledger_stock(self) -> dict[str, int]:
        return {str(c.column): int(c.stock) for c in self.daemon.ledger.columns()}

    def physical_dropped(self) -> int:
        """Kits that really left the simulated machine."""
        return int(self.board.stats()["dropped"])

    def physical_stock(self) -> dict[int, int]:
        return {int(c): int(n) for c, n in self.board.stats()["stock"].items()}

    def stop(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.board.stop()


def start_unit(
    spec: UnitSpec,
    workdir: Path,
    mqtt_port: int,
    seed: int = 0,
    clips: Path = CACHE,
    wrap_board: Callable[[Board], Board] | None = None,
    player: VideoPlayer | None = None,
    board_idle_s: float = IDLE_WAIT_S,
    board_busy_s: float = BUSY_WAIT_S,
    board_nvs: bool = True,
) -> SimUnit:
    """Build and start one unit in `workdir` (its unit.toml, ledger, board memory); `clips` is where the
    test clip is made once; `wrap_board` wraps the controller's link (a benchmark's stopwatch); `player`
    replaces mpv (a fleet's nalox.simplayer.SimPlayer); `board_idle_s` and `board_busy_s` are the board's
    waits between main-loop steps, idle and busy (simulator/board.py); without `board_nvs` the board's
    non-volatile storage (journal, boot count) lives in memory, not in files under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    video = clip(spec.video_seconds, clips)
    conf_path = workdir / "unit.toml"
    conf_path.write_text(
        unit_toml(spec, workdir, f"mem:{spec.unit_id}", mqtt_port, {"en": video, "es": video})
    )
    config = load_config(conf_path)
    controller_end, board_end = serial_pair(seed=seed)
    board = SimulatedBoard(
        columns=spec.columns,
        stock=spec.stock,
        seed=seed,
        spin_ms=spec.spin_ms,
        nvs_path=str(workdir / "board-nvs") if board_nvs else None,
        board_id=f"sim-{spec.unit_id}",
        idle_wait_s=board_idle_s,
        busy_wait_s=board_busy_s,
    )
    board.attach(board_end)
    board.set_temperature(ROOM_TEMPERATURE_C)
    board.start()
    try:
        link: Board = SerialBoard.from_port(controller_end)
        if wrap_board is not None:
            link = wrap_board(link)
        video_player = player or MpvPlayer(config.videos, config.paths.runtime_path())
        daemon = UnitDaemon(config, link, video_player, RealClock())
        daemon.start()
    except Exception:
        board.stop()
        raise
    return SimUnit(spec, board, daemon)
