"""Run the firmware a slot holds: load firmware_py modules from a board's store, not from this checkout.

A simulated board that was updated over the link boots the code it received, like a real one. The
modules are compiled from the slot's bytes into private module objects whose `import firmware_py...`
statements resolve to the same slot (a per-slot `__import__` in their builtins), so several boards in
one process can each run their own firmware while the controller keeps the checkout's codec.
"""

from __future__ import annotations

import builtins
import types
from typing import Any

from firmware_py import bootsel
from simulator.errors import SimulatorError

PACKAGE = "firmware_py"


class SlotError(SimulatorError):
    """The slot's code could not be loaded (missing module, syntax error, error at import)."""


class SlotImporter:
    def __init__(self, store: Any, slot: int) -> None:
        self.store = store
        self.slot = slot
        self.modules: dict[str, types.ModuleType] = {}
        self.builtins = dict(vars(builtins))
        self.builtins["__import__"] = self._import
        package = types.ModuleType(PACKAGE)
        package.__path__ = []
        self.package = package

    def _source(self, name: str) -> bytes:
        data = self.store.get(bootsel.prefix(self.slot) + PACKAGE + "/" + name + ".py")
        if data is None:
            raise ImportError(f"slot {self.slot}: no module {PACKAGE}.{name}")
        return bytes(data)

    def module(self, name: str) -> types.ModuleType:
        if name in self.modules:
            return self.modules[name]
        module = types.ModuleType(f"{PACKAGE}.{name}")
        module.__dict__["__builtins__"] = self.builtins
        self.modules[name] = module
        setattr(self.package, name, module)
        code = compile(self._source(name), f"<slot {self.slot}>/{PACKAGE}/{name}.py", "exec")
        exec(code, module.__dict__)  # noqa: S102 - the point: run the firmware the board received
        return module

    def _import(self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (),
                level: int = 0) -> Any:
        if name == PACKAGE:
            for sub in fromlist or ():
                self.module(sub)
            return self.package
        if name.startswith(PACKAGE + "."):
            module = self.module(name[len(PACKAGE) + 1:])
            return module if fromlist else self.package
        return builtins.__import__(name, globals, locals, fromlist, level)


def load_board_class(store: Any, slot: int) -> Any:
    """The Board class of the firmware in `slot`; SlotError when that code does not load."""
    try:
        return SlotImporter(store, slot).module("board").Board
    except Exception as exc:
        raise SlotError(f"slot {slot}: firmware does not load: {type(exc).__name__}: {exc}") from exc


def install(store: Any, slot: int, files: dict[str, bytes], version: str, model: str) -> None:
    """Put firmware files into `slot` with their manifest and make it the confirmed active slot, as a
    bench flashing would (tests; a board in the field gets firmware only through the update)."""
    store.drop(bootsel.prefix(slot))
    listing = []
    for name, data in sorted(files.items()):
        store.put(bootsel.prefix(slot) + name, data)
        listing.append((bootsel.sha256_hex(data), len(data), name))
    store.put(bootsel.prefix(slot) + bootsel.MANIFEST, bootsel.manifest_text(version, model, listing))
    bootsel.activate(store, slot)
    bootsel.confirm(store)
