"""How the kiosk's screens look: a ScreenSpec (controller.kiosk.screens) drawn with Pillow, 16:9.

High contrast (white and yellow on deep blue, never black), large type (a 720-line screen gets 64 px
titles and 40 px text: readable from 1.5 m), one idea per screen. Imported only where screens are drawn
(the kiosk's drawing thread, `nalox unit screens`), so a headless daemon never loads the imaging packages.
"""

from __future__ import annotations

import functools
from pathlib import Path

import segno
from PIL import Image, ImageDraw, ImageFont

from controller.kiosk.screens import ScreenSpec

BG = (10, 38, 92)  # deep blue: white on it is 12:1, yellow 9:1
PANEL = (22, 58, 128)
WHITE = (255, 255, 255)
YELLOW = (255, 212, 0)
ACCENTS = {
    "info": (255, 212, 0),
    "ok": (46, 204, 113),
    "warn": (255, 159, 26),
    "alert": (255, 77, 77),
}
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/wqy"))
CJK = {"zh", "ko", "ja", "yue"}


@functools.lru_cache(maxsize=64)
def font(lang: str, size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    names = (
        ["wqy-microhei.ttc"]
        if lang in CJK
        else (["DejaVuSans-Bold.ttf"] if bold else ["DejaVuSans.ttf"]) + ["DejaVuSans.ttf"]
    )
    for d in FONT_DIRS:
        for n in names:
            if (d / n).is_file():
                return ImageFont.truetype(str(d / n), size)
    return ImageFont.load_default(size)


def wrap(text: str, f: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy line breaking by words; a word wider than the line (or CJK text) breaks between characters."""
    lines: list[str] = []
    cur = ""
    for word in text.split(" "):
        cand = f"{cur} {word}" if cur else word
        if f.getlength(cand) <= width:
            cur = cand
            continue
        if cur:
            lines.append(cur)
        cur = ""
        for ch in word:
            if f.getlength(cur + ch) > width and cur:
                lines.append(cur)
                cur = ""
            cur += ch
    if cur:
        lines.append(cur)
    return lines


class Canvas:
    def __init__(self, size: tuple[int, int], accent: str) -> None:
        self.w, self.h = size
        self.s = self.h / 720
        self.img = Image.new("RGB", size, BG)
        self.d = ImageDraw.Draw(self.img)
        self.d.rectangle((0, 0, self.w, int(18 * self.s)), fill=ACCENTS[accent])

    def px(self, v: float) -> int:
        return int(round(v * self.s))

    def text(
        self,
        xy: tuple[int, int],
        text: str,
        lang: str,
        size: int,
        width: int,
        color: tuple[int, int, int] = WHITE,
        bold: bool = False,
        max_lines: int = 4,
    ) -> int:
        """Draw wrapped text; returns the y below it. Shrinks the type until it fits max_lines."""
        size_px = self.px(size)
        while True:
            f = font(lang, size_px, bold)
            lines = wrap(text, f, width)
            if len(lines) <= max_lines or size_px <= self.px(22):
                break
            size_px -= 2
        x, y = xy
        for line in lines:
            self.d.text((x, y), line, font=f, fill=color)
            y += int(size_px * 1.25)
        return y


def render(spec: ScreenSpec, size: tuple[int, int] = (1280, 720), frame: int = 0) -> Image.Image:
    c = Canvas(size, spec.accent)
    if spec.name == "idle":
        _idle(c, spec, frame)
    elif spec.name == "emergency":
        _emergency(c, spec, frame)
    else:
        _standard(c, spec)
    return c.img


def _standard(c: Canvas, spec: ScreenSpec) -> None:
    margin = c.px(60)
    side = spec.qr is not None
    qr_w = c.px(300) if side else 0
    width = c.w - 2 * margin - (qr_w + margin if side else 0)
    y = c.text((margin, c.px(60)), spec.title, spec.lang, 60, width, YELLOW, bold=True, max_lines=3)
    y += c.px(20)
    for line in spec.lines:
        y = c.text((margin, y), line, spec.lang, 40, width, max_lines=3) + c.px(14)
    if spec.places:
        y += c.px(6)
        y = c.text((margin, y), spec.places_title, spec.lang, 34, width, YELLOW, bold=True, max_lines=2)
        for p in spec.places[:4]:
            y = c.text((margin, y), p.name, spec.lang, 32, width, bold=True, max_lines=1)
            info = "  ·  ".join(x for x in (p.address, p.hours, p.phone) if x)
            if info:
                y = c.text((margin + c.px(20), y), info, spec.lang, 26, width - c.px(20), max_lines=2)
            y += c.px(6)
    if side and spec.qr:
        _qr(c, spec.qr, (c.w - margin - qr_w, c.px(90)), qr_w)
        c.text(
            (c.w - margin - qr_w, c.px(90) + qr_w + c.px(10)), spec.qr_label, spec.lang, 26, qr_w, max_lines=3
        )
    if spec.name == "take_kit":
        _arrow_down(c, c.w // 2, c.h - c.px(150))
    if spec.footer:
        _footer_band(c, spec.footer, spec.lang, margin, height=110, pad=22, size=34, max_lines=2)


def _footer_band(
    c: Canvas, text: str, lang: str, margin: int, *, height: int, pad: int, size: int, max_lines: int
) -> None:
    """A panel band across the bottom (height px) with the footer in bold yellow, pad px below its top."""
    box_top = c.h - c.px(height)
    c.d.rectangle((0, box_top, c.w, c.h), fill=PANEL)
    c.text((margin, box_top + c.px(pad)), text, lang, size, c.w - 2 * margin, YELLOW, True, max_lines)


def _idle(c: Canvas, spec: ScreenSpec, frame: int) -> None:
    margin = c.px(50)
    left_w = c.px(520)
    # pictogram: a nasal spray with a slowly pulsing ring (the animation a passer-by notices)
    cx, cy = margin + c.px(130), c.px(200)
    pulse = c.px(100 + (frame % 2) * 14)
    c.d.ellipse((cx - pulse, cy - pulse, cx + pulse, cy + pulse), outline=YELLOW, width=c.px(8))
    _spray(c, cx, cy)
    x_text = margin + c.px(270)
    y = c.text((x_text, c.px(70)), spec.title, spec.lang, 60, c.w - x_text - margin, YELLOW, True, 2)
    for line in spec.lines:
        y = c.text((x_text, y + c.px(8)), line, spec.lang, 32, c.w - x_text - margin, max_lines=2)
    # the buttons, each language in itself; one row at a time is highlighted, in turn
    rows = spec.rows
    top = max(y, c.px(330)) + c.px(10)
    avail = c.h - top - c.px(80)
    row_h = min(c.px(76), avail // max(1, len(rows)))
    lit = (frame // 2) % max(1, len(rows))
    for i, (number, name, label) in enumerate(rows):
        ry = top + i * row_h
        lang = spec.lang_of_rows[i] if i < len(spec.lang_of_rows) else spec.lang
        if i == lit:
            c.d.rounded_rectangle(
                (margin - c.px(10), ry - c.px(4), c.w - margin, ry + row_h - c.px(6)),
                radius=c.px(12),
                outline=YELLOW,
                width=c.px(4),
            )
        r = (row_h - c.px(18)) // 2
        ccx, ccy = margin + r + c.px(6), ry + row_h // 2 - c.px(4)
        c.d.ellipse((ccx - r, ccy - r, ccx + r, ccy + r), fill=YELLOW)
        nf = font("en", int(r * 1.3), True)
        c.d.text((ccx, ccy), str(number), font=nf, fill=BG, anchor="mm")
        size = min(40, int(row_h / c.s * 0.55))
        c.d.text((ccx + r + c.px(24), ccy), name, font=font(lang, c.px(size), True), fill=WHITE, anchor="lm")
        c.d.text(
            (left_w + c.px(160), ccy), "→ " + label, font=font(lang, c.px(size - 4)), fill=WHITE, anchor="lm"
        )
    if spec.footer:
        _footer_band(c, spec.footer, spec.lang, margin, height=74, pad=18, size=30, max_lines=1)


def _emergency(c: Canvas, spec: ScreenSpec, frame: int) -> None:
    margin = c.px(60)
    width = c.w - 2 * margin
    y = c.text((margin, c.px(50)), spec.title, spec.lang, 56, width, YELLOW, True, 2) + c.px(16)
    step = frame % max(1, len(spec.lines))
    for i, line in enumerate(spec.lines):
        now = i == step
        if now:
            c.d.rectangle((margin - c.px(16), y - c.px(6), c.w - margin + c.px(16), y + c.px(58)), fill=PANEL)
        y = c.text((margin, y), line, spec.lang, 40 if now else 30, width, YELLOW if now else WHITE, now, 2)
        y += c.px(12)
    if spec.footer:
        c.text((margin, c.h - c.px(70)), spec.footer, spec.lang, 30, width, WHITE, False, 1)


def _spray(c: Canvas, cx: int, cy: int) -> None:
    """A nasal-spray device: nozzle, finger rest, plunger."""
    px = c.px
    c.d.rounded_rectangle((cx - px(14), cy - px(70), cx + px(14), cy - px(10)), radius=px(12), fill=WHITE)
    c.d.rounded_rectangle((cx - px(50), cy - px(14), cx + px(50), cy + px(6)), radius=px(8), fill=WHITE)
    c.d.rounded_rectangle((cx - px(26), cy + px(6), cx + px(26), cy + px(70)), radius=px(10), fill=YELLOW)


def _arrow_down(c: Canvas, x: int, y: int) -> None:
    px = c.px
    c.d.polygon([(x - px(50), y), (x + px(50), y), (x, y + px(40))], fill=YELLOW)


def _qr(c: Canvas, url: str, xy: tuple[int, int], width: int) -> None:
    qr = segno.make(url, error="m")
    matrix = [list(row) for row in qr.matrix]
    n = len(matrix) + 8  # a quiet zone of four modules
    cell = width // n
    x0, y0 = xy
    c.d.rectangle((x0, y0, x0 + cell * n, y0 + cell * n), fill=WHITE)
    for r, row in enumerate(matrix):
        for col, v in enumerate(row):
            if v:
                x, y = x0 + (col + 4) * cell, y0 + (r + 4) * cell
                c.d.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(0, 0, 0))
