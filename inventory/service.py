"""The central service put together: store connections, ingest workers, the alert loop and the
web server, started and stopped as one (in-process for tests and the demo, or by the CLI)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn

from inventory import log
from inventory.alerts import AlertManager
from inventory.audit import AuditTrail
from inventory.clock import Clock, RealClock
from inventory.commands import Commander
from inventory.config import CentralConfig
from inventory.mqtt import IngestWorker
from inventory.notify import EmailDigest
from inventory.store import Store, StoreError, open_store
from inventory.web import create_app
from schemas.models import Alert, topic


class Service:
    """`nalox inventory serve` as an object: start(), url, stop()."""

    def __init__(
        self,
        config: CentralConfig,
        clock: Clock | None = None,
        schema: str | None = None,
        client_id: str | None = None,
        http: bool = True,
        alerts: bool = True,
    ) -> None:
        self.config, self.clock, self.schema = config, clock or RealClock(), schema
        self.client_id = client_id or config.mqtt.client_id
        self.http, self.run_alerts = http, alerts
        self.log = log.get("service")
        self.workers: list[IngestWorker] = []
        self.stores: list[Store] = []
        self.store: Store | None = None
        self.alerts: AlertManager | None = None
        self.commander: Commander | None = None
        self.email: EmailDigest | None = None
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def _open(self) -> Store:
        try:
            s = open_store(self.config.store.db, schema=self.schema)
        except Exception as e:
            where = self.config.store.db.split("@")[-1]  # never print a password from the URL
            raise StoreError(f"cannot open the database {where}: {type(e).__name__}: {e}".strip()) from e
        self.stores.append(s)
        recomputed = s.use_report_timezone(self.config.reports.timezone)
        if recomputed:
            self.log.warning(
                "report_months_recomputed", timezone=self.config.reports.timezone, events=recomputed
            )
        coarsened = s.use_kit_time_granularity(self.config.privacy.kit_time_granularity_s)
        if coarsened:
            self.log.warning(
                "kit_times_coarsened",
                granularity_s=self.config.privacy.kit_time_granularity_s,
                events=coarsened,
            )
        return s

    def start(self) -> Service:
        self.store = self._open()
        self.store.sync_config_units(
            [(u.id, u.site, u.name, u.program) for u in self.config.units], self.clock.now()
        )
        n = self.config.mqtt.workers
        shared = self.config.mqtt.shared or n > 1
        for i in range(n):
            cid = self.client_id if n == 1 else f"{self.client_id}-{i}"
            self.workers.append(IngestWorker(self.config, self._open(), self.clock, cid, shared, worker=i))
        for w in self.workers:
            w.start()
        if self.config.alerts.email is not None:
            self.email = EmailDigest(self.config.alerts.email, self.clock)
        if self.run_alerts:
            # its own connection: a pass over a state's fleet takes seconds, and the web's connection
            # (one lock) must not wait for it
            self.alerts = AlertManager(
                self._open(),
                self.config.alerts,
                self.clock,
                self._publish_alert,
                self.config.products,
                ZoneInfo(self.config.reports.timezone),
                notify=self._mail_alert,
                pki_files=_own_certificates(self.config),
            )
            self._spawn(self._alert_loop, "alerts")
        if self.http:
            self.commander = Commander(self.config, self._open(), self.clock, AuditTrail(self.store)).start()
            self._start_http()
        self.log.info("service_started", db=self.store.dialect, workers=n, shared=shared, url=self.url)
        return self

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _send_command(self, unit: str, name: str, body: bytes) -> None:
        """A staff command to one unit (QoS 1; answers come on cmd_response like replay answers)."""
        if not self.workers:
            return
        w = self.workers[0]
        cid = json.loads(body).get("command_id", "")
        w.publish(
            topic(unit, "cmd", name),
            body,
            1,
            topic(unit, "cmd_response", w.ingestor.response_suffix),
            str(cid).encode(),
            3600,
        )

    def _publish_alert(self, topic: str, body: bytes) -> None:
        if self.workers:
            self.workers[0].publish(topic, body, 1, None, None, None)

    def _mail_alert(self, alert: Alert) -> None:
        if self.email is not None:
            self.email.add(f"{alert.state}: {alert.severity}: {alert.message}", alert.severity == "critical")

    def _alert_loop(self) -> None:
        assert self.alerts is not None
        while not self._stop.is_set():
            try:
                self.alerts.run_once()
                keep = timedelta(days=self.config.temperature_history.keep_days)
                self.alerts.store.prune_temperatures(self.clock.now() - keep)
            except Exception as e:
                self.log.error("alert_evaluation_failed", error=repr(e))
            if self.email is not None:
                self.email.tick()
            self._stop.wait(self.config.alerts.interval_s)

    def _start_http(self) -> None:
        assert self.store is not None
        app = create_app(
            self.store, self.config, self.clock, self.runtime, self._send_command, self.commander, self.email
        )
        server = self.config.server
        cfg = uvicorn.Config(
            app,
            host=server.host,
            port=server.port,
            ssl_certfile=str(server.tls_cert_file) if server.tls_cert_file else None,
            ssl_keyfile=str(server.tls_key_file) if server.tls_key_file else None,
            log_config=None,
            access_log=False,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(cfg)
        self._spawn(self._server.run, "http")
        while not self._server.started:
            if not self._threads[-1].is_alive():
                raise OSError(
                    f"the web server could not listen on {self.config.server.host}:"
                    f"{self.config.server.port} (port in use?)"
                )
            self._stop.wait(0.02)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str | None:
        scheme = "https" if self.config.server.tls_cert_file else "http"
        return f"{scheme}://{self.config.server.host}:{self.port}" if self.port else None

    def runtime(self) -> dict[str, Any]:
        gaps: dict[str, int] = {}
        for w in self.workers:
            gaps |= w.ingestor.open_gaps()
        return {
            "mqtt_connected": all(w.connected.is_set() for w in self.workers),
            "workers": [
                {"client_id": w.client_id, "connected": w.connected.is_set(), "shared": w.shared}
                for w in self.workers
            ],
            "open_gaps": {u: {"missing_from_seq": s} for u, s in sorted(gaps.items())},
            "replays_requested": sum(w.ingestor.replays_requested for w in self.workers),
            "command_responses": sum(w.ingestor.responses_received for w in self.workers),
        }

    def wait_connected(self, timeout: float) -> bool:
        """True once every worker is connected and its subscriptions are granted."""
        return all(w.subscribed.wait(timeout) for w in self.workers)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        for w in self.workers:
            w.stop()
        if self.commander is not None:
            self.commander.stop()
        for t in self._threads:
            t.join(timeout=10)
        for s in self.stores:
            s.close()
        self.log.info("service_stopped")

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _own_certificates(config: CentralConfig) -> list[Path]:
    """Central's MQTT client certificate and the CA it trusts: watched for expiry like the CRL."""
    files: list[Path] = []
    for worker in range(config.mqtt.workers):  # one certificate per ingest worker when templated
        tls = config.mqtt.for_worker(worker).tls
        if tls is not None:
            files += [Path(f) for f in (tls.cert_file, tls.ca_file) if f is not None and Path(f) not in files]
    return files
