"""The unit's TOML configuration, validated by pydantic; a bad file gets one clear ConfigError."""

from __future__ import annotations

import hashlib
import os
import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from controller.errors import ControllerError
from controller.mqtt.client import MqttSettings
from schemas.models import LabelRange, UnitId


class ConfigError(ControllerError):
    """The configuration file is missing or wrong; the message names file, field, expected and found."""

    exit_code = 2


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UnitSection(Section):
    id: UnitId
    site: str = Field(min_length=1, max_length=200)


class SerialSection(Section):
    port: str = Field(min_length=1, description="serial device, udev symlink or pyserial URL")
    baudrate: int = Field(default=115200, gt=0)
    ack_timeout_s: float = Field(default=0.1, gt=0)
    reply_timeout_s: float = Field(default=10.0, gt=0)


class Product(Section):
    name: str = Field(min_length=1)
    doses: int = Field(default=2, ge=1, le=20, description="doses per kit (a nasal-spray kit holds 2)")
    label: LabelRange = Field(
        default_factory=LabelRange, description="the label storage range and excursions (the one source)"
    )

    @field_validator("label")
    @classmethod
    def _label_ordered(cls, v: LabelRange) -> LabelRange:
        if not v.excursion_min_c <= v.storage_min_c < v.storage_max_c <= v.excursion_max_c:
            raise ValueError("excursion_min_c <= storage_min_c < storage_max_c <= excursion_max_c")
        return v


class HeatPolicy(Section):
    """When heat exposure puts a lot on hold in this unit (its kits are not vended; alarm; central
    shows the reason). Exposure counts from the lot's load into a column."""

    max_hours_outside_label: float = Field(default=24.0, gt=0, description="cumulative, per lot")
    max_minutes_beyond_excursion: float = Field(default=30.0, gt=0, description="beyond 5-40 C, per lot")
    max_mkt_c: float | None = Field(default=None, description="mean kinetic temperature limit (e.g. 25)")
    mkt_min_hours: float = Field(default=24.0, gt=0, description="MKT is judged after this much history")
    sample_keep: int = Field(default=2016, ge=10, le=100_000, description="readings kept in the ledger")


class PrivacySection(Section):
    keep_acked_events_days: float = Field(
        default=30.0, gt=0, description="events central has acknowledged are deleted after this many days"
    )


class ColumnConfig(Section):
    column: int = Field(ge=1, le=64)
    product: str
    capacity: int = Field(ge=1, le=1000)
    par: int = Field(default=0, ge=0)
    initial_stock: int = Field(default=0, ge=0, description="kits loaded when the ledger is first created")
    lot: str | None = None
    expiry: date | None = None

    @model_validator(mode="after")
    def _fits(self) -> ColumnConfig:
        if self.initial_stock > self.capacity:
            raise ValueError(f"initial_stock at most capacity {self.capacity}")
        if self.par > self.capacity:
            raise ValueError(f"par at most capacity {self.capacity}")
        return self


class VideoSection(Section):
    files: dict[str, Path]
    captions: dict[str, Path] = Field(
        default={}, description="subtitle file per language (default: the clip's own .srt beside it)"
    )
    default_language: str = "en"
    expected_length_s: float = Field(default=120.0, gt=0, description="used until the player reports it")
    grace_s: float = Field(default=30.0, ge=0, description="beyond the clip length before abandonment")
    fallback: Literal["dispense", "block"] = "dispense"
    headless: bool = Field(default=False, description="--vo=null --ao=null (tests, bench, demo)")
    mpv: str = "mpv"
    mpv_args: list[str] = []
    start_timeout_s: float = Field(default=5.0, gt=0)
    stall_timeout_s: float = Field(default=5.0, gt=0, description="no progress this long: the player hangs")

    @field_validator("files")
    @classmethod
    def _english_and_spanish(cls, v: dict[str, Path]) -> dict[str, Path]:
        missing = [lang for lang in ("en", "es") if lang not in v]
        if missing:
            raise ValueError(f"a clip for en and es (missing {', '.join(missing)})")
        return v


Message = str | dict[str, str]


