"""Command journal and non-volatile store: checked against a plain model across reboots and ring wrap."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from firmware_py import codec
from firmware_py.journal import DONE, STARTED, Journal
from firmware_py.nvs import FileStore, MemoryStore

RING = 5


class JournalAgainstModel(RuleBasedStateMachine):
    """The journal remembers the last RING commands, in order, across any number of reboots."""

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore()
        self.journal = Journal(self.store, RING)
        self.model: list[list[int]] = []  # [cid, column, state, outcome], oldest first
        self.running: int | None = None

    def _entry(self, cid: int) -> list[int] | None:
        return next((e for e in self.model if e[0] == cid), None)

    @precondition(lambda self: self.running is None)
    @rule(cid=st.integers(0, 12), column=st.integers(1, 6))
    def begin(self, cid: int, column: int) -> None:
        entry = self._entry(cid)
        if entry is not None and entry[2] == DONE:
            return  # the board never restarts a finished command
        if entry is not None:
            self.model.remove(entry)
        self.journal.begin(cid, column)
        self.model.append([cid, column, STARTED, 0xFF])
        self.model = self.model[-RING:]
        self.running = cid

    @precondition(lambda self: self.running is not None)
    @rule(outcome=st.sampled_from([codec.DROPPED, codec.JAMMED, codec.NO_DROP_DETECTED]))
    def finish(self, outcome: int) -> None:
        self.journal.finish(self.running, outcome)
        entry = self._entry(self.running)
        assert entry is not None
        entry[2:] = [DONE, outcome]
        self.running = None

    @rule()
    def reboot(self) -> None:
        self.journal = Journal(self.store, RING)
        recovered = self.journal.recover()
        expected = [e[0] for e in self.model if e[2] == STARTED]
        assert sorted(recovered) == sorted(expected)
        for entry in self.model:
            if entry[2] == STARTED:
                entry[2:] = [DONE, codec.INTERRUPTED]
        self.running = None

    @invariant()
    def lookups_match_the_model(self) -> None:
        for cid in range(13):
            entry = self._entry(cid)
            expected = None if entry is None else (entry[1], entry[2], entry[3])
            assert self.journal.lookup(cid) == expected, f"command {cid}"


TestJournalAgainstModel = JournalAgainstModel.TestCase
TestJournalAgainstModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_ring_forgets_the_oldest():
    journal = Journal(MemoryStore(), size=3)
    for cid in range(1, 5):
        journal.begin(cid, 1)
        journal.finish(cid, codec.DROPPED)
    assert journal.lookup(1) is None
    assert [journal.lookup(c) for c in (2, 3, 4)] == [(1, DONE, codec.DROPPED)] * 3


def test_file_store_survives_a_new_process(tmp_path):
    store = FileStore(str(tmp_path / "nvs"))
    journal = Journal(store, size=8)
    journal.begin(41, 2)
    journal.finish(41, codec.DROPPED)
    journal.begin(42, 3)
    again = Journal(FileStore(str(tmp_path / "nvs")), size=8)
    assert again.recover() == [42]
    assert again.lookup(41) == (2, DONE, codec.DROPPED)
    assert again.lookup(42) == (3, DONE, codec.INTERRUPTED)
    assert not list((tmp_path / "nvs").glob("*.tmp")), "writes go through a temporary file and a rename"


def test_store_ignores_a_damaged_entry(tmp_path):
    store = MemoryStore()
    store.put("j0", b"\x01\x02")
    assert Journal(store, size=4).lookup(0) is None
