"""Non-volatile storage: a small key -> bytes store, in memory or one file per key.

Interface used by the firmware: get(key) -> bytes or None, put(key, value). A put is atomic:
FileStore writes a temporary file and renames it over the old one.
"""

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os  # type: ignore[no-redef]


class MemoryStore:
    """Store kept in RAM; survives a simulated reboot as long as the object lives."""

    def __init__(self):
        self.data = {}
        self.writes = 0

    def get(self, key):
        return self.data.get(key)

    def put(self, key, value):
        self.data[key] = bytes(value)
        self.writes += 1


class FileStore:
    """Store in a directory, one file per key (littlefs on a board, any directory on a PC)."""

    def __init__(self, path, sync=False):
        self.path = path
        self.sync = sync
        self.writes = 0
        try:
            os.mkdir(path)
        except OSError:
            pass

    def _file(self, key):
        return self.path + "/" + key

    def get(self, key):
        try:
            with open(self._file(key), "rb") as f:
                return f.read()
        except OSError:
            return None

    def put(self, key, value):
        tmp = self._file(key) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(value)
            if self.sync and hasattr(os, "fsync"):
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, self._file(key))
        self.writes += 1
