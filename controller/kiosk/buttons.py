"""What a button press means: the unit config maps each board button (by index) to a language,
'emergency' or 'repeat'. Protocol v1 boards report a language code instead of an index: that code is
turned into an index here and nowhere else. A press held kiosk.long_press_ms or more (protocol 2
boards report the hold) on a language button is a long press: the configured long-press action."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from controller.serial.board_api import ButtonPressed

V1_INDEX = {"en": 0, "es": 1}  # protocol v1: codec.LANGUAGES order


@dataclass(frozen=True)
class Action:
    kind: Literal["language", "emergency", "repeat"]
    lang: str | None  # the person's language, when the press says it
    long: bool = False  # a long press on a language button


def is_long(event: ButtonPressed, long_press_ms: int) -> bool:
    return event.long or (event.hold_ms is not None and event.hold_ms >= long_press_ms)


def button_index(event: ButtonPressed) -> int:
    if event.index is not None:
        return event.index
    return V1_INDEX.get(event.language, 0)


def resolve(
    event: ButtonPressed, buttons: list[str], default_lang: str, long_press_ms: int = 1500,
    long_action: Literal["emergency", "repeat"] = "emergency",
) -> Action:
    """`long_action`: what a long press on a language button does (the daemon passes 'repeat' when
    emergency is off)."""
    index = button_index(event)
    what = buttons[index] if 0 <= index < len(buttons) else None
    if what is None:  # a board with more buttons than the config names: the first language
        what = next(b for b in buttons if b not in ("emergency", "repeat"))
    if what == "emergency":
        return Action("emergency", None)
    if what == "repeat":
        return Action("repeat", None)
    if is_long(event, long_press_ms):
        return Action(long_action, what, long=True)
    return Action("language", what)
