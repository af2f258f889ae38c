"""The firmware on the real MicroPython interpreter: a MicroPython 1.27 VM (WebAssembly port, Node.js)
in a child process, driven by calls over pipes.

    with MicroPythonVM() as vm:               # firmware_py/ (and simulator/mpvm/*.py) inside the VM
        vm.exec("import firmware_py.codec")
        text = vm.call("mp_driver", "codec_batch", json_text)   # str in, str out

`make setup` installs the pinned npm package (package.json, package-lock.json at the repo root).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from simulator.errors import SimulatorError

ROOT = Path(__file__).resolve().parents[2]
HOST = Path(__file__).resolve().parent / "host.mjs"
FIRMWARE = ROOT / "firmware_py"
VM_SIDE = Path(__file__).resolve().parent / "vm"  # MicroPython-side helpers (drivers, simulated HAL)
PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


class MicroPythonError(SimulatorError):
    """The VM could not be started, or code inside it raised; the message carries the VM's error."""


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise MicroPythonError("MicroPython VM: expected Node.js (node) on PATH, found none; "
                               "run `make setup`")
    if not PACKAGE.is_dir():
        raise MicroPythonError(f"MicroPython VM: expected the npm package at {PACKAGE}, found none; "
                               "run `make setup` (npm ci)")
    return node


class MicroPythonVM:
    """One VM process. Calls are serialised (one at a time, answered in order)."""

    def __init__(self, heap_kb: int = 256, mounts: dict[str, Path] | None = None,
                 timeout: float = 60.0) -> None:
        tree = {"/firmware_py": FIRMWARE, "/": VM_SIDE}
        tree.update(mounts or {})
        args = [node_binary(), str(HOST), "--heap", f"{heap_kb}k"]
        for vm_dir, host_dir in tree.items():
            args += ["--mount", f"{vm_dir}={host_dir}"]
        self.timeout = timeout
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, cwd=str(ROOT), text=True, bufsize=1)
        hello = self._read()
        if not hello.get("ready"):
            raise MicroPythonError(f"MicroPython VM: expected a ready line, got {hello!r}")

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            raise MicroPythonError(f"MicroPython VM exited (code {self._proc.poll()}): {err[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(req) + "\n")
            self._proc.stdin.flush()
            answer = self._read()
        if not answer.get("ok"):
            raise MicroPythonError(f"MicroPython: {answer.get('error')}\n{answer.get('out', '')}")
        return answer

    def exec(self, code: str) -> str:
        """Run statements in the VM's __main__; returns what they printed."""
        out: str = self._request({"op": "exec", "code": code}).get("out", "")
        return out

    def call(self, module: str, function: str, arg: str = "") -> str:
        """module.function(arg) inside the VM; `arg` and the result are text."""
        answer = self._request({"op": "call", "mod": module, "fn": function, "arg": arg})
        result = answer.get("result")
        if not isinstance(result, str):
            raise MicroPythonError(f"{module}.{function}: expected a str result, got {result!r}")
        return result

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        """Power cut: the process dies at once; nothing it holds in memory survives."""
        self._proc.kill()
        self._proc.wait(timeout=5)
        self.close()

    def __enter__(self) -> MicroPythonVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
