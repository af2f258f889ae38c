"""`nalox inventory ...`: serve the central service, print an example central.toml, check a config,
manage staff accounts (`user add|list|disable|enable|reset-password`) and API tokens
(`token create|list|revoke`)."""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from inventory import log
from inventory.accounts import AccountError, Accounts
from inventory.audit import Actor, AuditTrail
from inventory.config import EXAMPLE, ROLES, CentralConfig, ConfigError, load_config
from inventory.store import StoreError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nalox inventory", description="central inventory service")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="MQTT ingest + dashboard + API (default http://127.0.0.1:8080)")
    serve.add_argument("--config", type=Path, help="central.toml (see `nalox inventory config-example`)")
    serve.add_argument("--db", help="SQLite file path or postgresql://... URL (overrides [store] db)")
    serve.add_argument("--http-host")
    serve.add_argument("--http-port", type=int)
    serve.add_argument("--mqtt-host")
    serve.add_argument("--mqtt-port", type=int)
    serve.add_argument("--workers", type=int, help="ingest clients in this process (> 1 shares the events)")
    serve.add_argument("--client-id", help="MQTT client id; give each ingest process its own")
    serve.add_argument("--shared", action="store_true", help="take events through the shared subscription")
    serve.add_argument("--no-http", action="store_true", help="ingest only (an extra ingest process)")
    user = sub.add_parser("user", help="staff accounts: add, list, disable, enable, reset-password")
    usub = user.add_subparsers(dest="user_command", required=True)
    for name, helptext in (
        ("add", "a new account (password prompted, or read from --password-file)"),
        ("list", "every account with its role and state"),
        ("disable", "refuse the account's sign-in and end its sessions"),
        ("enable", "allow a disabled account again"),
        ("reset-password", "a new password (prompted or from --password-file); clears a lock-out"),
    ):
        u = usub.add_parser(name, help=helptext)
        _store_args(u)
        if name != "list":
            u.add_argument("name")
        if name == "add":
            u.add_argument("--role", required=True, choices=ROLES)
        if name in ("add", "reset-password"):
            u.add_argument("--password-file", type=Path, help="read the password from this file (automation)")
    token = sub.add_parser("token", help="API tokens for scripts: create (printed once), list, revoke")
    tsub = token.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="print one new token on stdout")
    _store_args(t)
    t.add_argument("--role", required=True, choices=ROLES)
    t.add_argument("--name", required=True, help="what uses it, e.g. 'county BI export'")
    _store_args(tsub.add_parser("list", help="tokens with role, last use, revoked or not (never the secret)"))
    r = tsub.add_parser("revoke", help="the token stops working at once")
    _store_args(r)
    r.add_argument("id", help="the token id (`token list`)")
    sub.add_parser("config-example", help="print an example central.toml")
    check = sub.add_parser("check-config", help="validate a central.toml and exit")
    check.add_argument("--config", type=Path, required=True)
    return p


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="central.toml (its [store] db)")
    p.add_argument("--db", help="SQLite file path or postgresql://... URL (overrides [store] db)")


