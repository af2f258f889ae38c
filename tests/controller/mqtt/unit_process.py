"""A reporter with the stand-in unit in a process of its own, for tests that kill it with kill -9.

    python -m tests.controller.mqtt.unit_process PORT UNIT_ID STATE_DIR
Prints `connected session=N` once connected, then runs until killed.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import structlog

from controller.clock import RealClock
from controller.mqtt.client import MqttSettings
from controller.mqtt.reporter import Reporter
from tests.controller.mqtt.standins import SqliteLedger, StandInUnit


def main(argv: list[str]) -> int:
    port, unit_id, state_dir = int(argv[0]), argv[1], Path(argv[2])
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: the marker only
    clock = RealClock()
    settings = MqttSettings(port=port, reconnect_min_s=0.05, reconnect_max_s=0.5)
    ledger = SqliteLedger(state_dir / "ledger.sqlite", clock, unit_id=unit_id)  # the session lives here
    reporter = Reporter(settings, StandInUnit(unit_id, clock), ledger, clock).start()
    assert reporter.client is not None
    if not reporter.client.wait_connected(10):
        print("not connected", flush=True)
        return 1
    print(f"connected session={reporter.session}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
