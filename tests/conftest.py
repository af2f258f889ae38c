"""Fixtures shared by every test package: a real mosquitto on a free port, artifact folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from nalox.broker import Broker

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto with the project's development config, on a free port, for one test."""
    b = Broker(workdir=tmp_path / "broker")
    b.workdir.mkdir()
    with b:
        yield b


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def _structlog_config_per_test() -> Iterator[None]:
    """A command-line main() run in one test configures structlog onto that test's captured stdout;
    put the previous configuration back so no later test writes to a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
