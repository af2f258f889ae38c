"""The open-data export: kits per site and month for the public, small cells suppressed.

Rule: a count from 1 to `min_cell - 1` (1-10 by default, the usual public-health rule) is never
published, in the table or in its totals. Complementary suppression then hides more cells so that
no hidden cell can be worked out from the published row totals, column totals and grand total.

Why the method works. Put the totals in the table as one more row and column. Every row and column
of that bordered table is then a known linear relation among its hidden cells. Draw a bipartite graph:
one node per row, one per column, one edge per hidden cell. The relations fix a hidden cell's value
exactly when its edge is on no cycle: along a cycle one can add +1/-1 alternately and every relation
still holds. A reader also knows a hidden count is at least 1 (zeros are published), so the rule is
stronger: every hidden cell must lie on a cycle along which a shift of one keeps every hidden count
>= 1. Then each hidden cell has at least two possible values. Complementary cells are chosen along the
cheapest such cycle (fewest kits hidden); all hidden cells read `*`, small or not.
"""

from __future__ import annotations

import csv
import heapq
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inventory.reports import cell as csv_cell

Cell = tuple[int, int]  # (row, column) of the bordered table: the last row/column are the totals


@dataclass(frozen=True)
class Table:
    rows: list[str]  # site names
    columns: list[str]  # months YYYY-MM
    values: list[list[int]]  # rows x columns, without totals

    def bordered(self) -> list[list[int]]:
        body = [list(r) + [sum(r)] for r in self.values]
        totals = [sum(r[j] for r in body) for j in range(len(self.columns) + 1)]
        return [*body, totals]


def suppress(table: list[list[int]], min_cell: int = 11) -> set[Cell]:
    """Cells of the bordered `table` (totals included as the last row and column) to hide."""
    n_rows, n_cols = len(table), len(table[0]) if table else 0
    hidden: set[Cell] = {(i, j) for i in range(n_rows) for j in range(n_cols) if 0 < table[i][j] < min_cell}
    everything = {(i, j) for i in range(n_rows) for j in range(n_cols) if table[i][j] > 0}
    while True:
        stuck = next((c for c in sorted(hidden) if _movable(table, hidden, c, free_only=True) is None), None)
        if stuck is None:
            return hidden
        path = _movable(table, hidden, stuck, free_only=False)
        if path:
            hidden |= path
        elif hidden != everything:
            hidden = set(everything)  # nothing smaller protects it: publish only the zeros
        else:
            return hidden


def _sign(cell: Cell, n_rows: int, n_cols: int) -> int:
    """In the bordered table every row and column relation reads sum(sign * value) = 0 with interior
    cells and the grand total +1, the row and column totals -1."""
    margin = (cell[0] == n_rows - 1) + (cell[1] == n_cols - 1)
    return -1 if margin == 1 else 1


def _movable(table: list[list[int]], hidden: set[Cell], e: Cell, free_only: bool) -> set[Cell] | None:
    """A cycle through hidden cell `e` along which every hidden cell can move by one while each stays
    >= 1 (what a reader knows of a hidden count) and every published figure stays the same. With
    free_only, only already hidden cells may be used (returns an empty set when such a cycle exists);
    otherwise returns the cheapest set of further cells to hide (fewest kits), or None."""
    n_rows, n_cols = len(table), len(table[0])
    best: set[Cell] | None = None
    best_cost = 1 << 62
    for d in (1, -1):
        if _sign(e, n_rows, n_cols) * d < 0 and table[e[0]][e[1]] < 2:
            continue
        found = _path(table, hidden, e, d, free_only)
        if found is not None and found[0] < best_cost:
            best_cost, best = found
        if best is not None and best_cost == 0:
            return set()
    return best


def _path(
    table: list[list[int]], hidden: set[Cell], e: Cell, d: int, free_only: bool
) -> tuple[int, set[Cell]] | None:
    """Dijkstra from e's column back to e's row: row->column steps move (signed) by d, column->row
    steps by -d; a cell whose actual count would fall must be at least 2."""
    n_rows, n_cols = len(table), len(table[0])
    start, goal = ("c", e[1]), ("r", e[0])
    dist: dict[tuple[str, int], int] = {start: 0}
    prev: dict[tuple[str, int], tuple[tuple[str, int], Cell]] = {}
    heap: list[tuple[int, tuple[str, int]]] = [(0, start)]
    while heap:
        cost, node = heapq.heappop(heap)
        if node == goal:
            break
        if cost > dist.get(node, 1 << 62):
            continue
        kind, k = node
        if kind == "c":
            steps = [(("r", i), (i, k), -d) for i in range(n_rows)]
        else:
            steps = [(("c", j), (k, j), d) for j in range(n_cols)]
        for nxt, cell, dy in steps:
            if cell == e:
                continue
            value = table[cell[0]][cell[1]]
            if _sign(cell, n_rows, n_cols) * dy < 0 and value < 2:
                continue
            if cell in hidden:
                step = 0
            elif free_only or value == 0:  # zeros are always published
                continue
            else:
                step = 1 + value
            if cost + step < dist.get(nxt, 1 << 62):
                dist[nxt] = cost + step
                prev[nxt] = (node, cell)
                heapq.heappush(heap, (cost + step, nxt))
    if goal not in dist:
        return None
    out, node = set(), goal
    while node != start:
        node, cell = prev[node]
        out.add(cell)
    return dist[goal], out - hidden


def open_data(store_rows: Sequence[dict[str, Any]], min_cell: int = 11) -> tuple[Table, set[Cell]]:
    """Rows of {"site", "month", "kits"} -> the site x month table and the cells to hide."""
    sites = sorted({r["site"] for r in store_rows})
    months = sorted({r["month"] for r in store_rows})
    values = [[0] * len(months) for _ in sites]
    for r in store_rows:
        values[sites.index(r["site"])][months.index(r["month"])] += int(r["kits"])
    table = Table(sites, months, values)
    return table, suppress(table.bordered(), min_cell)


def open_data_csv(table: Table, hidden: set[Cell], min_cell: int, about: str) -> str:
    """Sites down, months across, totals last; a hidden cell reads `*` (small, or hidden so that a
    small one cannot be worked out: the two are not told apart)."""
    full = table.bordered()
    buf = io.StringIO()
    buf.write(f"# nalox open data: naloxone kits given out per site and month; {about}\n")
    buf.write(
        f"# '*': a count of 1-{min_cell - 1} kits, or a count hidden so that those cannot be worked out "
        "from the totals\n"
    )
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["site", *table.columns, "total"])
    names = [*table.rows, "total"]
    for i, name in enumerate(names):
        cells = []
        for j, v in enumerate(full[i]):
            if (i, j) in hidden:
                cells.append("*")
            else:
                cells.append(str(v))
        w.writerow([csv_cell(name), *cells])  # a site name comes from a unit's state: never a formula
    return buf.getvalue()
