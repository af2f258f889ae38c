"""central.toml: the central inventory service's configuration, validated by pydantic.

`load_config(path)` raises ConfigError with one message naming the file, the field, what was
expected and what was found; the CLI prints it and exits 2.
"""

from __future__ import annotations

import tomllib
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inventory.errors import InventoryError
from schemas.models import REPLAY_MAX_SEQS, LabelRange, UnitId


class ConfigError(InventoryError):
    """The configuration file is missing, unreadable or invalid."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


ROLES = ("viewer", "inventory", "operations", "admin")  # each role can do everything the ones before it can
Role = Literal["viewer", "inventory", "operations", "admin"]


def _zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"expected an IANA time zone such as 'America/Chicago', got {v!r}") from e
    return v


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    refresh_s: int = Field(default=15, ge=2, le=3600, description="dashboard self-refresh period")
    timezone: str | None = Field(
        default=None, description="times on the pages are shown in this zone (default: [reports] timezone)"
    )
    tls_cert_file: Path | None = Field(default=None, description="serve HTTPS with this certificate")
    tls_key_file: Path | None = None
    command_timeout_s: float = Field(default=30.0, gt=0, le=3600, description="a unit's answer is due within")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        return None if v is None else _zone(v)

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("expected both tls_cert_file and tls_key_file, or neither")
        return self


class SsoSettings(Section):
    """Single sign-on through the county's reverse proxy: its headers are believed only when the
    request comes from one of `trusted_proxies`."""

    trusted_proxies: list[IPv4Network | IPv6Network] = Field(min_length=1)
    user_header: str = Field(default="X-Remote-User", min_length=1, max_length=64)
    groups_header: str = Field(default="X-Remote-Groups", min_length=1, max_length=64)
    group_roles: dict[str, Role] = Field(
        default={}, description="proxy group -> role; a user gets the highest role of their groups"
    )


class AuthSettings(Section):
    session_idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    max_failed_logins: int = Field(default=5, ge=1, le=100, description="then the account is locked")
    lockout_minutes: float = Field(default=15.0, gt=0)
    login_attempts_per_ip: int = Field(default=30, ge=1, description="failed logins per 10 min per address")
    sso: SsoSettings | None = None


class EmailSettings(Section):
    smtp_host: str = Field(min_length=1)
    smtp_port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = Field(default="nalox@localhost", pattern=r"^[^@\s]+@[^@\s]+$")
    recipients: list[str] = Field(min_length=1)
    digest_minutes: float = Field(default=10.0, gt=0, description="alerts are gathered into one mail per")

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if "@" not in a or any(c.isspace() for c in a)]
        if bad:
            raise ValueError(f"expected e-mail addresses, got {bad[0]!r}")
        return v


class StoreSettings(Section):
    db: str = Field(default="central.db", description="SQLite file path, or postgresql://... URL")


class TlsSettings(Section):
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


WORKER = "{worker}"  # in [mqtt.tls] file names: the ingest worker's number, 0 .. workers - 1


class MqttSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str = Field(default="nalox-inventory", min_length=1, max_length=64)
    keepalive: int = Field(default=30, ge=5, le=3600)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=3600, description="longer than any outage")
    shared: bool = Field(default=False, description="take events through $share/<group>/...")
    shared_group: str = Field(default="inventory", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    workers: int = Field(default=1, ge=1, le=32)
    tls: TlsSettings | None = None
    username: str | None = None
    password: str | None = None
    commands_client_id: str = Field(
        default="nalox-dashboard",
        min_length=1,
        max_length=64,
        description="the dashboard's own MQTT session for staff commands (CN `dashboard` in production)",
    )
    commands_tls: TlsSettings | None = Field(
        default=None, description="the dashboard's certificate for commands; default: [mqtt.tls]"
    )

    @model_validator(mode="after")
    def _one_certificate_per_worker(self) -> MqttSettings:
        """The production broker makes each certificate's CN its client id: two ingest workers on one
        certificate would displace each other, so `workers > 1` needs `{worker}` in the file names."""
        tls = self.tls
        if tls is None or tls.cert_file is None:
            return self
        files = (("cert_file", tls.cert_file), ("key_file", tls.key_file))
        templated = [name for name, f in files if f is not None and WORKER in str(f)]
        if self.workers > 1 and len(templated) < 2:
            raise ValueError(
                f"expected '{WORKER}' in [mqtt.tls] cert_file and key_file with workers = {self.workers} "
                "(one certificate per ingest worker, e.g. inventory-{worker}.crt: the broker makes each "
                f"certificate's CN its client id), got cert_file {tls.cert_file}, key_file {tls.key_file}"
            )
        if templated and self.commands_tls is None:
            raise ValueError(
                "expected [mqtt.commands_tls] (the dashboard's certificate) next to per-worker "
                "certificates in [mqtt.tls], got none"
            )
        return self

    def for_worker(self, worker: int) -> MqttSettings:
        """These settings for ingest worker `worker` (0-based): `{worker}` in the TLS file names becomes
        its number (certificate inventory-0, inventory-1, ...)."""
        tls = self.tls
        if tls is None:
            return self
        named = {
            k: Path(str(v).replace(WORKER, str(worker)))
            for k, v in (("cert_file", tls.cert_file), ("key_file", tls.key_file))
            if v is not None
        }
        return self.model_copy(update={"tls": tls.model_copy(update=named)})


class IngestSettings(Section):
    gap_timeout_s: float = Field(
        default=30.0, gt=0, description="ask for a replay when a seq gap lasts this long"
    )
    max_payload_bytes: int = Field(default=65536, ge=256)
    batch_size: int = Field(default=200, ge=1, le=10_000)
    max_future_s: float = Field(
        default=900.0, ge=0, description="refuse (quarantine) a payload whose ts is further ahead of receipt"
    )
    max_past_days: float = Field(
        default=400.0, gt=0, description="refuse (quarantine) a payload whose ts is older than this"
    )
    replay_backoff_max_s: float = Field(
        default=1800.0, gt=0, description="longest wait between two replay requests for one gap"
    )
    replay_max_seqs: int = Field(
        default=REPLAY_MAX_SEQS, ge=1, le=REPLAY_MAX_SEQS,
        description="the most seqs one replay request asks for (a longer gap is asked for in steps)",
    )
    quarantine_per_unit: int = Field(
        default=500, ge=1, le=100_000, description="open quarantine rows per unit; more only count up"
    )
    queue_max: int = Field(
        default=2000, ge=10, le=65535,
        description="messages in flight to the ingest (MQTT v5 receive maximum): the broker holds the rest",
    )


class EnrollmentSettings(Section):
    from_state: bool = Field(
        default=False, description="enroll an unknown unit from its first retained state"
    )


class UnitEntry(Section):
    id: UnitId
    site: str = Field(min_length=1, max_length=200)
    name: str | None = None
    program: str = Field(
        default="Jail vending", min_length=1, max_length=100, description="e.g. Community vending"
    )


class ProductSettings(Section):
    """A product as central knows it; `label` must match the units' product config (the unit reports
    its own in its state, which wins for that unit's readings)."""

    name: str | None = Field(default=None, max_length=200, description="shown on pages instead of the code")
    doses: int = Field(default=2, ge=1, le=20, description="doses per kit")
    label: LabelRange = LabelRange()


