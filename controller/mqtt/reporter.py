"""The unit's MQTT reporter: status, state, telemetry and the ledger outbox out; acks and commands in.

Topics (DESIGN.md): `status` retained online/offline carrying a persisted session counter (the Will is
`offline` with the same session, so a late Will from an old session can be told apart); `state`
retained, on connect, on change and on a rebirth command; `telemetry` QoS 0 every
`telemetry_interval_s`; `event/<type>` QoS 1 from the ledger outbox in seq order through a bounded
in-flight window.

Delivery rules: a row counts as delivered only on a PUBACK with a success reason code. A refused
PUBACK (>= 0x80, e.g. 0x87 Not authorized) keeps the row, raises the `mqtt_publish_refused` alarm and
retries after `refused_retry_s`; refused rows hold their window slot, so nothing floods. Rows leave the
outbox only when `<unit>/ack` covers their seq (ledger.prune). After every reconnect, and when no ack
has come for `ack_resend_s` (doubling up to an hour), everything not yet acked is sent again: the central
service deduplicates by event_id. A `replay` command sends again only the range it names, at most
`replay_max_seqs` rows (an open or longer range is clipped and the answer says so). Nothing is ever
dropped to make room; the `outbox_backlog` alarm rises past `outbox_alarm_depth` rows or
`outbox_alarm_age_s`.

Latency and throughput: the worker reads the outbox ahead (a window's worth of rows at a time) and
each success PUBACK hands the next read-ahead row to the freed slot on the client's ack thread, so the
window stays full without a worker pass per event; the worker is woken only when there is work for it
(read more, the window emptied, an alarm); rows the daemon has just recorded are handed to the client
on the daemon's own thread (`wake()`). Events go before state: a state change waits (at most
STATE_DEFER_S) while events are in flight, so a dispense is never published behind a state snapshot.

Commands on `<unit>/cmd/+` go through controller.mqtt.commands; `rebirth` and `replay` are the
reporter's own (its CommandRegistry), the rest go to `unit.run_command(cmd)`: `Unit` below is the one
interface between the reporter and the daemon.
"""

from __future__ import annotations

import collections
import functools
import threading
from typing import Protocol, TypedDict

import structlog

from controller.clock import Clock
from controller.ledger import CommandMemory, Ledger, LedgerUnavailable, OutboxRow
from controller.mqtt.client import InboundMessage, MqttClient, MqttSettings, PublishHandle, Will
from controller.mqtt.commands import (
    CommandProcessor,
    CommandRefused,
    CommandRegistry,
    CommandResult,
    Replaying,
    Republished,
)
from schemas.models import (
    Ack,
    CommandBase,
    RebirthCommand,
    ReplayCommand,
    Status,
    Telemetry,
    UnitState,
    topic,
)

log = structlog.get_logger("nalox.reporter")

REFUSED_ALARM = "mqtt_publish_refused"
BACKLOG_ALARM = "outbox_backlog"
MAX_ACK_RESEND_S = 3600.0
POLL_S = 0.5
# An idle unit's outbox is read when the daemon says it wrote (wake()), on a rewind, and at least this
# often; the backlog alarm is checked this often. (Reading both every POLL_S was 4 SQLite queries a
# second per idle unit: three quarters of a simulated fleet's idle CPU, docs/simulator.md.)
IDLE_READ_S = 5.0
# A state change waits (at most this long) while events are in flight: the event goes first and the
# broker's PUBACK is not kept waiting behind the state's serialisation on the same interpreter.
STATE_DEFER_S = 0.05


class Unit(Protocol):
    """What the reporter needs of the unit (controller.daemon.UnitDaemon): its state and telemetry, its
    commands, and the alarms the reporter raises (refused publishes, a backlog, a foreign ack)."""

    @property
    def unit_id(self) -> str: ...
    def snapshot_state(self) -> UnitState: ...
    def telemetry(self) -> Telemetry: ...
    def run_command(self, cmd: CommandBase) -> CommandResult: ...
    def raise_alarm(self, code: str, message: str, severity: str = "warning",
                    column: int | None = None) -> bool: ...
    def clear_alarm(self, code: str) -> bool: ...


class OutboxFigures(TypedDict):
    """What state and telemetry say of the outbox."""

    outbox_depth: int
    outbox_oldest_age_s: float | None


