"""Configuration: the shipped example is valid; each kind of mistake gets one clear message and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import cli
from controller.config import ConfigError, load_config

EXAMPLE = cli.example_text()


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "unit.toml"
    p.write_text(text)
    return p


def test_example_is_valid_and_targets_the_simulator(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.serial.port == "/tmp/nalox/dispenser"
    assert set(config.videos.files) == {"en", "es"} and config.videos.fallback == "dispense"
    assert [c.column for c in config.columns] == [1, 2, 3, 4, 5, 6]
    assert config.products["nasal-4mg"].doses == 2
    assert len(config.config_version) == 12


def test_config_example_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config-example"]) == 0
    assert capsys.readouterr().out == EXAMPLE


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'id = "demo-unit-01"',
            'id = "bad unit/id"',
            "field unit.id: expected a string matching pattern '^[A-Za-z0-9]",
        ),
        (
            'column = 1\nproduct = "nasal-4mg"\ncapacity = 30',
            'column = 1\nproduct = "nasal-4mg"\ncapacity = "ten"',
            "field columns[0].capacity: expected a valid integer, unable to parse string as an integer, "
            "found 'ten'",
        ),
        (
            'initial_stock = 20\nlot = "LOT-A2"',
            'initial_stock = 40\nlot = "LOT-A2"',
            "field columns[1]: expected initial_stock at most capacity 30",
        ),
        (
            'fallback = "dispense"',
            'fallback = "maybe"',
            "field videos.fallback: expected 'dispense' or 'block', found 'maybe'",
        ),
        (
            'es = "/tmp/nalox/videos/es.mp4"',
            "",
            "field videos.files: expected a clip for en and es (missing es)",
        ),
        (
            "[policies]",
            "[policies]\nmulti_kit_windw_s = 5",
            "field policies.multi_kit_windw_s: expected no such field (a typo?)",
        ),
        (
            'site = "Demo County Jail, release area"',
            "",
            "field unit.site: expected a value, found nothing (the field is missing)",
        ),
        (
            'product = "nasal-4mg"\ncapacity = 30\npar = 8\ninitial_stock = 20\nlot = "LOT-A3"',
            'product = "nasal-2mg"\ncapacity = 30\npar = 8\ninitial_stock = 20\nlot = "LOT-A3"',
            "expected column 3 product one of ['nasal-4mg'], found 'nasal-2mg'",
        ),
        (
            "storage_max_c = 25.0,",
            "storage_max_c = 45.0,",
            "field products.nasal-4mg.label: expected excursion_min_c <= storage_min_c < storage_max_c <= "
            "excursion_max_c",
        ),
        ("[unit]", "[unit\n", "expected valid TOML, found a syntax error"),
    ],
)
def test_each_mistake_has_its_message(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in EXAMPLE
    path = write(tmp_path, EXAMPLE.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml: expected a readable TOML file, found No such file"):
        load_config(tmp_path / "nope.toml")


def test_cli_exit_code_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, EXAMPLE.replace("baudrate = 115200", "baudrate = -1"))
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "field serial.baudrate: expected greater than 0, found -1" in err
    assert cli.main(["check-config", "--config", str(path)]) == 2


def test_relative_paths_resolve_from_the_file(tmp_path: Path) -> None:
    text = EXAMPLE.replace('en = "/tmp/nalox/videos/en.mp4"', 'en = "clips/en.mp4"').replace(
        'data_dir = "/tmp/nalox/unit"', 'data_dir = "state"'
    )
    config = load_config(write(tmp_path, text))
    assert config.videos.files["en"] == tmp_path / "clips/en.mp4"
    assert config.paths.ledger_path() == tmp_path / "state/ledger.sqlite3"