class PrivacySettings(Section):
    kit_time_granularity_s: int = Field(
        default=3600,
        ge=60,
        le=86400,
        description="the time of each kit, video, failed vend and empty press is stored rounded down to this",
    )

    @field_validator("kit_time_granularity_s")
    @classmethod
    def _divides_a_day(cls, v: int) -> int:
        if 86400 % v:
            raise ValueError(f"expected a number of seconds that divides a day (60, 900, 3600...), got {v}")
        return v


class TemperatureHistorySettings(Section):
    bucket_s: int = Field(
        default=900, ge=60, le=86400, description="readings are kept as min/mean/max per bucket"
    )
    keep_days: int = Field(default=90, ge=1, le=3650, description="older buckets are dropped")


class AlertSettings(Section):
    interval_s: float = Field(default=30.0, gt=0)
    offline_minutes: float = Field(default=15.0, gt=0)
    no_dispense_hours: float = Field(default=72.0, gt=0)
    temperature_min_c: float | None = Field(
        default=None, description="obsolete: the product label range ([products.<name>.label]) decides"
    )
    temperature_max_c: float | None = Field(default=None, description="obsolete: see temperature_min_c")
    expiry_days: list[int] = Field(default=[30, 60, 90])
    vend_failure_rate: float = Field(default=0.2, ge=0, le=1)
    vend_failure_min_attempts: int = Field(default=5, ge=1)
    vend_failure_window_hours: float = Field(default=24.0, gt=0)
    webhook_url: str | None = None
    email: EmailSettings | None = None
    pki_warn_days: float = Field(
        default=30.0, gt=0, description="warn this long before a certificate expires or the CRL's next update"
    )
    crl_file: Path | None = Field(
        default=None, description="the broker's CRL (past its next update the broker refuses all)"
    )
    certificate_files: list[Path] = Field(
        default=[], description="more certificates to watch (broker, CAs); central's own MQTT ones always are"
    )

    @field_validator("expiry_days")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if not v or any(d <= 0 for d in v):
            raise ValueError("expected a non-empty list of positive day counts, e.g. [30, 60, 90]")
        return sorted(v)


