"""`nalox diag firmware keygen|sign|update` end to end: a board simulator in its own process behind a
real pty, keys and port from unit.toml; a bundle signed by an untrusted key is refused before sending."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.diag.cli import main
from firmware_py.board import FIRMWARE_VERSION
from tests.controller.diag.conftest import config_data, write_config
from tests.controller.serial.simproc import SimBoardProcess


def test_keygen_sign_and_update_from_the_config(tmp_path: Path, clips: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["firmware", "keygen", "--out", str(tmp_path / "signing.pem")]) == 0
    public = capsys.readouterr().out.strip()
    assert main(["firmware", "keygen", "--out", str(tmp_path / "other.pem")]) == 0
    other = capsys.readouterr().out.strip()
    image = tmp_path / "fw-0.3.0.zip"
    assert main(["firmware", "sign", "--key", str(tmp_path / "signing.pem"), "--version", "0.3.0",
                 "--model", "nalox-sim", "--out", str(image)]) == 0
    assert "0.3.0 for nalox-sim" in capsys.readouterr().out
    assert main(["firmware", "keygen", "--out", str(tmp_path / "signing.pem")]) == 2, "never overwrite a key"
    capsys.readouterr()

    data = config_data(tmp_path, clips)
    with SimBoardProcess(tmp_path / "dispenser") as sim:
        data["firmware"] = {"trusted_keys": [other]}
        config = write_config(tmp_path, data)
        assert main(["--config", str(config), "firmware", "update", str(image)]) == 11
        assert "not signed by any of the 1 trusted keys; refused before sending" in capsys.readouterr().err
        assert sim.stats()["link"]["frames_received"] == 0, "nothing was sent"

        data["firmware"] = {"trusted_keys": [other, public]}
        config = write_config(tmp_path, data)
        assert main(["firmware", "update", "--config", str(config), str(image)]) == 11
        assert "service door is closed" in capsys.readouterr().err

        sim.ctl("door", "open")
        assert main(["firmware", "update", "--config", str(config), str(image)]) == 0
        out = capsys.readouterr().out
        assert f"updated {FIRMWARE_VERSION} -> 0.3.0" in out
        stats = sim.stats()
        assert (stats["firmware"], stats["slot"]) == ("0.3.0", 1)
        assert main(["firmware", "update", "--port", str(tmp_path / "dispenser"), "--trusted-key", public,
                     str(image)]) == 11
        assert "already runs 0.3.0; use --force" in capsys.readouterr().err
