"""Alert e-mail: every raised or cleared alert and every acknowledgement is gathered into one digest
mail per `digest_minutes` (a bad night is one mail, not two hundred), sent with smtplib.

The first line waits at most one digest period; a mail that fails to send is kept and tried again on
the next tick (bounded: past MAX_LINES the oldest lines are counted, not kept).
"""

from __future__ import annotations

import smtplib
import threading
from email.message import EmailMessage

from inventory import log
from inventory.clock import Clock
from inventory.config import EmailSettings

MAX_LINES = 500


class EmailDigest:
    def __init__(self, settings: EmailSettings, clock: Clock, site_name: str = "nalox inventory") -> None:
        self.settings, self.clock, self.site_name = settings, clock, site_name
        self.log = log.get("email")
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._critical = 0
        self._dropped = 0
        self._first_at: float | None = None
        self.sent = 0

    def add(self, line: str, critical: bool = False) -> None:
        with self._lock:
            if len(self._lines) >= MAX_LINES:
                self._lines.pop(0)
                self._dropped += 1
            self._lines.append(line.replace("\n", " ")[:500])
            self._critical += critical
            if self._first_at is None:
                self._first_at = self.clock.monotonic()

    def pending(self) -> int:
        with self._lock:
            return len(self._lines)

    def tick(self) -> bool:
        """Send the digest when its period is over; True when a mail went out."""
        with self._lock:
            due = self._first_at is not None and (
                self.clock.monotonic() - self._first_at >= self.settings.digest_minutes * 60
            )
        return self.flush() if due else False

    def flush(self) -> bool:
        with self._lock:
            lines, critical, dropped = list(self._lines), self._critical, self._dropped
        if not lines:
            return False
        msg = EmailMessage()
        s = "s" if len(lines) != 1 else ""
        msg["Subject"] = f"[{self.site_name}] {len(lines)} alert change{s}" + (
            f", {critical} critical" if critical else ""
        )
        msg["From"] = self.settings.sender
        msg["To"] = ", ".join(self.settings.recipients)
        body = "\n".join(f"- {line}" for line in lines)
        if dropped:
            body += f"\n\n({dropped} older lines were left out of this digest)"
        msg.set_content(f"{body}\n\nThe dashboard's Alerts page has the details and the follow-up.\n")
        try:
            with smtplib.SMTP(self.settings.smtp_host, self.settings.smtp_port, timeout=15) as smtp:
                if self.settings.starttls:
                    smtp.starttls()
                if self.settings.username:
                    smtp.login(self.settings.username, self.settings.password or "")
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as e:
            self.log.warning(
                "email_failed", host=self.settings.smtp_host, error=str(e)[:200], lines=len(lines)
            )
            return False
        with self._lock:
            del self._lines[: len(lines)]
            self._critical, self._dropped = max(0, self._critical - critical), 0
            self._first_at = self.clock.monotonic() if self._lines else None
            self.sent += 1
        self.log.info("email_sent", lines=len(lines), recipients=len(self.settings.recipients))
        return True