class Policies(Section):
    another_kit_window_s: float = Field(
        default=20.0, ge=0, le=600,
        description="after a kit, a press within this many seconds gives the same person another kit "
        "(0: every kit needs the video)",
    )
    kits_per_session: int = Field(default=5, ge=1, le=100_000, description="kits per video watched")
    emergency: bool = Field(
        default=True, description="a long press (or a button mapped to 'emergency') releases one kit at "
        "once with a short how-to loop, recorded via='emergency'"
    )
    out_of_stock_offer_s: float = Field(
        default=30.0, ge=0, le=600, description="out of stock: a press within this plays the training anyway"
    )
    max_attempts: int = Field(default=3, ge=1, le=64, description="columns tried per press")
    product: str | None = Field(default=None, description="product vended on a press (default: the first)")
    # the county's own words for a screen's first line, one text or one per language ({en = "...", es =
    # "..."}); without them the screens use the language packs (controller/kiosk/locale/*.po)
    out_of_stock_message: Message | None = None
    thank_you_message: Message | None = None
    vend_failed_message: Message | None = None
    service_message: Message | None = None
    video_broken_message: Message | None = None
    self_test_on_close: bool = True
    press_max_age_s: float = Field(
        default=3.0, gt=0, le=60, description="a press older than this when handled is void (told so)"
    )
    status_poll_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """multi_kit_window_s (one machine-wide window after any video) became another_kit_window_s (the
        same person's window after their kit, capped by kits_per_session); old files keep loading."""
        if isinstance(data, dict) and "multi_kit_window_s" in data:
            data = dict(data)
            old = data.pop("multi_kit_window_s")
            data.setdefault("another_kit_window_s", old)
        return data

    def text(self, name: str, language: str | None) -> str | None:
        """The county's own message `name` in the person's language, or None (use the language pack)."""
        value: Message | None = getattr(self, f"{name}_message", None)
        if value is None or isinstance(value, str):
            return value
        return value.get(language or "en") or value.get("en") or next(iter(value.values()), None)


class AccessPointConfig(Section):
    name: str = Field(min_length=1, max_length=80)
    address: str = Field(default="", max_length=120)
    hours: str = Field(default="", max_length=80)
    phone: str = Field(default="", max_length=40)


class KioskSection(Section):
    buttons: list[str] = Field(
        default=["en", "es"], min_length=1, max_length=16,
        description="what each board button does, by index: a language code, 'emergency' or 'repeat'",
    )
    display: bool | None = Field(default=None, description="draw screens on mpv (default: when not headless)")
    width: int = Field(default=1280, ge=320, le=3840)
    height: int = Field(default=720, ge=240, le=2160)
    captions: bool = True
    speech: bool = True
    speech_volume: int = Field(default=100, ge=0, le=200, description="espeak-ng amplitude, 100 = normal")
    speech_rate_wpm: int = Field(default=150, ge=80, le=400)
    espeak: str = "espeak-ng"
    voices: dict[str, str] = Field(default={}, description="espeak-ng voice per language, over the defaults")
    speech_dir: Path | None = Field(default=None, description="write speech to WAV files here (tests)")
    long_press_ms: int = Field(
        default=1500, ge=300, le=60_000,
        description="a press held this long (boards that report it, protocol 2) is a long press",
    )
    long_press: Literal["emergency", "repeat"] = Field(
        default="emergency",
        description="what a long press on a language button does: 'emergency' (a kit at once; speech "
        "repeat instead when policies.emergency is off) or 'repeat' (say the screen again)",
    )
    access_points: list[AccessPointConfig] = Field(default=[], max_length=6)
    info_url: str | None = Field(default=None, max_length=300, pattern=r"^https?://\S+$")

    @field_validator("buttons")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from controller.kiosk.i18n import available

        packs = available()
        for b in v:
            if b not in ("emergency", "repeat") and b not in packs:
                raise ValueError(
                    f"each button a language among {', '.join(packs)}, 'emergency' or 'repeat' (not {b!r})"
                )
        if not any(b in packs for b in v):
            raise ValueError("at least one language button")
        return v

    @property
    def languages(self) -> list[str]:
        out: list[str] = []
        for b in self.buttons:
            if b not in ("emergency", "repeat") and b not in out:
                out.append(b)
        return out


class PathsSection(Section):
    data_dir: Path
    ledger: Path | None = None
    control_socket: Path | None = None
    runtime_dir: Path | None = Field(
        default=None,
        description="sockets and scratch files (default: $RUNTIME_DIRECTORY under systemd, else "
        "data_dir/run); never /tmp",
    )

    def runtime_path(self) -> Path:
        if self.runtime_dir is not None:
            return self.runtime_dir
        systemd = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        return Path(systemd) if systemd else self.data_dir / "run"

    def ledger_path(self) -> Path:
        return self.ledger or self.data_dir / "ledger.sqlite3"


class TemperatureSection(Section):
    storage_min_c: float = 20.0
    storage_max_c: float = 25.0
    excursion_min_c: float = 5.0
    excursion_max_c: float = 40.0

    @model_validator(mode="after")
    def _ordered(self) -> TemperatureSection:
        if not self.excursion_min_c <= self.storage_min_c < self.storage_max_c <= self.excursion_max_c:
            raise ValueError("excursion_min_c <= storage_min_c < storage_max_c <= excursion_max_c")
        return self


