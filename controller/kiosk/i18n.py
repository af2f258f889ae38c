"""Language packs: gettext catalogues (`locale/<lang>.po`) read with Babel; the English text is the id.

A pack whose header comment says "to be reviewed by a native speaker before deployment" is shown but
flagged (`Pack.reviewed` is False; `nalox unit screens` and the daemon's log say so); English and Spanish
are complete and reviewed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.pofile import read_po

from controller.kiosk.messages import ALL

REVIEW_NOTE = "to be reviewed by a native speaker before deployment"


class LanguageError(Exception):
    """A language without a pack, or a pack that cannot be read."""


@dataclass(frozen=True)
class Pack:
    lang: str
    texts: dict[str, str]
    reviewed: bool

    def gettext(self, msgid: str, **params: object) -> str:
        text = self.texts.get(msgid) or msgid
        return text.format(**params) if params else text

    @property
    def missing(self) -> list[str]:
        return [m for m in ALL if not self.texts.get(m)]

    @property
    def name(self) -> str:
        """The language's name in itself ("Español", "中文"), for the button labels."""
        return native_name(self.lang)


def locale_dir() -> Path:
    return Path(str(resources.files("controller.kiosk").joinpath("locale")))


def available() -> list[str]:
    return sorted(p.stem for p in locale_dir().glob("*.po"))


@functools.cache
def pack(lang: str) -> Pack:
    path = locale_dir() / f"{lang}.po"
    if not path.is_file():
        raise LanguageError(
            f"expected a language pack {path.name} (one of {', '.join(available())}), found none"
        )
    try:
        with path.open("rb") as fh:
            catalog = read_po(fh, locale=None)
    except Exception as exc:  # Babel raises several types for a broken file
        raise LanguageError(f"{path}: expected a gettext .po file, found {exc}") from None
    texts = {
        str(m.id): str(m.string)
        for m in catalog
        if m.id and isinstance(m.id, str) and isinstance(m.string, str) and m.string
    }
    reviewed = REVIEW_NOTE not in (catalog.header_comment or "").lower()
    return Pack(lang, texts, reviewed=reviewed)


def native_name(lang: str) -> str:
    try:
        name = Locale.parse(lang).get_language_name(lang) or lang
    except (ValueError, UnknownLocaleError):
        return lang
    return name[:1].upper() + name[1:]