class Reporter:
    """Reporter(settings, unit, ledger, clock): start(), stop(), wake(), state_changed()."""

    def __init__(self, settings: MqttSettings, unit: Unit, ledger: Ledger, clock: Clock,
                 unit_id: str | None = None) -> None:
        self.settings = settings
        self.unit = unit
        self.ledger = ledger
        self.clock = clock
        self.unit_id: str = unit_id or unit.unit_id
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursor = 0  # highest seq handed to the client since the last rewind
        self._ahead: collections.deque[OutboxRow] = collections.deque()  # read after _cursor, not yet sent
        self._replays: collections.deque[OutboxRow] = collections.deque()  # a replay command's rows
        self._outbox_dirty = True  # rows may have been written since the last read found the outbox's end
        self._next_read = 0.0  # the latest time for the next read even without a wake()
        self._inflight: dict[int, PublishHandle] = {}
        self._refused: dict[int, tuple[OutboxRow, float, str]] = {}  # seq -> (row, retry at, reason)
        self._need_state = False
        self._state_due = 0.0  # monotonic time by which a pending state change is published anyway
        self._session = 0
        self._refused_reason = ""  # the latest refusal, for the alarm message
        self._refused_alarm = False  # raised and not yet cleared (worker thread only)
        self._delivered_at_refusal = 0
        self._backlog_alarm = False
        self._next_telemetry = 0.0
        self._next_backlog_check = 0.0
        self._last_ack_progress = 0.0
        self._ack_stalls = 0
        self.delivered = 0
        self.refusals = 0
        self.resends = 0
        self.states = 0
        self.telemetries = 0
        self.client: MqttClient | None = None
        self._own = CommandRegistry("the reporter")
        self._own.register(RebirthCommand, self._rebirth)
        self._own.register(ReplayCommand, self._replay)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Reporter:
        uid = self.unit_id
        legacy = self.settings.state_db or self.ledger.path.with_name(self.ledger.path.name + ".mqtt.sqlite")
        try:
            if self.ledger.import_reporter_file(legacy):
                log.info("reporter_file_imported", unit=uid, path=str(legacy))
        except LedgerUnavailable as exc:  # a disk that cannot write: imported at a later start
            log.warning("reporter_file_not_imported", unit=uid, path=str(legacy), error=str(exc)[:300])
        self.commands = CommandProcessor(uid, self._run_command, CommandMemory(self.ledger), self.clock,
                                         self.settings.command_max_age_s)
        self._next_telemetry = self.clock.monotonic()
        self._last_ack_progress = self.clock.monotonic()
        self.client = MqttClient(self.settings, self.settings.client_id or uid, on_message=self._on_message,
                                 on_connected=self._on_connected, will=self._will,
                                 subscriptions=[(topic(uid, "cmd", "+"), 1), (topic(uid, "ack"), 1)])
        self._thread = threading.Thread(target=self._run, name=f"reporter-{uid}", daemon=True)
        self._thread.start()
        self.client.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Publish `offline` for this session (so no Will follows), then disconnect and stop."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.client is not None:
            if self.client.connected:
                handle = self._publish_status("offline")
                try:
                    handle.wait(min(timeout, 3.0))
                except TimeoutError:
                    log.warning("offline_status_not_acked", unit=self.unit_id)
            self.client.close(timeout)

    def wake(self) -> None:
        """New rows in the outbox: hand them to the client now, on the caller's thread (the daemon's
        loop, which has just committed them), instead of waking the worker thread to do it: one thread
        hop less between the commit and the publish, which on a busy two-core board cost a scheduling
        slice. Only when the reporter is busy elsewhere (its lock held) or offline does the worker take
        the rows, as before."""
        self._outbox_dirty = True
        if self.connected and self._lock.acquire(blocking=False):
            try:
                self._pump(self.clock.monotonic())
                return
            except Exception:
                log.exception("reporter_inline_send_failed", unit=self.unit_id)
            finally:
                self._lock.release()
        self._wake.set()

    def state_changed(self) -> None:
        with self._lock:
            if not self._need_state:
                self._need_state = True
                self._state_due = self.clock.monotonic() + STATE_DEFER_S
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    @property
    def session(self) -> int:
        return self._session

    # ------------------------------------------------------------------ connection

    def _will(self) -> Will:
        """Called by the client before each connection attempt: a new session number each time."""
        self._session = self.ledger.next_session()
        status = Status(state="offline", session=self._session, ts=self.clock.now())
        return Will(topic(self._uid, "status"), status.model_dump_json().encode(), qos=1, retain=True)

    def _on_connected(self) -> None:
        with self._lock:
            self._rewind(self.ledger.acked_seq(), "reconnect")
            self._need_state = True
            self._state_due = self.clock.monotonic()
        self._publish_status("online")
        self._wake.set()

    def _publish_status(self, state: str) -> PublishHandle:
        assert self.client is not None
        status = Status(state=state, session=self._session, ts=self.clock.now())  # type: ignore[arg-type]
        return self.client.publish(topic(self._uid, "status"), status.model_dump_json(), qos=1, retain=True,
                                   resend=False)

    @property
    def _uid(self) -> str:
        assert self.unit_id is not None
        return self.unit_id

    def _rewind(self, to_seq: int, why: str) -> None:
        """Send everything after `to_seq` again (caller holds the lock)."""
        if self._cursor > to_seq:
            self.resends += self._cursor - to_seq
            log.info("outbox_rewind", unit=self.unit_id, from_seq=to_seq + 1, to_seq=self._cursor, why=why)
        self._cursor = to_seq
        self._outbox_dirty = True
        self._inflight.clear()
        self._refused.clear()
        self._ahead.clear()
        self._replays.clear()
        self._last_ack_progress = self.clock.monotonic()

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._poll_timeout())
            self._wake.clear()
            if self._stopping.is_set() or not self.connected:
                continue
            try:
                self._tick()
            except Exception:
                log.exception("reporter_tick_failed", unit=self.unit_id)

    def _poll_timeout(self) -> float:
        """POLL_S, or less while a deferred state change is due sooner and can be sent. (Disconnected,
        a state change due at once made this 0 on every pass: the worker spun a core until the broker
        came back; 1,000 simulated units cut off by a stall spun into a load average of 1,600.)"""
        with self._lock:
            if not self._need_state or not self.connected:
                return POLL_S
            return min(POLL_S, max(0.0, self._state_due - self.clock.monotonic()))

    def _tick(self) -> None:
        now = self.clock.monotonic()
        self._pump(now)  # events first: a dispense must not wait behind a state snapshot
        with self._lock:
            need_state = self._need_state and (not self._inflight or now >= self._state_due)
            if need_state:
                self._need_state = False
        if need_state:
            self._publish_state()
        if now >= self._next_telemetry:
            self._next_telemetry = now + self.settings.telemetry_interval_s
            self._publish_telemetry()
        self._check_ack_stall(now)
        self._update_alarms(now)

    def _outbox_figures(self) -> OutboxFigures:
        oldest = self.ledger.oldest_pending_at()
        age = max(0.0, (self.clock.now() - oldest).total_seconds()) if oldest else None
        return {"outbox_depth": self.ledger.depth(), "outbox_oldest_age_s": age}

    def _publish_state(self) -> None:
        assert self.client is not None
        state = self.unit.snapshot_state().model_copy(update=self._outbox_figures())
        self.client.publish(topic(self._uid, "state"), state.model_dump_json(), qos=1, retain=True,
                            resend=False)
        self.states += 1

    def _publish_telemetry(self) -> None:
        assert self.client is not None
        telemetry = self.unit.telemetry().model_copy(update=self._outbox_figures())
        self.client.publish(topic(self._uid, "telemetry"), telemetry.model_dump_json(), qos=0, resend=False)
        self.telemetries += 1

    # ------------------------------------------------------------------ events

    def _pump(self, now: float) -> None:
        with self._lock:
            for seq, (row, retry_at, _) in sorted(self._refused.items()):
                if retry_at <= now and seq not in self._inflight:
                    self._send_row(row)
            self._send_ahead()
            if len(self._ahead) < self._refill_at() and (self._outbox_dirty or now >= self._next_read):
                # Read ahead in batches (one outbox read per window's worth of rows, not per PUBACK)
                # while the window is still busy, so each PUBACK can be followed by the next row at once.
                after = self._ahead[-1].seq if self._ahead else self._cursor
                self._outbox_dirty = False  # a wake() during the read marks it again
                rows = self.ledger.pending(after, self.settings.inflight_window)
                if len(rows) == self.settings.inflight_window:
                    self._outbox_dirty = True  # not at the end yet: read on
                self._next_read = now + IDLE_READ_S
                self._ahead.extend(rows)
                self._send_ahead()

    def _send_ahead(self) -> None:
        """Hand rows already read from the outbox to the client, in seq order, one per free slot
        (caller holds the lock)."""
        room = self.settings.inflight_window - self._busy()
        while room > 0 and self._replays:  # a replay's rows first, without moving the cursor
            row = self._replays.popleft()
            if row.seq not in self._inflight:
                self._send_row(row)
                room -= 1
        while room > 0 and self._ahead:
            row = self._ahead.popleft()
            self._send_row(row)
            self._cursor = max(self._cursor, row.seq)
            room -= 1

    def _busy(self) -> int:
        """Window slots taken: rows awaiting a PUBACK plus refused rows waiting to retry (caller locks)."""
        if not self._refused:
            return len(self._inflight)
        return len(self._inflight) + sum(1 for seq in self._refused if seq not in self._inflight)

    def _refill_at(self) -> int:
        return max(1, self.settings.inflight_window // 4)

    def _send_row(self, row: OutboxRow) -> None:
        assert self.client is not None
        handle = self.client.publish(topic(self._uid, "event", row.event_type), row.payload, qos=1,
                                     resend=False)
        self._inflight[row.seq] = handle
        handle.add_done_callback(functools.partial(self._row_done, row))

    def _row_done(self, row: OutboxRow, handle: PublishHandle) -> None:
        """Runs on the client's ack thread: bookkeeping and the next read-ahead row into the freed slot;
        alarms are raised and the outbox is read by the worker."""
        result = handle.result
        assert result is not None
        with self._lock:
            if self._inflight.get(row.seq) is not handle:
                return  # from before a rewind
            del self._inflight[row.seq]
            wake = True  # a refusal to alarm on, or a lost connection
            if result.delivered:
                self.delivered += 1
                recovered = self._refused.pop(row.seq, None) is not None or self._refused_alarm
                # The freed slot takes the next row read ahead, here, without a hop to the worker.
                before = len(self._ahead)
                if (before or self._replays) and self.client is not None and self.client.connected:
                    self._send_ahead()
                # Wake the worker only when it has something to do: read ahead (the buffer just ran
                # low, or is empty with a quarter window free), the window emptied (deferred state,
                # ack-stall timer), or an alarm to clear. A worker pass per PUBACK halves the drain.
                low = self._refill_at()
                wake = (recovered or not self._inflight or before >= low > len(self._ahead)
                        or (not self._ahead and self.settings.inflight_window - self._busy() >= low))
            elif result.reason_code >= 0x80:
                self.refusals += 1
                reason = f"broker refused event seq {row.seq} on {handle.topic}: " \
                         f"0x{result.reason_code:02X} {result.reason}"
                self._refused[row.seq] = (row, self.clock.monotonic() + self.settings.refused_retry_s, reason)
                self._refused_reason = reason
                self._delivered_at_refusal = self.delivered
                log.error("event_publish_refused", unit=self.unit_id, seq=row.seq, topic=handle.topic,
                          reason_code=result.reason_code, reason=result.reason)
            # CONNECTION_LOST / NOT_CONNECTED: the rewind on reconnect sends it again
        if wake:
            self._wake.set()

    def _check_ack_stall(self, now: float) -> None:
        with self._lock:
            if self._inflight or self._refused:
                return
            wait = min(MAX_ACK_RESEND_S, self.settings.ack_resend_s * 2 ** self._ack_stalls)
            if now - self._last_ack_progress < wait:
                return
            acked = self.ledger.acked_seq()  # read only when a resend could be due
            if self._cursor <= acked:
                return
            self._ack_stalls += 1
            self._rewind(acked, "no ack")
        self._wake.set()

    def _update_alarms(self, now: float) -> None:
        with self._lock:
            refused = bool(self._refused)
            recovered = not refused and self.delivered > self._delivered_at_refusal
            reason = self._refused_reason
        if refused and not self._refused_alarm:
            self._refused_alarm = True
            self.unit.raise_alarm(REFUSED_ALARM, reason, severity="critical")
        elif self._refused_alarm and recovered:
            self._refused_alarm = False
            self.unit.clear_alarm(REFUSED_ALARM)
        if now >= self._next_backlog_check:
            self._next_backlog_check = now + IDLE_READ_S
            self._check_backlog()

    def _check_backlog(self) -> None:
        figures = self._outbox_figures()
        depth, age = figures["outbox_depth"], figures["outbox_oldest_age_s"] or 0.0
        over = depth >= self.settings.outbox_alarm_depth or age >= self.settings.outbox_alarm_age_s
        if over and not self._backlog_alarm:
            self._backlog_alarm = True
            self.unit.raise_alarm(BACKLOG_ALARM, f"outbox holds {depth} unacknowledged events, oldest "
                                  f"{age:.0f} s old (thresholds {self.settings.outbox_alarm_depth} rows, "
                                  f"{self.settings.outbox_alarm_age_s:.0f} s)", severity="warning")
        elif not over and self._backlog_alarm:
            self._backlog_alarm = False
            self.unit.clear_alarm(BACKLOG_ALARM)

    # ------------------------------------------------------------------ inbound

    def _on_message(self, msg: InboundMessage) -> None:
        if msg.topic == topic(self._uid, "ack"):
            self._handle_ack(msg)
        else:
            self._answer(msg)

    def _handle_ack(self, msg: InboundMessage) -> None:
        try:
            ack = Ack.model_validate_json(msg.payload)
        except ValueError as exc:
            log.warning("ack_refused", unit=self.unit_id,
                        reason=f"expected {{\"acked_seq\": N}}: {exc}"[:300])
            return
        last = self.ledger.last_seq()
        if ack.acked_seq > last:
            # The central store holds seqs this ledger never wrote: another ledger under our unit id
            # (a re-imaged unit). Pruning on such an ack would delete events central has not seen.
            log.error("ack_beyond_last_seq", unit=self.unit_id, acked_seq=ack.acked_seq, last_seq=last)
            self.unit.raise_alarm(
                "ack_beyond_last_seq",
                f"central acked seq {ack.acked_seq}, expected at most this ledger's last seq {last}; "
                "outbox kept: reconcile the unit's history at the central service",
                "critical",
            )
            return
        pruned = self.ledger.prune(ack.acked_seq)
        if pruned:
            with self._lock:
                while self._ahead and self._ahead[0].seq <= ack.acked_seq:
                    self._ahead.popleft()  # pruned while waiting to be sent: central has it
                self._last_ack_progress = self.clock.monotonic()
                self._ack_stalls = 0
            log.debug("outbox_pruned", unit=self.unit_id, acked_seq=ack.acked_seq, rows=pruned)
            self._wake.set()

    def _answer(self, msg: InboundMessage) -> None:
        assert self.client is not None
        reply = self.commands.process(msg)
        props: dict[str, object] = {"ContentType": "application/json"}
        if reply.correlation_data is not None:
            props["CorrelationData"] = reply.correlation_data
        self.client.publish(reply.topic, reply.payload, qos=1, resend=False, properties=props)

    def _run_command(self, cmd: CommandBase) -> CommandResult:
        """The reporter's own commands here, every other one to the unit."""
        if type(cmd) in (RebirthCommand, ReplayCommand):
            return self._own.run(cmd)
        return self.unit.run_command(cmd)

    def _rebirth(self, cmd: RebirthCommand) -> Republished:
        self.state_changed()
        self._publish_status("online")
        return Republished(republished=["status", "state"], session=self._session)

    def _replay(self, cmd: ReplayCommand) -> Replaying:
        """Send the outbox rows from_seq .. to_seq again, at most replay_max_seqs of them (an open or longer
        range is clipped, and the answer says so), beside the normal stream: the cursor does not move."""
        last, acked, limit = self.ledger.last_seq(), self.ledger.acked_seq(), self.settings.replay_max_seqs
        if cmd.from_seq > last:
            raise CommandRefused(f"expected from_seq at most this ledger's last seq {last}, "
                                 f"got {cmd.from_seq}: nothing to replay")
        wanted = cmd.to_seq if cmd.to_seq is not None else last  # open: up to the last seq
        to_seq = min(wanted, last, cmd.from_seq + limit - 1)
        start = max(cmd.from_seq, acked + 1)  # rows up to the ack are pruned: central has them
        rows = [r for r in self.ledger.pending(start - 1, to_seq - start + 1) if r.seq <= to_seq] \
            if to_seq >= start else []
        with self._lock:
            self._replays = collections.deque(rows)  # a newer request replaces an older one: bounded
        self._wake.set()
        if wanted > to_seq:
            log.warning("replay_clipped", unit=self.unit_id, from_seq=cmd.from_seq, asked_to=cmd.to_seq,
                        to_seq=to_seq, limit=limit)
        return Replaying(from_seq=cmd.from_seq, to_seq=to_seq, rows=len(rows), clipped=wanted > to_seq,
                         limit=limit, outbox_depth=self.ledger.depth(), last_seq=last)