class FirmwareSection(Section):
    trusted_keys: list[str] = Field(
        default_factory=list, max_length=16,
        description="Ed25519 public keys (base64 of the 32 raw bytes) a firmware bundle must be signed by")

    @field_validator("trusted_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        import base64
        import binascii

        for key in keys:
            try:
                raw = base64.b64decode(key, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"expected the base64 of 32 raw Ed25519 bytes, got {key[:20]!r}")
        return keys


class UnitConfig(Section):
    unit: UnitSection
    serial: SerialSection
    products: dict[str, Product]
    columns: list[ColumnConfig] = Field(min_length=1)
    videos: VideoSection
    policies: Policies = Policies()
    paths: PathsSection
    temperature: TemperatureSection = TemperatureSection()
    firmware: FirmwareSection = FirmwareSection()
    heat_policy: HeatPolicy = HeatPolicy()
    privacy: PrivacySection = PrivacySection()
    kiosk: KioskSection = KioskSection()
    mqtt: MqttSettings | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    config_version: str = "unversioned"

    @model_validator(mode="after")
    def _consistent(self) -> UnitConfig:
        numbers = [c.column for c in self.columns]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"each column number once, found {numbers}")
        for c in self.columns:
            if c.product not in self.products:
                raise ValueError(
                    f"column {c.column} product one of {sorted(self.products)}, found {c.product!r}"
                )
        if self.policies.product is not None and self.policies.product not in self.products:
            raise ValueError(f"policies.product one of {sorted(self.products)}")
        if self.videos.default_language not in self.videos.files:
            raise ValueError("videos.default_language one of the languages in videos.files")
        if "temperature" in self.model_fields_set:  # the old place: it becomes the products' label
            label = LabelRange(**self.temperature.model_dump())
            for name, p in list(self.products.items()):
                if "label" not in p.model_fields_set:
                    self.products[name] = p.model_copy(update={"label": label})
        strictest = self.label()
        object.__setattr__(self, "temperature", TemperatureSection(**strictest.model_dump()))
        missing = [lang for lang in self.kiosk.languages if lang not in self.videos.files]
        if missing:
            raise ValueError(
                f"a clip in videos.files for each button language (missing {', '.join(missing)})"
            )
        return self

    def label(self) -> LabelRange:
        """The strictest label range of the products loaded in the columns: the unit's one band."""
        ranges = [self.products[c.product].label for c in self.columns if c.product in self.products]
        return LabelRange(
            storage_min_c=max(r.storage_min_c for r in ranges),
            storage_max_c=min(r.storage_max_c for r in ranges),
            excursion_min_c=max(r.excursion_min_c for r in ranges),
            excursion_max_c=min(r.excursion_max_c for r in ranges),
        )

    @property
    def vend_product(self) -> str:
        return self.policies.product or self.columns[0].product

    def column(self, number: int) -> ColumnConfig:
        for c in self.columns:
            if c.column == number:
                return c
        raise KeyError(number)


def load_config(path: str | Path) -> UnitConfig:
    """Read and validate a unit configuration file; raises ConfigError with one clear message."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: expected a readable TOML file, found {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: expected valid TOML, found a syntax error: {exc}") from None
    data.setdefault("config_version", hashlib.sha256(raw).hexdigest()[:12])
    return parse_config(data, source=str(path), base_dir=path.parent)


def parse_config(data: dict[str, Any], source: str = "<config>", base_dir: Path | None = None) -> UnitConfig:
    try:
        config = UnitConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source)) from None
    return _resolve_paths(config, base_dir) if base_dir else config


def describe(exc: ValidationError, source: str) -> str:
    """One message for the first problem (and how many more there are)."""
    errors = exc.errors()
    first = errors[0]
    field = _field_name(first["loc"])
    expected = _expected(first)
    found = "nothing (the field is missing)" if first["type"] == "missing" else repr(first.get("input"))
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{source}: field {field}: expected {expected}, found {found}{more}"


def _field_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif str(part).startswith(("function-", "model-")):
            continue
        else:
            name += ("." if name else "") + str(part)
    return name or "(top level)"


def _expected(error: ErrorDetails) -> str:
    msg = str(error["msg"])
    if error["type"] == "missing":
        return "a value"
    if error["type"] == "extra_forbidden":
        return "no such field (a typo?)"
    for prefix, replacement in (
        ("Value error, ", ""),
        ("Input should be ", ""),
        ("Assertion failed, ", ""),
        ("String should match ", "a string matching "),
        ("String should have ", "a string with "),
        ("List should have ", "a list with "),
    ):
        if msg.startswith(prefix):
            return replacement + msg[len(prefix) :]
    return msg


def _resolve_paths(config: UnitConfig, base: Path) -> UnitConfig:
    """Relative paths in the file are relative to the file's folder."""

    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    config.videos.files = {k: fix(v) for k, v in config.videos.files.items()}
    config.videos.captions = {k: fix(v) for k, v in config.videos.captions.items()}
    if config.kiosk.speech_dir:
        config.kiosk.speech_dir = fix(config.kiosk.speech_dir)
    config.paths.data_dir = fix(config.paths.data_dir)
    if config.paths.ledger:
        config.paths.ledger = fix(config.paths.ledger)
    if config.paths.control_socket:
        config.paths.control_socket = fix(config.paths.control_socket)
    if config.paths.runtime_dir:
        config.paths.runtime_dir = fix(config.paths.runtime_dir)
    return config
