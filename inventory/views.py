"""Presentation helpers for the dashboard: durations, event one-liners, and the inline SVG chart."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from html import escape

from markupsafe import Markup

from inventory.store import EventRow


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    s = max(0, int((now - then).total_seconds()))
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{s // 60} min"
    if s < 48 * 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} days"


def describe(e: EventRow) -> str:
    """One line a person reads in the event log."""
    d = json.loads(e.payload)
    t = e.type
    if t == "dispense":
        return (
            f"kit from column {d['column']} ({d['product']}, {d['doses']} doses, lot {d.get('lot') or '-'}); "
            f"stock now {d['stock_after']}; via {d['via']}"
        )
    if t == "restock":
        text = f"column {d['column']}: {d['added']:+d} kits, stock now {d['stock_after']} ({d.get('source')})"
        if d.get("discrepancy"):
            text += (
                f"; blind count {d.get('counted_before')} vs expected {d.get('expected_before')}"
                f" ({d['discrepancy']:+d}), reason: {d.get('reason') or 'none given'}"
            )
        return text
    if t == "vend_failed":
        return f"vend failed: {d['reason']} ({len(d.get('attempts', []))} attempts)"
    if t == "video":
        return f"video {d['phase']} ({d['language']})" + (f": {d['detail']}" if d.get("detail") else "")
    if t == "alarm":
        return f"alarm {d['code']} {d['state']} ({d['severity']}): {d['message']}"
    if t == "door":
        return "door opened" if d["open"] else "door closed"
    if t == "temperature":
        return f"temperature {d['celsius']:.1f} °C {d['state']} {d['band']} band"
    if t == "out_of_stock":
        return f"out of stock: {d['product']}"
    return t


def daily_series(counts: dict[str, int], end: date, days: int) -> list[tuple[date, int]]:
    return [
        (d, counts.get(d.isoformat(), 0)) for d in (end - timedelta(days=days - 1 - i) for i in range(days))
    ]


def bar_chart(series: list[tuple[date, int]], title: str) -> Markup:
    """A small server-rendered SVG bar chart (no JavaScript), scaling to the screen width."""
    w, h, pad = 600, 160, 24
    top = max([n for _, n in series] + [1])
    bw = (w - pad) / max(len(series), 1)
    parts = [
        f'<svg viewBox="0 0 {w} {h + 20}" class="chart" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="12" class="axis">{top}</text>',
        f'<line x1="{pad}" y1="{h}" x2="{w}" y2="{h}" class="base"/>',
    ]
    for i, (d, n) in enumerate(series):
        bh = (h - 20) * n / top
        x = pad + i * bw
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{h - bh:.1f}" width="{max(bw - 2, 1):.1f}" height="{bh:.1f}">'
            f"<title>{d.isoformat()}: {n}</title></rect>"
        )
        if i % 7 == 0 and len(series) - i > 3 or i == len(series) - 1:
            last = i == len(series) - 1
            anchor, tx = ("end", x + bw) if last else ("start", x)
            parts.append(
                f'<text x="{tx:.1f}" y="{h + 15}" text-anchor="{anchor}" class="axis">{d:%d %b}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
