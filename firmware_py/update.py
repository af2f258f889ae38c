"""Board side of a firmware update over the link: files arrive in acknowledged chunks into the spare
slot; COMMIT checks every file's SHA-256 against what BEGIN/FILE declared, writes the slot's
MANIFEST and switches to it with one atomic write (bootsel.activate). See PROTOCOL.md, section 9.

Bounds: at most MAX_FILES files of MAX_FILE bytes each, MAX_TOTAL bytes in all; names only
"firmware_py/<name>.py" (lower case, digits, underscore). Nothing here runs the new code; the boot
selector does, on the next start, on trial.
"""

from firmware_py import bootsel, codec

MAX_FILES = 32
MAX_FILE = 64 * 1024
MAX_TOTAL = 256 * 1024
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def name_ok(name):
    if not name.startswith(bootsel.PACKAGE) or not name.endswith(".py"):
        return False
    stem = name[len(bootsel.PACKAGE):-3]
    if not 0 < len(stem) <= 40:
        return False
    for ch in stem:
        if ch not in _NAME_CHARS:
            return False
    return True


class Receiver:
    """One update at a time. Each method returns (code, value, detail) for UPDATE_REPLY."""

    def __init__(self, store, model):
        self.store = store
        self.model = model
        self.reset()

    def reset(self):
        self.slot = None
        self.version = None
        self.files = []  # [[name, size, sha256_hex, received]]
        self.expected = 0
        self.total = 0

    def begin(self, msg, door_open):
        if not door_open:
            return codec.UPD_SERVICE_MODE, 0, "firmware update refused: open the service door (service mode)"
        if msg.model != self.model:
            detail = "bundle is for board model %r, this board is %r" % (msg.model, self.model)
            return codec.UPD_BAD_MODEL, 0, detail
        if bootsel.in_trial(self.store):
            return codec.UPD_BAD_STATE, 0, "the running firmware is on trial; say HELLO first"
        if not 0 < msg.files <= MAX_FILES:
            return codec.UPD_TOO_BIG, 0, "files: expected 1..%d, got %d" % (MAX_FILES, msg.files)
        self.reset()
        self.slot = bootsel.spare(self.store)
        try:
            self.store.drop(bootsel.prefix(self.slot))
        except OSError as exc:
            self.slot = None
            return codec.UPD_STORAGE, 0, "clearing slot failed: %s" % exc
        self.version = msg.version
        self.expected = msg.files
        return codec.UPD_OK, self.slot, "slot %d" % self.slot

    def file(self, msg):
        if self.slot is None:
            return codec.UPD_BAD_STATE, 0, "UPDATE_FILE before UPDATE_BEGIN"
        if msg.index != len(self.files):
            if msg.index == len(self.files) - 1 and self.files[-1][0] == msg.name:
                return codec.UPD_OK, self.files[-1][3], "again"  # a repeated request
            return codec.UPD_BAD_STATE, len(self.files), "file index: expected %d, got %d" % (
                len(self.files), msg.index)
        if msg.index >= self.expected:
            detail = "file index %d: BEGIN announced %d files" % (msg.index, self.expected)
            return codec.UPD_TOO_BIG, 0, detail
        if not name_ok(msg.name):
            return codec.UPD_BAD_STATE, 0, "file name %r: expected firmware_py/<name>.py" % msg.name
        if msg.size > MAX_FILE or self.total + msg.size > MAX_TOTAL or len(msg.sha256) != 32:
            return codec.UPD_TOO_BIG, 0, "file %s: %d bytes; at most %d per file and %d in all" % (
                msg.name, msg.size, MAX_FILE, MAX_TOTAL)
        self.total += msg.size
        self.files.append([msg.name, msg.size, _hex(msg.sha256), 0])
        try:
            self.store.put(self._key(msg.index), b"")
        except OSError as exc:
            return codec.UPD_STORAGE, 0, "writing %s failed: %s" % (msg.name, exc)
        return codec.UPD_OK, 0, ""

    def _key(self, index):
        return bootsel.prefix(self.slot) + self.files[index][0]

    def chunk(self, msg):
        if self.slot is None or msg.index >= len(self.files):
            return codec.UPD_BAD_STATE, 0, "UPDATE_CHUNK for file %d that was not announced" % msg.index
        entry = self.files[msg.index]
        got = entry[3]
        if msg.offset + len(msg.data) <= got:
            return codec.UPD_OK, got, "again"  # already stored: a retried chunk
        if msg.offset != got:
            detail = "file %d: expected offset %d, got %d" % (msg.index, got, msg.offset)
            return codec.UPD_BAD_OFFSET, got, detail
        if got + len(msg.data) > entry[1]:
            return codec.UPD_TOO_BIG, got, "file %d: more than the announced %d bytes" % (msg.index, entry[1])
        try:
            self.store.append(self._key(msg.index), msg.data)
        except OSError as exc:
            return codec.UPD_STORAGE, got, "writing %s failed: %s" % (entry[0], exc)
        entry[3] = got + len(msg.data)
        return codec.UPD_OK, entry[3], ""

    def commit(self, msg):
        """Every hash checked against the stored bytes, then the manifest, then the one switch."""
        if self.slot is None or len(self.files) != self.expected:
            return codec.UPD_BAD_STATE, 0, "COMMIT before all %d files were announced" % self.expected
        for index, entry in enumerate(self.files):
            data = self.store.get(self._key(index))
            if data is None or len(data) != entry[1]:
                return codec.UPD_BAD_STATE, index, "file %s: expected %d bytes, have %s" % (
                    entry[0], entry[1], None if data is None else len(data))
            got = bootsel.sha256_hex(data)
            if got != entry[2]:
                slot = self.slot
                self.reset()
                detail = "file %s: SHA-256 expected %s, got %s; slot %d discarded" % (
                    entry[0], entry[2][:16], got[:16], slot)
                return codec.UPD_BAD_HASH, index, detail
        files = [(e[2], e[1], e[0]) for e in self.files]
        try:
            self.store.put(bootsel.prefix(self.slot) + bootsel.MANIFEST,
                           bootsel.manifest_text(self.version, self.model, files))
            bootsel.activate(self.store, self.slot)
        except OSError as exc:
            return codec.UPD_STORAGE, 0, "switching slots failed: %s" % exc
        slot = self.slot
        self.reset()
        return codec.UPD_OK, slot, "slot %d active on trial; restarting" % slot


def _hex(data):
    return "".join("%02x" % b for b in data)
