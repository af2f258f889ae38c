"""Language packs: gettext catalogues (`locale/<lang>.po`, the translators' files, read with Babel), the
English text being the id, compiled to `locale/<lang>.json` (texts, the language's own name, review
status) that the unit reads with the standard library alone: Babel and its locale data (about 8 MB)
stay out of the daemon's memory and start-up.

python -m controller.kiosk.i18n          compile every .po to its .json (after editing a .po)
python -m controller.kiosk.i18n --check  exit 1 (naming the stale packs) if a .json differs from its .po

A pack whose header comment says "to be reviewed by a native speaker before deployment" is shown but
flagged (`Pack.reviewed` is False; `nalox unit screens` and the daemon's log say so); English and Spanish
are complete and reviewed.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from controller.kiosk.messages import ALL

REVIEW_NOTE = "to be reviewed by a native speaker before deployment"


class LanguageError(Exception):
    """A language without a pack, or a pack that cannot be read."""


@dataclass(frozen=True)
class Pack:
    lang: str
    texts: dict[str, str]
    reviewed: bool
    name: str  # the language's name in itself ("Español", "中文"), for the button labels

    def gettext(self, msgid: str, **params: object) -> str:
        text = self.texts.get(msgid) or msgid
        return text.format(**params) if params else text

    @property
    def missing(self) -> list[str]:
        return [m for m in ALL if not self.texts.get(m)]


def locale_dir() -> Path:
    return Path(str(resources.files("controller.kiosk").joinpath("locale")))


def available() -> list[str]:
    return sorted(p.stem for p in locale_dir().glob("*.json"))


@functools.cache
def pack(lang: str) -> Pack:
    path = locale_dir() / f"{lang}.json"
    if not path.is_file():
        raise LanguageError(
            f"expected a language pack {path.name} (one of {', '.join(available())}), found none"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Pack(lang, dict(raw["texts"]), reviewed=bool(raw["reviewed"]), name=str(raw["name"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise LanguageError(
            f"{path}: expected a compiled pack (texts, reviewed, name; `python -m controller.kiosk.i18n`), "
            f"found {type(exc).__name__}: {exc}"
        ) from None


# ------------------------------------------------------------------ compiling the .po files (Babel)


def compile_po(path: Path) -> dict[str, object]:
    """The compiled pack of one .po file: what `pack()` reads."""
    from babel.messages.pofile import read_po

    lang = path.stem
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
    return {"lang": lang, "name": native_name(lang), "reviewed": reviewed, "texts": texts}


def native_name(lang: str) -> str:
    from babel import Locale, UnknownLocaleError

    try:
        name = Locale.parse(lang).get_language_name(lang) or lang
    except (ValueError, UnknownLocaleError):
        return lang
    return name[:1].upper() + name[1:]


def compiled() -> dict[Path, str]:
    """Every .po's compiled pack as the text of its .json file."""
    out: dict[Path, str] = {}
    for po in sorted(locale_dir().glob("*.po")):
        text = json.dumps(compile_po(po), ensure_ascii=False, indent=1, sort_keys=True)
        out[po.with_suffix(".json")] = text + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    packs = compiled()
    stale = [p for p, text in packs.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    orphans = sorted(set(locale_dir().glob("*.json")) - set(packs))
    if check:
        for p in [*stale, *orphans]:
            print(f"{p.name} is stale: run `python -m controller.kiosk.i18n` and commit it", file=sys.stderr)
        return 1 if stale or orphans else 0
    for p in stale:
        p.write_text(packs[p], encoding="utf-8")
        print(p)
    for p in orphans:
        p.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
