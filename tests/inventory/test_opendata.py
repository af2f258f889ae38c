"""The open-data export never reveals a small count: every cell (totals included) of 1-10 is hidden,
and for every hidden cell the test itself finds a second table, as plausible to a reader (every
published figure the same, every hidden count >= 1), in which that cell differs."""

from __future__ import annotations

import csv
import io
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.opendata import Cell, Table, open_data, open_data_csv, suppress

MIN = 11


def consistent(b: list[list[int]]) -> bool:
    """Rows sum to their total, columns to theirs, and both kinds of total to the grand total."""
    rows, cols = len(b), len(b[0])
    return all(sum(b[i][: cols - 1]) == b[i][cols - 1] for i in range(rows)) and all(
        sum(b[i][j] for i in range(rows - 1)) == b[rows - 1][j] for j in range(cols)
    )


def cycles_through(e: Cell, hidden: set[Cell], limit: int = 4000) -> list[list[Cell]]:
    """Simple cycles row-column-row... of hidden cells that start with e (found by plain DFS)."""
    out: list[list[Cell]] = []

    def walk(path: list[Cell], at: tuple[str, int], seen: set[tuple[str, int]]) -> None:
        if len(out) >= limit:
            return
        for c in sorted(hidden):
            if c in path:
                continue
            if at[0] == "c" and c[1] == at[1]:
                nxt = ("r", c[0])
            elif at[0] == "r" and c[0] == at[1]:
                nxt = ("c", c[1])
            else:
                continue
            if nxt == ("r", e[0]):
                out.append([*path, c])
                continue
            if nxt in seen:
                continue
            walk([*path, c], nxt, seen | {nxt})

    walk([e], ("c", e[1]), {("r", e[0]), ("c", e[1])})
    return out


def witness(b: list[list[int]], hidden: set[Cell], e: Cell) -> list[list[int]] | None:
    for cycle in cycles_through(e, hidden):
        if len(cycle) > 10:
            continue
        for signs in itertools.product((1, -1), repeat=len(cycle)):
            alt = [row[:] for row in b]
            for (i, j), s in zip(cycle, signs, strict=True):
                alt[i][j] += s
            if (
                alt[e[0]][e[1]] != b[e[0]][e[1]]
                and all(alt[i][j] >= 1 for i, j in hidden)
                and consistent(alt)
            ):
                return alt
    return None


tables = st.integers(1, 3).flatmap(
    lambda r: st.integers(1, 4).flatmap(
        lambda c: st.lists(
            st.lists(st.one_of(st.integers(0, 12), st.integers(0, 60)), min_size=c, max_size=c),
            min_size=r,
            max_size=r,
        )
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables)
def test_no_hidden_cell_can_be_worked_out_from_the_published_figures(values: list[list[int]]) -> None:
    t = Table([f"s{i}" for i in range(len(values))], [f"m{j}" for j in range(len(values[0]))], values)
    b = t.bordered()
    hidden = suppress(b, MIN)
    for i, row in enumerate(b):
        for j, v in enumerate(row):
            if 0 < v < MIN:
                assert (i, j) in hidden, f"small cell {(i, j)}={v} published"
    for e in sorted(hidden):
        alt = witness(b, hidden, e)
        assert alt is not None, f"hidden cell {e}={b[e[0]][e[1]]} is fixed by the published figures {b}"
        assert all(
            alt[i][j] == b[i][j] for i in range(len(b)) for j in range(len(b[0])) if (i, j) not in hidden
        )


def test_complementary_suppression_hides_little_and_the_csv_shows_it() -> None:
    rows = [
        {"site": "Jail A", "month": "2026-07", "kits": 40},
        {"site": "Jail A", "month": "2026-08", "kits": 4},
        {"site": "Jail A", "month": "2026-09", "kits": 35},
        {"site": "Jail B", "month": "2026-07", "kits": 22},
        {"site": "Jail B", "month": "2026-08", "kits": 30},
        {"site": "Jail B", "month": "2026-09", "kits": 60},
        {"site": "Jail C", "month": "2026-07", "kits": 90},
        {"site": "Jail C", "month": "2026-08", "kits": 80},
        {"site": "Jail C", "month": "2026-09", "kits": 70},
    ]
    table, hidden = open_data(rows, MIN)
    text = open_data_csv(table, hidden, MIN, "fiscal year 2027, time zone America/Chicago")
    body = list(csv.reader(line for line in io.StringIO(text) if not line.startswith("#")))
    assert body[0] == ["site", "2026-07", "2026-08", "2026-09", "total"]
    assert body[1][2] == "*", "Jail A's 4 kits in August are hidden"
    stars = sum(cell == "*" for r in body[1:] for cell in r[1:])
    assert 4 <= stars <= 6, f"a 4-cell rectangle (or a little more) hides it, not {stars} cells"
    assert body[-1][-1] == str(sum(r["kits"] for r in rows)), "the grand total is large: published"
    assert "America/Chicago" in text.splitlines()[0]
