"""Presentation helpers for the dashboard: durations, event one-liners, and the inline SVG chart."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta
from html import escape

from markupsafe import Markup

from inventory.store import EventRow
from schemas.models import LabelRange


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


def describe(e: EventRow, product: Callable[[str], str] = str) -> str:
    """One line a person reads in the event log (`product` turns a product code into its name)."""
    d = json.loads(e.payload)
    t = e.type
    if t == "dispense":
        return (
            f"kit from column {d['column']} ({product(d['product'])}, {d['doses']} doses, "
            f"lot {d.get('lot') or '-'}); "
            f"stock now {d['stock_after']}; via {d['via']}"
        )
    if t == "restock":
        text = f"column {d['column']}: {d['added']:+d} kits, stock now {d['stock_after']} ({d.get('source')})"
        if d.get("lot"):
            text += f", lot {d['lot']}" + (f" expiring {d['expiry']}" if d.get("expiry") else "")
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
        return f"out of stock: {product(d['product'])}"
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


def temperature_chart(
    series: list[tuple[datetime, float, float, float]], label: LabelRange, title: str
) -> Markup:
    """Storage temperature over time as inline SVG: the label range shaded green, beyond the
    excursion limits red, each bucket's min-max as a band and its mean as a line."""
    w, h, pad = 700, 200, 34
    if not series:
        return Markup(f'<p class="chart-empty">{escape(title)}: no readings yet</p>')
    lo = min(min(s[1] for s in series), label.storage_min_c) - 2
    hi = max(max(s[3] for s in series), label.storage_max_c) + 2
    t0, t1 = series[0][0].timestamp(), max(series[-1][0].timestamp(), series[0][0].timestamp() + 1)

    def x(t: datetime) -> float:
        return pad + (w - pad - 4) * (t.timestamp() - t0) / (t1 - t0)

    def y(c: float) -> float:
        return 6 + (h - 24) * (hi - min(max(c, lo), hi)) / (hi - lo)

    parts = [
        f'<svg viewBox="0 0 {w} {h}" class="tchart temp" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect class="band" x="{pad}" width="{w - pad - 4}" y="{y(label.storage_max_c):.1f}" '
        f'height="{y(label.storage_min_c) - y(label.storage_max_c):.1f}"><title>label range '
        f"{label.storage_min_c:g}-{label.storage_max_c:g} °C</title></rect>",
    ]
    if hi > label.excursion_max_c:
        parts.append(
            f'<rect class="exc" x="{pad}" width="{w - pad - 4}" y="6" '
            f'height="{y(label.excursion_max_c) - 6:.1f}"/>'
        )
    if lo < label.excursion_min_c:
        parts.append(
            f'<rect class="exc" x="{pad}" width="{w - pad - 4}" y="{y(label.excursion_min_c):.1f}" '
            f'height="{h - 18 - y(label.excursion_min_c):.1f}"/>'
        )
    area = [f"{x(t):.1f},{y(mx):.1f}" for t, _mn, _mean, mx in series] + [
        f"{x(t):.1f},{y(mn):.1f}" for t, mn, _mean, _mx in reversed(series)
    ]
    parts.append(f'<polygon class="rng" points="{" ".join(area)}"/>')
    line = " ".join(f"{x(t):.1f},{y(mean):.1f}" for t, _mn, mean, _mx in series)
    parts.append(f'<polyline points="{line}"/>')
    for c in sorted({label.storage_min_c, label.storage_max_c, round(lo + 2), round(hi - 2)}):
        parts.append(f'<text x="0" y="{y(c) + 4:.1f}" class="axis">{c:g} °C</text>')
    parts.append(f'<text x="{pad}" y="{h - 2}" class="axis">{series[0][0]:%d %b %H:%M}</text>')
    parts.append(
        f'<text x="{w - 4}" y="{h - 2}" text-anchor="end" class="axis">{series[-1][0]:%d %b %H:%M} UTC</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))
