"""Unit alarms: raise or clear each alarm once, as an AlarmEvent in the ledger plus the active set."""

from __future__ import annotations

from collections.abc import Callable

from controller import log
from controller.ledger import Ledger

LOG = log.get("vend")


class Alarms:
    """Raise/clear alarms once each: an AlarmEvent in the ledger plus the active set."""

    def __init__(self, ledger: Ledger, changed: Callable[[], None]) -> None:
        self.ledger = ledger
        self.changed = changed

    def raise_(self, code: str, message: str, severity: str = "warning", column: int | None = None) -> bool:
        if self.ledger.alarm_active(code):  # fast path; record_alarm decides atomically
            return False
        recorded = self.ledger.record_alarm(code, message, raised=True, severity=severity, column=column)
        if recorded is None:
            return False
        LOG.warning("alarm_raised", code=code, severity=severity, message=message, column=column)
        self.changed()
        return True

    def clear(self, code: str, message: str = "cleared") -> bool:
        if not self.ledger.alarm_active(code):
            return False
        recorded = self.ledger.record_alarm(code, message, raised=False, severity="info")
        if recorded is None:
            return False
        LOG.info("alarm_cleared", code=code)
        self.changed()
        return True
