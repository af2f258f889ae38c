"""`nalox inventory ...`: serve the central service, print an example central.toml, check a config."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from inventory import log
from inventory.config import EXAMPLE, CentralConfig, ConfigError, load_config
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
    sub.add_parser("config-example", help="print an example central.toml")
    check = sub.add_parser("check-config", help="validate a central.toml and exit")
    check.add_argument("--config", type=Path, required=True)
    return p


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
