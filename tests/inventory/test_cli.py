"""`nalox inventory` from the command line: example config, clear config errors (exit 2), serve + SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from inventory.cli import main
from inventory.config import ConfigError, load_config
from nalox.broker import Broker
from tests.conftest import NALOX, ROOT
from tests.waiting import wait_for


def test_config_example_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-example"]) == 0
    path = tmp_path / "central.toml"
    path.write_text(capsys.readouterr().out)
    cfg = load_config(path)
    assert [u.id for u in cfg.units] == ["unit-001", "unit-002"] and cfg.server.port == 8080
    assert main(["check-config", "--config", str(path)]) == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mqtt]\nport = 99999\n", "field mqtt.port"),
        ("[server]\nprot = 8080\n", "field server.prot"),
        ('[[units]]\nid = "bad id!"\nsite = "x"\n', "field units.0.id"),
        ('[[units]]\nid = "u1"\nsite = "x"\n[[units]]\nid = "u1"\nsite = "y"\n', "found 'u1' twice"),
        ("[store\n", "expected TOML"),
    ],
)
def test_bad_config_says_what_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "central.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="central.toml"):
        load_config(path)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path) in err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_and_stops_on_sigterm(broker: Broker, tmp_path: Path) -> None:
    conf = tmp_path / "central.toml"
    conf.write_text('[[units]]\nid = "unit-001"\nsite = "Site A"\n')
    port = free_port()
    log = tmp_path / "serve.log"
    made = subprocess.run(
        [
            *NALOX,
            "inventory",
            "token",
            "create",
            "--config",
            str(conf),
            "--db",
            str(tmp_path / "c.db"),
            "--role",
            "viewer",
            "--name",
            "cli test",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = made.stdout.strip()
    assert token.startswith("nalox_") and len(made.stdout.splitlines()) == 1, "one token on stdout"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *NALOX,
                "inventory",
                "serve",
                "--config",
                str(conf),
                "--db",
                str(tmp_path / "c.db"),
                "--http-port",
                str(port),
                "--mqtt-port",
                str(broker.port),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 30, "/healthz to answer 200")
        assert httpx.get(f"http://127.0.0.1:{port}/api/units", timeout=5).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        units = httpx.get(f"http://127.0.0.1:{port}/api/units", headers=auth, timeout=5).json()
        assert [u["id"] for u in units] == ["unit-001"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        lines = log.read_text().splitlines()
        assert any('"event": "service_stopped"' in x for x in lines), lines[-5:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:1/nothing", "cannot open the database 127.0.0.1:1/nothing"),
        ("/nonexistent-dir/sub/central.db", "cannot open the database /nonexistent-dir/sub/central.db"),
    ],
)
def test_unreachable_database_is_a_clear_error(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str], db: str, expected: str
) -> None:
    conf = tmp_path / "central.toml"
    conf.write_text(f"[mqtt]\nport = {broker.port}\n[server]\nport = 0\n")
    assert main(["serve", "--config", str(conf), "--db", db]) == 1
    assert expected in capsys.readouterr().err
