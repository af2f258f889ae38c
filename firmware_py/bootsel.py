"""Firmware slots and the boot choice: which firmware runs, trial boots after an update, rollback.

Slot 0 is the factory firmware (the image flashed at the bench, never written over the link);
slots 1 and 2 live in non-volatile storage under the keys "fw<slot>/<file>", with a MANIFEST
(version, model, one "sha256 size name" line per file). One 4-byte record says what to boot:

    key "fwslot":  | active:u8 | previous:u8 | trial:u8 | tries:u8 |

activate() switches with one atomic put (trial=1, tries=0). choose(), run before the firmware at
every start: a trial slot boots once (tries=1 written first); if it boots again still in trial (it
never confirmed: it crashed, hung, lost power or never said HELLO within the trial time) the record
goes back to the previous slot. A slot whose files do not match its manifest is never booted.
confirm() is called by the new firmware when it answers the controller's HELLO. So a power cut at
any moment leaves the board on the old firmware or the new one, never neither.
"""

try:
    import hashlib
except ImportError:  # pragma: no cover
    import uhashlib as hashlib  # type: ignore[no-redef]

from binascii import hexlify

SLOT_KEY = "fwslot"
FACTORY = 0
SLOTS = (1, 2)
MANIFEST = "MANIFEST"
PACKAGE = "firmware_py/"


def prefix(slot):
    return "fw%d/" % slot


def read(store):
    """[active, previous, trial, tries]; the factory slot when nothing (or garbage) is stored."""
    raw = store.get(SLOT_KEY)
    if raw is None or len(raw) != 4 or raw[0] not in (FACTORY,) + SLOTS or raw[1] not in (FACTORY,) + SLOTS:
        return [FACTORY, FACTORY, 0, 0]
    return [raw[0], raw[1], raw[2], raw[3]]


def _write(store, record):
    store.put(SLOT_KEY, bytes(record))


def sha256_hex(data):
    return hexlify(hashlib.sha256(data).digest()).decode()


def manifest(store, slot):
    """{"version", "model", "files": [(sha256_hex, size, name)]} or None when absent or unreadable."""
    if slot == FACTORY:
        return None
    raw = store.get(prefix(slot) + MANIFEST)
    if raw is None:
        return None
    try:
        lines = raw.decode().split("\n")
        out = {"version": lines[0][8:], "model": lines[1][6:], "files": []}
        if not lines[0].startswith("version ") or not lines[1].startswith("model "):
            return None
        for line in lines[2:]:
            if line:
                sha, size, name = line.split(" ")
                out["files"].append((sha, int(size), name))
        return out
    except (ValueError, UnicodeError, IndexError):
        return None


def manifest_text(version, model, files):
    lines = ["version " + version, "model " + model]
    for sha, size, name in files:
        lines.append("%s %d %s" % (sha, size, name))
    return ("\n".join(lines) + "\n").encode()


def verify(store, slot):
    """None when every file of `slot` matches its manifest, else what is wrong."""
    if slot == FACTORY:
        return None
    info = manifest(store, slot)
    if info is None:
        return "slot %d: no readable manifest" % slot
    for sha, size, name in info["files"]:
        data = store.get(prefix(slot) + name)
        if data is None or len(data) != size:
            found = None if data is None else len(data)
            return "slot %d: %s expected %d bytes, found %s" % (slot, name, size, found)
        if sha256_hex(data) != sha:
            return "slot %d: %s SHA-256 does not match the manifest" % (slot, name)
    return None


def choose(store):
    """At every start, before any firmware runs: (slot to boot, why: None, "trial", "rolled_back" or
    "slot_invalid"). Writes the record when the choice changes it."""
    active, previous, trial, tries = read(store)
    if active != FACTORY and verify(store, active) is not None:
        back = previous if previous != active and verify(store, previous) is None else FACTORY
        _write(store, [back, back, 0, 0])
        return back, "slot_invalid"
    if trial:
        if tries >= 1:
            back = previous if verify(store, previous) is None else FACTORY
            _write(store, [back, back, 0, 0])
            return back, "rolled_back"
        _write(store, [active, previous, 1, 1])
        return active, "trial"
    return active, None


def in_trial(store):
    return read(store)[2] != 0


def activate(store, slot):
    """Boot `slot` next, on trial: the one atomic switch of an update."""
    active = read(store)[0]
    _write(store, [slot, active, 1, 0])


def confirm(store):
    """The running firmware said HELLO: keep it."""
    record = read(store)
    if record[2]:
        _write(store, [record[0], record[0], 0, 0])
        return True
    return False


def spare(store):
    """The slot an update may write: neither the running one nor the one a trial would return to."""
    active, previous = read(store)[:2]
    for slot in SLOTS:
        if slot != active and slot != previous:
            return slot
    return SLOTS[0] if active != SLOTS[0] else SLOTS[1]


def version_of(store, slot, factory_version):
    info = manifest(store, slot)
    return factory_version if info is None else info["version"]
