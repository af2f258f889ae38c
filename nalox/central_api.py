"""The demo's HTTP client: the inventory service's JSON API read as a user's script would, with the
standard library only (`nalox demo` runs from a plain `pip install nalox`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PAGE = 1000  # the events endpoint's largest page


class CentralApi:
    """GETs against http://127.0.0.1:PORT; a `token` goes out as `Authorization: Bearer TOKEN`."""

    def __init__(self, http_port: int, token: str | None = None, timeout: float = 5.0) -> None:
        self.base = f"http://127.0.0.1:{http_port}"
        self.token = token
        self.timeout = timeout

    def units(self, **params: object) -> list[Any]:
        """Every unit, page after page (/api/units answers at most 100 a page)."""
        out: list[Any] = []
        while True:
            page = self.get("/api/units", offset=len(out), limit=100, **params)
            out += page
            if len(page) < 100:
                return out

    def get(self, path: str, **params: object) -> Any:
        """The decoded JSON body; urllib.error.HTTPError (an OSError) on a status other than 2xx."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        request = urllib.request.Request(self.base + path + (f"?{query}" if query else ""))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def healthy(self) -> bool:
        """True when /healthz answers ok; a 503 (database or broker not ready) raises HTTPError."""
        return bool(self.get("/healthz").get("ok"))

    def stock(self, unit: str) -> dict[str, int]:
        """Kits per column (column as text) in the central store; empty while the unit is unknown there."""
        try:
            entry = self.get(f"/api/units/{urllib.parse.quote(unit)}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return {}
            raise
        return {str(c["column"]): int(c["stock"]) for c in entry["columns"]}

    def dispense_count(self, unit: str) -> int:
        """Distinct dispense events the central store holds for one unit."""
        return len(set(self.event_ids(unit, "dispense")))

    def event_ids(self, unit: str, event_type: str | None = None) -> list[str]:
        """Every event id the central store holds for one unit (duplicates kept, to be counted)."""
        ids: list[str] = []
        before: int | None = None
        while True:
            try:
                batch = self.get(
                    f"/api/units/{urllib.parse.quote(unit)}/events",
                    limit=PAGE,
                    type=event_type,
                    before_seq=before,
                )
            except urllib.error.HTTPError as e:
                if e.code == 404:  # not enrolled yet: it holds nothing of this unit
                    return ids
                raise
            ids += [str(e["event_id"]) for e in batch]
            if len(batch) < PAGE:
                return ids
            before = min(int(e["seq"]) for e in batch)
