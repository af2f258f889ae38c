"""Storage temperature bands: storage range (logged), excursion range (alarm + time out of range per lot)."""

from __future__ import annotations

from dataclasses import dataclass

from controller.config import TemperatureSection


@dataclass(frozen=True)
class BandChange:
    band: str  # "storage" | "excursion"
    state: str  # "entered" | "left"
    celsius: float
    seconds_out_of_range: float


class TemperatureMonitor:
    """Feed readings with their monotonic time; returns the band changes they cause.
    `entered storage` means the reading left the storage range (20-25 C by default)."""

    def __init__(self, limits: TemperatureSection) -> None:
        self.limits = limits
        self.last_c: float | None = None
        self._since: dict[str, float] = {}  # band -> monotonic time it was entered

    def band_of(self, celsius: float) -> str:
        lim = self.limits
        if celsius < lim.excursion_min_c or celsius > lim.excursion_max_c:
            return "excursion"
        if celsius < lim.storage_min_c or celsius > lim.storage_max_c:
            return "storage"
        return "normal"

    def update(self, celsius: float, now: float) -> list[BandChange]:
        self.last_c = celsius
        band = self.band_of(celsius)
        wanted = {"excursion": {"storage", "excursion"}, "storage": {"storage"}, "normal": set()}[band]
        changes = []
        for name in ("excursion", "storage"):  # leave the inner band first
            if name in self._since and name not in wanted:
                changes.append(BandChange(name, "left", celsius, now - self._since.pop(name)))
        for name in ("storage", "excursion"):
            if name in wanted and name not in self._since:
                self._since[name] = now
                changes.append(BandChange(name, "entered", celsius, 0.0))
        return changes

    def in_excursion(self) -> bool:
        return "excursion" in self._since
