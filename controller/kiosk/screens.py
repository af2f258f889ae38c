"""The kiosk's screens: what each one says (compose -> ScreenSpec). How each one looks is drawn from the
spec by controller.kiosk.drawing (Pillow, 16:9), loaded only where a screen is drawn: a headless unit
speaks and shows the same words without the imaging packages in its memory.

One idea per screen. A screen is a ScreenSpec first, so the same words are drawn, spoken and checked by
tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from controller.kiosk import i18n
from controller.kiosk import messages as m

SCREENS = (
    "idle",
    "video",
    "dispensing",
    "take_kit",
    "out_of_stock",
    "vend_failed",
    "out_of_service",
    "emergency",
    "press_void",
    "video_broken",
)
EMERGENCY_STEPS = (m.STEP_CALL, m.STEP_BACK, m.STEP_SPRAY, m.STEP_SECOND, m.STEP_STAY)
EMERGENCY_STEP_S = 5.0  # five steps: a 25 s loop
IDLE_FRAME_S = 1.0
OUT_OF_SERVICE_REASONS = {
    "service": m.REASON_SERVICE,
    "door_open": m.REASON_SERVICE,
    "locked": m.REASON_SERVICE,
    "board_down": m.REASON_BOARD,
    "ledger_down": m.REASON_LEDGER,
}


@dataclass(frozen=True)
class AccessPoint:
    name: str
    address: str = ""
    hours: str = ""
    phone: str = ""


@dataclass(frozen=True)
class ScreenContext:
    """What the screens need from the unit's configuration."""

    buttons: tuple[tuple[int, str], ...] = ((1, "en"), (2, "es"))  # (number on the button, language)
    emergency: str | None = "hold"  # "hold" (long press), "button:N", or None (off)
    access_points: tuple[AccessPoint, ...] = ()
    info_url: str | None = None
    another_kit_window_s: float = 20.0
    kits_per_session: int = 5
    size: tuple[int, int] = (1280, 720)

    @property
    def languages(self) -> list[str]:
        out: list[str] = []
        for _, lang in self.buttons:
            if lang not in out:
                out.append(lang)
        return out


@dataclass(frozen=True)
class ScreenSpec:
    name: str
    lang: str
    title: str
    lines: tuple[str, ...] = ()
    accent: str = "info"
    rows: tuple[tuple[int, str, str], ...] = ()  # idle: (button number, language name, "press to start")
    places: tuple[AccessPoint, ...] = ()
    places_title: str = ""
    qr: str | None = None
    qr_label: str = ""
    footer: str = ""
    lang_of_rows: tuple[str, ...] = ()
    frames: int = 1
    frame_s: float = 0.0
    params: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    @property
    def speech(self) -> str:
        """What is spoken: everything on the screen that is words (not the places' phone digits twice)."""
        parts = [self.title, *self.lines]
        if self.places:
            parts.append(self.places_title)
            parts += [", ".join(x for x in (p.name, p.address, p.hours, p.phone) if x) for p in self.places]
        if self.footer:
            parts.append(self.footer)
        return " ".join(p for p in parts if p)

    @property
    def text(self) -> str:
        """All words on the screen, one line each (logs, OSD text in headless mode, tests)."""
        rows = [f"{n}  {name}  {label}" for n, name, label in self.rows]
        return "\n".join(x for x in (self.title, *self.lines, *rows, self.footer) if x)


def compose(name: str, lang: str, ctx: ScreenContext, **params: object) -> ScreenSpec:
    """The words of screen `name` in `lang`. Params: take_kit(seconds, number), out_of_service(reason),
    emergency(step)."""
    if name not in SCREENS:
        raise ValueError(f"expected a screen among {', '.join(SCREENS)}, found {name!r}")
    p = i18n.pack(lang)
    _ = p.gettext
    key = tuple(sorted(params.items()))

    def spec(
        title: str,
        lines: tuple[str, ...],
        accent: str,
        footer: str = "",
        elsewhere: bool = False,
        qr: bool = False,
    ) -> ScreenSpec:
        """A one-frame screen; `elsewhere` lists where else to get a kit, `qr` links the info page."""
        return ScreenSpec(
            name,
            lang,
            title,
            lines,
            accent,
            places=ctx.access_points if elsewhere else (),
            places_title=_(m.GET_IT_HERE) if elsewhere else "",
            qr=ctx.info_url if qr else None,
            qr_label=_(m.SCAN_FOR_MORE) if qr else "",
            footer=footer,
            params=key,
        )

    if name == "idle":
        hint = ""
        if ctx.emergency == "hold":
            hint = _(m.EMERGENCY_HOLD)
        elif ctx.emergency and ctx.emergency.startswith("button:"):
            hint = _(m.EMERGENCY_BUTTON, number=ctx.emergency.split(":", 1)[1])
        return replace(
            spec(_(m.FREE_NALOXONE), (_(m.REVERSES), _(m.ANONYMOUS)), "info", footer=hint),
            rows=tuple(
                (n, i18n.pack(lg).name, i18n.pack(lg).gettext(m.PRESS_TO_START)) for n, lg in ctx.buttons
            ),
            lang_of_rows=tuple(lg for _n, lg in ctx.buttons),
            frames=2 * max(1, len(ctx.languages)),
            frame_s=IDLE_FRAME_S,
        )
    if name == "video":
        return spec(_(m.WATCH_VIDEO), (_(m.KIT_AFTER_VIDEO),), "info")
    if name == "dispensing":
        return spec(_(m.KIT_COMING), (), "ok")
    if name == "take_kit":
        seconds = int(float(params.get("seconds", ctx.another_kit_window_s)))  # type: ignore[arg-type]
        number = int(params.get("number", 1))  # type: ignore[call-overload]
        lines = [_(m.CALL_911)]
        if seconds > 0 and number < ctx.kits_per_session and params.get("another", True):
            lines.append(_(m.ANOTHER_KIT, seconds=seconds))
        lines.append(_(m.KITS_TAKEN, number=number, limit=ctx.kits_per_session))
        return spec(_(m.TAKE_KIT), tuple(lines), "ok", footer=_(m.STAY_SAFE))
    if name == "out_of_stock":
        return spec(_(m.OUT_OF_STOCK), (), "warn", footer=_(m.WATCH_ANYWAY), elsewhere=True, qr=True)
    if name == "vend_failed":
        return spec(_(m.VEND_FAILED), (_(m.ASK_STAFF), _(m.NOTHING_RECORDED)), "alert", elsewhere=True)
    if name == "out_of_service":
        reason = OUT_OF_SERVICE_REASONS.get(str(params.get("reason", "service")), m.REASON_SERVICE)
        return spec(_(m.OUT_OF_SERVICE), (_(reason), _(m.ASK_STAFF)), "alert", elsewhere=True, qr=True)
    if name == "emergency":
        steps = tuple(f"{i}. {_(s)}" for i, s in enumerate(EMERGENCY_STEPS, 1))
        return replace(
            spec(_(m.EMERGENCY), steps, "alert", footer=_(m.ASK_STAFF)),
            frames=len(EMERGENCY_STEPS),
            frame_s=EMERGENCY_STEP_S,
        )
    if name == "press_void":
        return spec(_(m.PRESS_VOID), (_(m.PRESS_AGAIN),), "warn")
    return spec(_(m.VIDEO_BROKEN), (_(m.ASK_STAFF),), "alert")
