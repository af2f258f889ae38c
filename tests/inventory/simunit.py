"""A real simulated unit for the inventory tests: SimulatedBoard on the in-memory serial line, the real
SerialBoard link, the real UnitDaemon with its ledger, mpv playing a short clip, and its MQTT reporter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.cli import make_clip as clip_with_ffmpeg

CLIP_SECONDS = 1.0


def make_clip(folder: Path) -> Path:
    """A one-second clip made by ffmpeg (cached in `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clip-1s.mp4"
    return path if path.exists() else clip_with_ffmpeg(path, CLIP_SECONDS)


def unit_toml(
    unit: str,
    site: str,
    workdir: Path,
    mqtt_port: int,
    clip: Path,
    columns: int,
    stock: int,
    par: int,
    ack_resend_s: float = 5,
    tls: dict[str, str] | None = None,
) -> str:
    cols = "".join(
        f'[[columns]]\ncolumn = {c}\nproduct = "nasal-4mg"\ncapacity = 30\npar = {par}\n'
        f'initial_stock = {stock}\nlot = "LOT-{c}"\nexpiry = 2028-06-30\n'
        for c in range(1, columns + 1)
    )
    return f'''[unit]
id = "{unit}"
site = "{site}"
[serial]
port = "mem:{unit}"
[products.nasal-4mg]
name = "Naloxone HCl nasal spray 4 mg, 2-pack"
doses = 2
{cols}
[videos]
default_language = "en"
expected_length_s = {CLIP_SECONDS}
grace_s = 10
headless = true
[videos.files]
en = "{clip}"
es = "{clip}"
[policies]
multi_kit_window_s = 0
status_poll_s = 5
[paths]
data_dir = "{workdir}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{unit}"
keepalive = 10
telemetry_interval_s = 2
reconnect_min_s = 0.2
reconnect_max_s = 2
ack_resend_s = {ack_resend_s}
''' + (
        f'[mqtt.tls]\nca_file = "{tls["ca"]}"\ncert_file = "{tls["cert"]}"\nkey_file = "{tls["key"]}"\n'
        if tls
        else ""
    )


@dataclass
class SimUnit:
    unit: str
    board: Any  # simulator.board.SimulatedBoard
    daemon: Any  # controller.daemon.UnitDaemon

    @property
    def site(self) -> str:
        return str(self.daemon.config.unit.site)

    def press(self) -> None:
        self.board.press("en")

    def physical_dropped(self) -> int:
        return int(self.board.stats()["dropped"])

    def physical_stock(self) -> dict[int, int]:
        return {int(c): int(n) for c, n in self.board.stats()["stock"].items()}

    def stop(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.board.stop()


def start_unit(
    unit: str,
    site: str,
    workdir: Path,
    mqtt_port: int,
    clip: Path,
    columns: int = 2,
    stock: int = 6,
    par: int = 5,
    seed: int = 0,
    spin_ms: int = 50,
    ack_resend_s: float = 5,
    tls: dict[str, str] | None = None,
) -> SimUnit:
    from controller.clock import RealClock
    from controller.config import load_config
    from controller.daemon import UnitDaemon
    from controller.link import SerialBoard
    from controller.video import MpvPlayer
    from simulator.board import SimulatedBoard
    from simulator.memlink import serial_pair

    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "unit.toml"
    conf.write_text(unit_toml(unit, site, workdir, mqtt_port, clip, columns, stock, par, ack_resend_s, tls))
    config = load_config(conf)
    controller_end, board_end = serial_pair(seed=seed)
    board = SimulatedBoard(
        columns=columns,
        stock=stock,
        seed=seed,
        spin_ms=spin_ms,
        nvs_path=str(workdir / "nvs"),
        board_id=f"sim-{unit}",
    )
    board.attach(board_end)
    board.start()
    try:
        daemon = UnitDaemon(
            config, SerialBoard.from_port(controller_end), MpvPlayer(config.videos), RealClock()
        )
        daemon.start()
    except Exception:
        board.stop()
        raise
    return SimUnit(unit, board, daemon)