def _read_password(a: argparse.Namespace) -> str:
    if a.password_file:
        try:
            return a.password_file.read_text().rstrip("\n")
        except OSError as e:
            raise AccountError(f"{a.password_file}: cannot read the password file: {e.strerror or e}") from e
    first = getpass.getpass(f"password for {a.name}: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def _cli_actor() -> Actor:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor(f"cli:{who}"[:64], "admin", "cli", "localhost")


def accounts_command(a: argparse.Namespace) -> int:
    """user ... and token ...: one store, one change, one audit entry; errors say why, exit 1."""
    from inventory.store import open_store

    cfg = load_config(a.config) if a.config else CentralConfig()
    store = open_store(a.db or cfg.store.db)
    accounts, audit, now = Accounts(store), AuditTrail(store), datetime.now(UTC)
    actor = _cli_actor()
    try:
        if a.command == "token":
            return _token_command(a, accounts, audit, actor, now)
        cmd = a.user_command
        if cmd == "list":
            for u in accounts.users():
                state = "disabled" if u.disabled else ("locked" if u.locked(now) else "active")
                last = u.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if u.last_login_at else "never"
                print(f"{u.name}\t{u.role}\t{state}\tlast sign-in {last}")
            return 0
        before = accounts.get_user(a.name)
        if cmd == "add":
            after = accounts.add_user(a.name, a.role, _read_password(a), now)
        elif cmd in ("disable", "enable"):
            after = accounts.set_disabled(a.name, cmd == "disable")
        else:
            after = accounts.reset_password(a.name, _read_password(a))
        audit.record(
            actor,
            f"user_{cmd.replace('-', '_')}",
            now,
            target=f"user:{a.name}",
            before={"role": before.role, "disabled": before.disabled} if before else None,
            after={"role": after.role, "disabled": after.disabled},
        )
        print(f"{after.name}: {after.role}, {'disabled' if after.disabled else 'active'}", file=sys.stderr)
        return 0
    except AccountError as e:
        print(f"nalox inventory: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _token_command(
    a: argparse.Namespace, accounts: Accounts, audit: AuditTrail, actor: Actor, now: datetime
) -> int:
    if a.token_command == "create":
        token, secret = accounts.create_token(a.name, a.role, actor.name, now)
        audit.record(
            actor,
            "token_create",
            now,
            target=f"token:{token.id}",
            after={"name": token.name, "role": token.role},
        )
        print(secret)
        print(
            f"token {token.id} ({token.role}) for {token.name!r}: shown once, keep it safe", file=sys.stderr
        )
        return 0
    if a.token_command == "list":
        for t in accounts.tokens():
            state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
            used = f"{t.last_used_at:%Y-%m-%d %H:%M UTC}" if t.last_used_at else "never"
            print(f"{t.id}\t{t.role}\t{t.name}\t{state}\tlast used {used}")
        return 0
    t = accounts.revoke_token(a.id, now)
    audit.record(
        actor, "token_revoke", now, target=f"token:{t.id}", before={"revoked": False}, after={"revoked": True}
    )
    print(f"token {t.id} ({t.name!r}) revoked", file=sys.stderr)
    return 0


def apply_overrides(cfg: CentralConfig, a: argparse.Namespace) -> CentralConfig:
    data = cfg.model_dump()
    pairs = [
        ("store", "db", a.db),
        ("server", "host", a.http_host),
        ("server", "port", a.http_port),
        ("mqtt", "host", a.mqtt_host),
        ("mqtt", "port", a.mqtt_port),
        ("mqtt", "workers", a.workers),
    ]
    for section, key, value in pairs:
        if value is not None:
            data[section][key] = value
    if a.shared:
        data["mqtt"]["shared"] = True
    return CentralConfig.model_validate(data)


def serve(a: argparse.Namespace) -> int:
    from inventory.service import Service

    cfg = apply_overrides(load_config(a.config) if a.config else CentralConfig(), a)
    log.configure(cfg.log_level)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    service = Service(cfg, client_id=a.client_id, http=not a.no_http)
    try:
        try:
            service.start()
        except (OSError, StoreError) as e:
            service.stop()
            print(f"nalox inventory: {e}", file=sys.stderr)
            return 1
        where = cfg.store.db.split("@")[-1]
        print(
            f"nalox inventory: serving {service.url or '(no http)'}; database {where}",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
        service.stop()
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if a.command == "config-example":
        print(EXAMPLE, end="")
        return 0
    try:
        if a.command in ("user", "token"):
            return accounts_command(a)
        if a.command == "check-config":
            cfg = load_config(a.config)
            print(f"{a.config}: ok ({len(cfg.units)} units, store {cfg.store.db.split('@')[-1]})")
            return 0
        return serve(a)
    except ConfigError as e:
        print(f"nalox inventory: config error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # pydantic errors from overrides, database unreachable, ...
        if e.__class__.__name__ == "ValidationError":
            print(f"nalox inventory: bad option: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
