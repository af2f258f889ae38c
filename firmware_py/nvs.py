"""Non-volatile storage: a small key -> bytes store, in memory or one file per key.

Interface used by the firmware: get(key) -> bytes or None, put(key, value), append(key, data),
drop(prefix) (forget every key under "dir/"). A put is atomic: FileStore writes a temporary file and
renames it over the old one. A key may name a sub-directory ("fw1/firmware_py/codec.py").
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

    def append(self, key, data):
        self.data[key] = self.data.get(key, b"") + bytes(data)
        self.writes += 1

    def drop(self, prefix):
        for key in [k for k in self.data if k.startswith(prefix)]:
            del self.data[key]
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

    def _dirs(self, key):
        path = self.path
        for part in key.split("/")[:-1]:
            path = path + "/" + part
            try:
                os.mkdir(path)
            except OSError:
                pass

    def _sync(self, f):
        if self.sync and hasattr(os, "fsync"):
            f.flush()
            os.fsync(f.fileno())

    def put(self, key, value):
        self._dirs(key)
        tmp = self._file(key) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(value)
            self._sync(f)
        os.rename(tmp, self._file(key))
        self.writes += 1

    def append(self, key, data):
        self._dirs(key)
        with open(self._file(key), "ab") as f:
            f.write(data)
            self._sync(f)
        self.writes += 1

    def drop(self, prefix):
        """Remove the directory `prefix` ("fw2/") and everything in it."""
        _remove_tree(self.path + "/" + prefix.rstrip("/"))
        self.writes += 1


def _remove_tree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        child = path + "/" + name
        try:
            os.remove(child)
        except OSError:
            _remove_tree(child)
    os.rmdir(path)
