"""Fault injection for the soak: a TCP proxy that can cut a unit off its broker, and a seeded plan of
real-world faults (broker kill -9, unit kill -9 during a dispense, board reboot, line noise, jams,
door, network cut) applied to a running stack at random but reproducible moments."""

from __future__ import annotations

import random
import select
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("nalox.chaos")

FAULTS = (
    "broker_kill",
    "unit_kill_in_dispense",
    "board_reboot",
    "noise",
    "jam",
    "door",
    "cut",
    "central_kill",
)


class TcpProxy:
    """Forwards 127.0.0.1:listen_port to 127.0.0.1:target_port. cut() drops every connection and refuses
    new ones (by closing them at once) until restore(): the network between a unit and its broker."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = int(self.server.getsockname()[1])
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    def start(self) -> TcpProxy:
        self._accept.start()
        return self

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        self._cut.set()
        self._drop_all()
        log.info("proxy cut", port=self.port)

    def restore(self) -> None:
        self._cut.clear()
        log.info("proxy restored", port=self.port)

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        self._drop_all()
        self._accept.join(2)
        for t in list(self._threads):
            t.join(2)

    def _drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _close(a)
            _close(b)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self.server], [], [], 0.1)
                if not ready:
                    continue
                client, _ = self.server.accept()
            except OSError:
                return
            self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        if self._cut.is_set():
            _close(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._pairs.append((client, upstream))
        t = threading.Thread(target=self._pump, args=(client, upstream), name="proxy-pump", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            _close(a)
            _close(b)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


@dataclass
class ChaosPlan:
    """Which fault (if any) to inject before each press: seeded, so a failing soak can be replayed."""

    seed: int
    rate: float = 0.15  # chance of a fault before any one press
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "broker_kill": 2,
            "unit_kill_in_dispense": 3,
            "board_reboot": 2,
            "noise": 2,
            "jam": 2,
            "door": 2,
            "cut": 2,
            "central_kill": 1,
        }
    )
    cover_all: bool = False  # the first faults go through every kind once (in a seeded order)
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.uncovered = list(self.weights) if self.cover_all else []
        self.rng.shuffle(self.uncovered)

    def next_fault(self) -> str | None:
        if self.rng.random() >= self.rate:
            return None
        if self.uncovered:
            return self.uncovered.pop()
        names = list(self.weights)
        return self.rng.choices(names, weights=[self.weights[n] for n in names])[0]

    def record(self, name: str) -> None:
        self.injected[name] += 1
        log.info("fault injected", fault=name, count=self.injected[name])

    def uniform(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def language(self) -> str:
        return "es" if self.rng.random() < 0.3 else "en"
