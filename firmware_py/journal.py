"""Dispense command journal in non-volatile storage: a bounded ring of (command_id -> state, outcome).

Each entry is one NVS key "j<slot>" holding 11 bytes:

    | order:u32 | command_id:u32 | column:u8 | state:u8 | outcome:u8 |

`order` increases with every new entry, so after a reboot the newest entry (and the next slot
of the ring) is found by the largest order. begin() is written before the coil turns;
finish() overwrites the same slot with the outcome. recover() at boot turns every entry
still STARTED into INTERRUPTED (the board restarted before the drop sensor fired: the
DROPPED write happens in the same main-loop step as the sensor edge, so no drop was seen).
When the ring is full the oldest entry is overwritten and its command id forgotten.
"""

try:
    import struct
except ImportError:  # pragma: no cover
    import ustruct as struct  # type: ignore[no-redef]

from firmware_py import codec

STARTED = 1
DONE = 2
_FORMAT = ">IIBBB"
_NONE = 0xFF


class Journal:
    def __init__(self, store, size=512):
        self.store = store
        self.size = size
        self.entries = {}  # command_id -> [slot, column, state, outcome]
        self.slots = [None] * size  # slot -> command_id
        self.order = 0
        self.next_slot = 0
        self._load()

    def _load(self):
        newest = -1
        for slot in range(self.size):
            raw = self.store.get("j%d" % slot)
            if raw is None or len(raw) != struct.calcsize(_FORMAT):
                continue
            order, cid, column, state, outcome = struct.unpack(_FORMAT, raw)
            self._forget(cid)
            self.entries[cid] = [slot, column, state, outcome]
            self.slots[slot] = cid
            if order > newest:
                newest = order
                self.next_slot = (slot + 1) % self.size
        self.order = newest + 1

    def _forget(self, cid):
        old = self.entries.pop(cid, None)
        if old is not None and self.slots[old[0]] == cid:
            self.slots[old[0]] = None

    def _write(self, slot, cid, column, state, outcome):
        self.store.put("j%d" % slot, struct.pack(_FORMAT, self.order, cid, column, state, outcome))
        self.order += 1

    def begin(self, cid, column):
        """Record that the coil of `column` is about to turn for `cid`; if the write fails
        (OSError) nothing is recorded and the coil must not turn."""
        slot = self.next_slot
        evicted = self.slots[slot]
        if evicted is not None:
            self.entries.pop(evicted, None)
        self._forget(cid)
        self._write(slot, cid, column, STARTED, _NONE)
        self.entries[cid] = [slot, column, STARTED, _NONE]
        self.slots[slot] = cid
        self.next_slot = (slot + 1) % self.size

    def finish(self, cid, outcome):
        """Record the outcome. Memory first: even if the write fails (OSError), this board never
        starts `cid` again until it reboots."""
        entry = self.entries[cid]
        entry[2] = DONE
        entry[3] = outcome
        self._write(entry[0], cid, entry[1], DONE, outcome)

    def lookup(self, cid):
        """(column, state, outcome) or None when `cid` is not in the journal."""
        entry = self.entries.get(cid)
        if entry is None:
            return None
        return entry[1], entry[2], entry[3]

    def recover(self):
        """At boot: every STARTED entry becomes INTERRUPTED. Returns those command ids."""
        # Oldest slot first, so the newest entry stays the newest (the next slot is found by age).
        # Never dict order: MicroPython's is not CPython's (found by the differential test).
        ages = sorted(((e[0] - self.next_slot) % self.size, cid) for cid, e in self.entries.items()
                      if e[2] == STARTED)
        interrupted = [cid for _, cid in ages]
        failure = None
        for cid in interrupted:
            try:
                self.finish(cid, codec.INTERRUPTED)
            except OSError as exc:
                failure = exc  # memory is updated; keep going, report once
        if failure is not None:
            raise failure
        return interrupted