class ReportSettings(Section):
    timezone: str = Field(default="UTC", description="monthly reports count calendar months in this zone")
    fiscal_year_start_month: int = Field(
        default=7,
        ge=1,
        le=12,
        description="fiscal year N starts on the 1st of this month in year N-1 (1: calendar year)",
    )
    open_data_min_cell: int = Field(
        default=11, ge=2, le=1000, description="public counts below this are suppressed"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        return _zone(v)


class CentralConfig(Section):
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    mqtt: MqttSettings = MqttSettings()
    ingest: IngestSettings = IngestSettings()
    enrollment: EnrollmentSettings = EnrollmentSettings()
    alerts: AlertSettings = AlertSettings()
    reports: ReportSettings = ReportSettings()
    privacy: PrivacySettings = PrivacySettings()
    temperature_history: TemperatureHistorySettings = TemperatureHistorySettings()
    products: dict[str, ProductSettings] = {"nasal-4mg": ProductSettings(name="Naloxone nasal spray 4 mg")}
    auth: AuthSettings = AuthSettings()
    units: list[UnitEntry] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def display_timezone(self) -> str:
        return self.server.timezone or self.reports.timezone

    @field_validator("units")
    @classmethod
    def _unique(cls, v: list[UnitEntry]) -> list[UnitEntry]:
        seen: set[str] = set()
        for u in v:
            if u.id in seen:
                raise ValueError(f"expected unique unit ids, found {u.id!r} twice")
            seen.add(u.id)
        return v


def load_config(path: str | Path) -> CentralConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config file: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: expected TOML, found a syntax error: {e}") from e
    return parse_config(data, str(p))


def parse_config(data: dict[str, object], source: str = "<config>") -> CentralConfig:
    try:
        return CentralConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        found = err.get("input")
        raise ConfigError(f"{source}: field {where}: {err['msg']} (found {found!r})") from e


EXAMPLE = """\
# central.toml: the nalox central inventory service (`nalox inventory serve --config central.toml`)

log_level = "info"

[server]
host = "127.0.0.1"        # dashboard + API address; put a TLS reverse proxy in front for remote staff
port = 8080
refresh_s = 15            # pages refresh themselves this often (a form being filled is never lost)
timezone = "America/Los_Angeles"   # the county's zone: every time on the pages is shown in it
command_timeout_s = 30    # a unit's answer to a command sent from the dashboard is due within this
# tls_cert_file = "/etc/nalox/pki/dashboard.crt"   # serve HTTPS directly (counties without a proxy)
# tls_key_file = "/etc/nalox/pki/dashboard.key"

[auth]                    # staff accounts: `nalox inventory user add NAME --role ROLE`
session_idle_minutes = 30 # a session unused this long ends
max_failed_logins = 5     # then the account is locked for lockout_minutes
lockout_minutes = 15
login_attempts_per_ip = 30   # failed logins per 10 minutes from one address
# [auth.sso]              # single sign-on through the county's reverse proxy
# trusted_proxies = ["10.0.0.5/32"]   # the headers are believed only from these addresses
# user_header = "X-Remote-User"
# groups_header = "X-Remote-Groups"   # comma-separated
# [auth.sso.group_roles]  # proxy group -> role (the highest of a user's groups counts)
# "nalox-viewers" = "viewer"
# "pharmacy" = "inventory"
# "facilities" = "operations"
# "it-admins" = "admin"

[store]
db = "central.db"         # SQLite file (default), or "postgresql://user@host/dbname" for a large fleet

[mqtt]
host = "127.0.0.1"
port = 1883
client_id = "nalox-inventory"   # stable: the broker keeps this session while the service is down
session_expiry_s = 604800       # 7 days: longer than any outage
shared = false                  # true when several ingest processes share the events ($share/inventory/...)
shared_group = "inventory"
workers = 1                     # ingest clients in this process (more than 1 implies shared = true)
commands_client_id = "nalox-dashboard"   # staff commands from the dashboard go out on their own session
# [mqtt.tls]              # production broker: the CN of each certificate is its MQTT client id
# ca_file = "/etc/nalox/pki/ca.crt"
# cert_file = "/etc/nalox/pki/inventory.crt"   # workers > 1: one certificate per worker, named with
# key_file = "/etc/nalox/pki/inventory.key"    # {worker} = 0, 1, ...: "/etc/nalox/pki/inventory-{worker}.crt"
# [mqtt.commands_tls]     # ... with the `dashboard` certificate (make-certs.sh DIR service dashboard)
# ca_file = "/etc/nalox/pki/ca.crt"
# cert_file = "/etc/nalox/pki/dashboard.crt"
# key_file = "/etc/nalox/pki/dashboard.key"

[ingest]
gap_timeout_s = 30        # a missing seq not filled within this time is asked for again (cmd/replay)
max_payload_bytes = 65536
batch_size = 200
max_future_s = 900        # a ts further ahead of receipt is refused and quarantined
max_past_days = 400       # ... and one older than this
replay_backoff_max_s = 1800  # replay requests for one gap wait 30 s, 60 s, 120 s ... up to this
quarantine_per_unit = 500 # open quarantine rows per unit; past it the newest row counts up
queue_max = 2000          # messages in flight to the ingest; the broker holds the rest (back-pressure)

[enrollment]
from_state = false        # true: a unit not listed below is enrolled by its first retained state

[alerts]
interval_s = 30
offline_minutes = 15
no_dispense_hours = 72
# temperatures are judged by each product's label range ([products.<name>.label] below)
expiry_days = [30, 60, 90]
vend_failure_rate = 0.2
vend_failure_min_attempts = 5
vend_failure_window_hours = 24
# webhook_url = "https://example.org/hooks/nalox"   # each alert is POSTed here as JSON
# [alerts.email]          # alerts by e-mail, gathered into one digest per digest_minutes
# smtp_host = "smtp.county.example"
# smtp_port = 587
# starttls = true
# sender = "nalox@county.example"
# recipients = ["pharmacy@county.example"]
# digest_minutes = 10

[reports]
timezone = "UTC"          # monthly reports count calendar months in this zone, e.g. "America/Chicago"
fiscal_year_start_month = 7   # fiscal year N runs from this month of N-1 (7: July 2025 - June 2026 is FY2026)
open_data_min_cell = 11   # open-data counts below this are suppressed (with complementary cells)

[privacy]
kit_time_granularity_s = 3600   # central keeps each kit's time rounded down to the hour

[temperature_history]
bucket_s = 900            # min/mean/max per 15 minutes per unit
keep_days = 90

[products.nasal-4mg]
name = "Naloxone nasal spray 4 mg"   # what staff read on the pages (the code is what units report)
doses = 2
label = { storage_min_c = 20.0, storage_max_c = 25.0, excursion_min_c = 5.0, excursion_max_c = 40.0 }

[[units]]
id = "unit-001"
site = "County Jail - Release Lobby"
program = "Jail vending"   # recorded with each event: moving a unit later does not rewrite history

[[units]]
id = "unit-002"
site = "County Jail - Annex"
"""
