"""Run `nalox ...` as a plain `pip install nalox` would: the packages only the dev extra brings (and what
they pull in) cannot be imported. A unit carries the runtime dependencies only, but a development venv
also holds e.g. rich and greenlet, which structlog imports whenever they are present (about 6 MB of
memory and a tenth of a second of start-up the unit never pays).

python -m bench.plain_install [--hide a,b,...] unit run --config unit.toml
python -m bench.plain_install [--hide a,b,...] -m MODULE ARGS...   (any module, e.g. a bare baseline)

--hide names the modules to hide (what `launcher()` passes, worked out once by the caller: reading every
installed distribution's file list takes longer than the daemon's own start).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    if match is None:
        raise ValueError(f"expected a requirement name at the start of {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def with_requirements(names: set[str], extras: dict[str, set[str]] | None = None) -> set[str]:
    """`names` and every distribution they require, transitively (as installed here); `extras` names the
    extras asked for (`psycopg[binary]`: {"psycopg": {"binary"}})."""
    import importlib.metadata as md  # here: the launcher itself never pays for it

    extras = extras or {}
    todo, seen = list(names), set(names)
    while todo:
        name = todo.pop()
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in requires:
            wanted = "extra ==" not in r or any(
                re.search(rf"extra == ['\"]{e}['\"]", r) for e in extras.get(name, ())
            )
            if wanted and requirement_name(r) not in seen:
                seen.add(requirement_name(r))
                todo.append(requirement_name(r))
    return seen


def runtime_distributions() -> set[str]:
    """The project itself, [project].dependencies (with the extras they name) and what they require."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {
        requirement_name(r): set(re.findall(r"[\w-]+", m.group(1)))
        for r in project["dependencies"]
        if (m := re.search(r"\[([^]]*)\]", r))
    }
    names = {requirement_name(r) for r in project["dependencies"]}
    return {requirement_name(project["name"])} | with_requirements(names, extras)


def dev_only_modules() -> set[str]:
    """Top-level modules that only distributions outside the runtime closure provide."""
    import importlib.metadata as md

    runtime = runtime_distributions()
    return {
        top
        for top, dists in md.packages_distributions().items()
        if not {requirement_name(d) for d in dists} & runtime
    }


class Hidden(importlib.abc.MetaPathFinder):
    """Refuses the import of `names` (and their submodules) as if they were not installed."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not in a plain install)", name=fullname)
        return None


def launcher() -> list[str]:
    """The command prefix that runs `nalox ...` as a plain install."""
    return [sys.executable, "-m", "bench.plain_install", "--hide", ",".join(sorted(dev_only_modules()))]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--hide"]:
        hidden, argv = set(argv[1].split(",")), argv[2:]
    else:
        hidden = dev_only_modules()
    sys.meta_path.insert(0, Hidden(hidden))
    if argv[:1] == ["-m"]:
        import runpy

        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    from nalox.cli import main as nalox_main

    return int(nalox_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
