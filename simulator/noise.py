"""Line noise: corrupt a byte stream at a given rate by flipping a bit, dropping or inserting a byte."""

from __future__ import annotations

import random
import threading


class Noise:
    """Each byte is corrupted with probability `rate`; the kind (flip, drop, insert) is chosen evenly."""

    def __init__(self, rate: float, seed: int = 0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"noise rate: expected 0..1, got {rate}")
        self.rate = rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.flipped = 0
        self.dropped = 0
        self.inserted = 0

    def corrupt(self, data: bytes) -> bytes:
        if self.rate <= 0.0 or not data:
            return bytes(data)
        with self._lock:
            return self._corrupt(data)

    def _corrupt(self, data: bytes) -> bytes:
        rng = self._rng
        out = bytearray()
        for byte in data:
            if rng.random() >= self.rate:
                out.append(byte)
                continue
            kind = rng.randrange(3)
            if kind == 0:
                out.append(byte ^ (1 << rng.randrange(8)))
                self.flipped += 1
            elif kind == 1:
                self.dropped += 1
            else:
                out.append(byte)
                out.append(rng.randrange(256))
                self.inserted += 1
        return bytes(out)

    def counts(self) -> dict[str, int]:
        return {"flipped": self.flipped, "dropped": self.dropped, "inserted": self.inserted}
