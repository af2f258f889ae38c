"""`nalox diag --port` as a technician runs it: a separate process against `nalox sim board` on a real pty.
The contract other people's tools rely on, exit codes per failing check, plain text when piped, --json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from controller.diag.result import EXIT_CODES
from controller.serial.board_link import SerialBoard
from tests.controller.diag.conftest import SimProcess, run_diag


def test_contract_healthy_report_json_exits_0(sim_process: SimProcess) -> None:
    out = run_diag("--port", str(sim_process.link), "report", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["exit_code"] == 0 and report["via"] == "port"
    assert report["board"]["columns"] == 3
    skipped = {c["name"]: c["summary"] for c in report["checks"] if c["status"] == "skipped"}
    assert all(skipped[n].startswith("no config") for n in ("broker", "ledger", "video"))


def test_contract_jammed_column_fails_motor_test_and_says_jam(sim_process: SimProcess) -> None:
    """The contract: after `fault jam=1.0` and `door open`, one `motor-test 1` exits non-zero saying jam."""
    sim_process.ctl("fault", "jam=1.0")
    sim_process.ctl("door", "open")
    out = run_diag("--port", str(sim_process.link), "motor-test", "1")
    assert out.returncode == EXIT_CODES["motor"], out.stdout + out.stderr
    assert "jam" in out.stdout.lower()
    assert "clear the jam in column 1" in out.stdout


def test_piped_output_is_plain_text_with_advice(sim_process: SimProcess) -> None:
    sim_process.ctl("door", "open")
    out = run_diag("--port", str(sim_process.link), "sensors")
    assert out.returncode == EXIT_CODES["sensors"]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("sensors.door: fail: door open")
    assert "  expected: door closed" in lines and "  found:    door open" in lines
    assert not any(line.startswith("CHECK") for line in lines)  # no table when piped


def test_hot_cabinet_exit_code_and_message(sim_process: SimProcess) -> None:
    sim_process.ctl("temp", "46")
    out = run_diag("--port", str(sim_process.link), "report")
    assert out.returncode == EXIT_CODES["sensors"], out.stdout
    assert "sensors.temperature: fail: cabinet 46" in out.stdout


def test_dead_motor_and_door_rules(sim_process: SimProcess) -> None:
    link = str(sim_process.link)
    closed = run_diag("--port", link, "motor-test", "2")
    assert closed.returncode == EXIT_CODES["motor"] and "door is closed" in closed.stdout
    sim_process.ctl("fault", "dead_motor=1.0@2")
    sim_process.ctl("door", "open")
    dead = run_diag("--port", link, "motor-test", "2", "--json")
    assert dead.returncode == EXIT_CODES["motor"]
    [check] = json.loads(dead.stdout)["checks"]
    assert check["name"] == "motor.column2" and "dead motor" in check["summary"]
    drop = run_diag("--port", link, "drop-test")
    assert drop.returncode == EXIT_CODES["drop"] and "door is open" in drop.stdout


def test_drop_test_and_stats_agree(sim_process: SimProcess) -> None:
    out = run_diag("--port", str(sim_process.link), "drop-test", "--column", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "drop.column3: pass" in out.stdout
    assert json.loads(sim_process.ctl("stats"))["per_column"]["3"] == 1


def test_missing_port_is_a_link_failure(tmp_path: Path) -> None:
    out = run_diag("--port", str(tmp_path / "nothing"), "report")
    assert out.returncode == EXIT_CODES["link"]
    assert "link: fail: no dispenser board answers" in out.stdout and "nothing" in out.stdout


def test_busy_port_is_a_link_failure_not_a_fight(sim_process: SimProcess) -> None:
    holder = SerialBoard(str(sim_process.link))
    holder.start(lambda event: None)
    try:
        out = run_diag("--port", str(sim_process.link), "sensors", "--json")
        assert out.returncode == EXIT_CODES["link"]
        [check] = json.loads(out.stdout)["checks"]
        assert check["name"] == "link" and "another program" in check["action"]
        assert holder.ping() < 1.0  # the holder's session was not disturbed
    finally:
        holder.close()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_diag("report").returncode == 2
    assert run_diag("--port", "x", "no-such-check").returncode == 2
    bad = tmp_path / "unit.toml"
    bad.write_text("[unit]\nid = 'x'\n")
    out = run_diag("--config", str(bad), "report")
    assert out.returncode == 2 and "unit.toml" in out.stderr and "expected" in out.stderr


def test_help_lists_the_exit_codes() -> None:
    out = run_diag("--help")
    assert out.returncode == 0 and "exit codes" in out.stdout and "4 motor" in out.stdout


def test_table_on_a_terminal(sim_process: SimProcess) -> None:
    """Through a pty, as on a technician's terminal: a table with a header."""
    import pty
    import subprocess

    from tests.controller.diag.conftest import NALOX, ROOT

    controller_fd, terminal_fd = pty.openpty()
    proc = subprocess.Popen([*NALOX, "diag", "--port", str(sim_process.link), "sensors"], stdout=terminal_fd,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    os.close(terminal_fd)
    chunks = []
    while True:
        try:
            data = os.read(controller_fd, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller_fd)
    assert proc.wait(60) == 0
    text = b"".join(chunks).decode()
    assert text.startswith("CHECK") and "RESULT" in text and "all checks passed" in text
