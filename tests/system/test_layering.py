"""The top layer's shape: no import cycle inside nalox/ (read from the source, lazy imports included),
and the shipped rooms import nothing that a plain `pip install nalox` leaves out."""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

import pytest

from bench.plain_install import Hidden, dev_only_modules, requirement_name, runtime_distributions

ROOT = Path(__file__).resolve().parents[2]
# firmware_py/ is left out: MicroPython code, stdlib only, with CPython fallbacks for `ustruct` and the like
SHIPPED = ("nalox", "controller", "simulator", "inventory", "schemas")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every module `path` imports anywhere in its body (inside functions too), as absolute names."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports."""
    root = package.parent
    modules = {module_name(p, root): p for p in package.rglob("*.py")}
    return {m: imported_modules(p, root) & modules.keys() - {m} for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for n in sorted(graph[m]):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = []
            while True:
                n = stack.pop()
                group.append(n)
                if n == m:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_inside_nalox() -> None:
    graph = import_graph(ROOT / "nalox")
    assert "nalox.demo" in graph and graph["nalox.demo"], "expected to read nalox/demo.py's imports"
    assert cycles(graph) == [], f"modules of nalox/ that import each other: {cycles(graph)}"


def test_the_cycle_finder_finds_a_lazy_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("x = 1\ndef later():\n    from . import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"]]


def test_shipped_code_imports_only_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = runtime_distributions()
    dev_only = {requirement_name(r) for r in project["optional-dependencies"]["dev"]} - runtime
    assert {"httpx", "psutil"} <= dev_only, "the check below needs dev-only packages to tell apart"
    providers = md.packages_distributions()
    wrong: list[str] = []
    for room in SHIPPED:
        for path in (ROOT / room).rglob("*.py"):
            for module in imported_modules(path, ROOT):
                top = module.split(".")[0]
                if not top or top in sys.stdlib_module_names or top in SHIPPED or top == "firmware_py":
                    continue
                dists = {requirement_name(d) for d in providers.get(top, [])}
                if not dists & runtime:
                    where = path.relative_to(ROOT)
                    wrong.append(f"{where} imports {top} ({', '.join(sorted(dists)) or '?'})")
    assert wrong == [], "shipped code imports what [project].dependencies lacks:\n" + "\n".join(wrong)


def test_the_plain_install_launcher_hides_only_what_the_dev_extra_brings() -> None:
    """bench/plain_install.py runs the unit as `pip install nalox` would: rich (schemathesis's, which
    structlog imports when present) is hidden, the runtime libraries and the rooms are not."""
    hidden = dev_only_modules()
    assert {"rich", "hypothesis", "pytest"} <= hidden
    assert not {"pydantic", "paho", "structlog", "serial", "PIL", "controller", "schemas"} & hidden
    finder = Hidden({"rich"})
    with pytest.raises(ModuleNotFoundError, match="not in a plain install"):
        finder.find_spec("rich.console", None)
    assert finder.find_spec("pydantic", None) is None  # left to the ordinary finders


def test_the_broker_configs_ship_with_a_plain_install() -> None:
    """`nalox demo` starts mosquitto with deploy/mosquitto/dev.conf, outside every Python package: the
    wheel carries it as data-files, where nalox/broker.py looks when there is no checkout."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = setuptools["data-files"]["share/nalox/mosquitto"]
    assert "deploy/mosquitto/dev.conf" in shipped
    missing = [f for f in shipped if not (ROOT / f).is_file()]
    assert missing == [], f"data-files name files the checkout lacks: {missing}"
