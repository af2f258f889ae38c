"""Remote commands for a unit: validate, refuse or act once, and answer on the v5 response topic.

A command arrives on `nalox/v1/<unit>/cmd/<name>` (QoS 1, never retained) as JSON with `command_id`
and `issued_at`. `CommandProcessor.process` never raises: every message gets one `Reply`, either
`ok` with the handler's result or `error` with a reason, and every refusal is logged with its reason.
Checks, in order: retained (refused: a retained command would act again on every reconnect), size
(MAX_COMMAND_BYTES), JSON object, known name, the pydantic model for the name, a repeated
`command_id` (answered again with the stored answer, without acting), age (`issued_at` older than
`max_age_s`, or that far in the future; the broker itself drops messages past their v5 message
expiry), then the handler. Answers are remembered in the ledger (CommandMemory, persisted), so a repeat
after a restart is still answered without acting; every answer is kept while its command could still
pass the age check, whatever the rate. A refusal for age is not remembered: the same command_id with
a fresh `issued_at` is judged again. Each command model maps to one handler in
a CommandRegistry, and each handler returns its own CommandResult model.

The reply goes to the message's v5 response topic with its correlation data when that topic lies
under `nalox/v1/<unit>/cmd_response` (the only place the broker's ACL lets a unit answer); with no
response topic, or one elsewhere, it goes to `nalox/v1/<unit>/cmd_response`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar, cast

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from controller.clock import Clock
from controller.errors import ControllerError
from controller.ledger import CommandMemory
from controller.mqtt.client import InboundMessage
from schemas.models import COMMANDS, MAX_COMMAND_BYTES, CommandBase, CommandResponse, topic

log = structlog.get_logger("nalox.commands")

NAMES: dict[type[CommandBase], str] = {model: name for name, model in COMMANDS.items()}


def command_name(cmd: CommandBase) -> str:
    """The command's name on the wire (`cmd/<name>`)."""
    return NAMES.get(type(cmd), type(cmd).__name__)


class CommandRefused(ControllerError):
    """A command (MQTT, control socket) the unit will not carry out; the reason is sent back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CommandResult(BaseModel):
    """What a command did: each handler returns its own subclass, sent as the answer's `result`."""

    model_config = ConfigDict(extra="forbid")


class RestockDone(CommandResult):
    seq: int
    stock_after: int
    discrepancy: int


class LotSet(CommandResult):
    seq: int
    lot: str | None
    expiry: str


class ModeNow(CommandResult):
    mode: str


class Republished(CommandResult):
    republished: list[str]
    session: int


class Replaying(CommandResult):
    """A replay: the rows `from_seq` .. `to_seq` still in the outbox (`rows` of them) are sent again;
    `clipped` when the range asked for (or an open one) was longer than the unit's `limit`."""

    from_seq: int
    to_seq: int
    rows: int
    clipped: bool
    limit: int
    outbox_depth: int
    last_seq: int


class TestVendDone(CommandResult):
    """A test vend: `seq` and `stock_after` only when a kit dropped (and was recorded)."""

    __test__ = False  # not a pytest test class
    command_id: int
    outcome: str
    seq: int | None = None
    stock_after: int | None = None


class LotHoldDone(CommandResult):
    lot: str
    held: bool
    changed: bool
    kits_here: int


class DiagReport(CommandResult):
    """The full diagnostic report (controller.diag.run.build_report), its keys as they are."""

    model_config = ConfigDict(extra="allow")


C = TypeVar("C", bound=CommandBase)
Handler = Callable[[CommandBase], CommandResult]


class CommandRegistry:
    """Each command model maps to one handler with a typed result; a command without one is refused."""

    def __init__(self, who: str = "this unit") -> None:
        self.who = who
        self._handlers: dict[type[CommandBase], Handler] = {}

    def register(self, model: type[C], handler: Callable[[C], CommandResult]) -> None:
        if model in self._handlers:
            raise ValueError(f"expected one handler per command, found a second for {NAMES.get(model)}")
        self._handlers[model] = cast(Handler, handler)  # run() hands each handler only its own model

    def run(self, cmd: CommandBase) -> CommandResult:
        handler = self._handlers.get(type(cmd))
        if handler is None:
            raise CommandRefused(f"expected a command {self.who} carries out ({', '.join(self.names())}), "
                                 f"found {command_name(cmd)!r}")
        return handler(cmd)

    def names(self) -> list[str]:
        return sorted(NAMES.get(model, model.__name__) for model in self._handlers)


@dataclass(frozen=True)
class Reply:
    topic: str
    response: CommandResponse
    correlation_data: bytes | None

    @property
    def payload(self) -> bytes:
        return self.response.model_dump_json(exclude_none=False).encode()


class CommandProcessor:
    """Turns one inbound command message into exactly one reply; acts at most once per command_id."""

    def __init__(self, unit_id: str, handler: Handler, memory: CommandMemory, clock: Clock,
                 max_age_s: float) -> None:
        self.unit_id = unit_id
        self.handler = handler
        self.memory = memory
        self.clock = clock
        self.max_age = timedelta(seconds=max_age_s)
        self.default_topic = topic(unit_id, "cmd_response")
        self.prefix = topic(unit_id, "cmd") + "/"
        self.acted = 0
        self.refused = 0

    def process(self, msg: InboundMessage) -> Reply:
        name = msg.topic[len(self.prefix):] if msg.topic.startswith(self.prefix) else msg.topic
        try:
            command_id, response = self._decide(name, msg)
        except Exception as exc:  # the last line of defence: never let a command stop the daemon
            log.exception("command_crashed", name=name)
            command_id, response = None, CommandResponse(
                command_id=None, status="error", reason=f"internal error: {type(exc).__name__}")
        if response.status == "error":
            self.refused += 1
            log.warning("command_refused", name=name[:64], command_id=command_id, reason=response.reason)
        return Reply(self._reply_topic(msg), response, msg.correlation_data)

    def _decide(self, name: str, msg: InboundMessage) -> tuple[str | None, CommandResponse]:
        def error(reason: str, command_id: str | None = None) -> tuple[str | None, CommandResponse]:
            return command_id, CommandResponse(command_id=command_id, status="error", reason=reason)

        if msg.retain:
            return error("retained command refused: commands must be published with retain=false",
                         _peek_id(msg.payload))
        if len(msg.payload) > MAX_COMMAND_BYTES:
            return error(f"command too large: expected at most {MAX_COMMAND_BYTES} bytes, "
                         f"got {len(msg.payload)}")
        try:
            data = json.loads(msg.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(f"expected a JSON object, got invalid JSON ({exc})")
        if not isinstance(data, dict):
            return error(f"expected a JSON object, got {type(data).__name__}")
        model = COMMANDS.get(name)
        command_id = data.get("command_id") if isinstance(data.get("command_id"), str) else None
        if model is None:
            return error(f"unknown command {name[:64]!r}: expected one of {', '.join(sorted(COMMANDS))}",
                         command_id)
        try:
            cmd = model.model_validate(data)
        except ValidationError as exc:
            return error(f"invalid {name} command: {_describe(exc)}", command_id)
        return cmd.command_id, self._answer(name, cmd)

    def _answer(self, name: str, cmd: CommandBase) -> CommandResponse:
        earlier = self.memory.get(cmd.command_id)
        if earlier is not None:
            log.info("command_repeated", name=name, command_id=cmd.command_id, status=earlier.status)
            return earlier
        too_old = self._check_age(cmd)
        if too_old is not None:
            return too_old  # not remembered: a retry with a fresh issued_at is judged again
        self.memory.forget_before(self.clock.now() - self.max_age)
        if self.memory.full():
            return CommandResponse(
                command_id=cmd.command_id, status="error",
                reason=f"too many commands: {self.memory.limit} answered within the last "
                       f"{self.max_age.total_seconds():.0f} s; try again later")
        response = self._act(name, cmd)
        self.memory.put(cmd.command_id, name, response, cmd, self.clock.now())
        return response

    def _check_age(self, cmd: CommandBase) -> CommandResponse | None:
        now = self.clock.now()
        issued = cmd.issued_at if cmd.issued_at.tzinfo else cmd.issued_at.replace(tzinfo=now.tzinfo)
        age = now - issued
        if age > self.max_age:
            reason = f"expired: issued_at {issued.isoformat()} is {age.total_seconds():.0f} s old, " \
                     f"expected at most {self.max_age.total_seconds():.0f} s"
        elif -age > self.max_age:
            reason = f"issued_at {issued.isoformat()} is {-age.total_seconds():.0f} s in the future " \
                     f"(clock skew above {self.max_age.total_seconds():.0f} s)"
        else:
            return None
        return CommandResponse(command_id=cmd.command_id, status="error", reason=reason)

    def _act(self, name: str, cmd: CommandBase) -> CommandResponse:
        try:
            result = self.handler(cmd)
        except Exception as exc:
            if isinstance(exc, CommandRefused):
                return CommandResponse(command_id=cmd.command_id, status="error",
                                       reason=str(exc)[:500] or "refused")
            log.exception("command_handler_failed", name=name, command_id=cmd.command_id)
            return CommandResponse(command_id=cmd.command_id, status="error",
                                   reason=f"internal error while acting: {type(exc).__name__}: {exc}"[:500])
        self.acted += 1
        log.info("command_done", name=name, command_id=cmd.command_id, issued_by=cmd.issued_by)
        return CommandResponse(command_id=cmd.command_id, status="ok",
                               result=result.model_dump(mode="json", exclude_unset=True))

    def _reply_topic(self, msg: InboundMessage) -> str:
        wanted = msg.response_topic or ""
        under = wanted == self.default_topic or wanted.startswith(self.default_topic + "/")
        if under and not set(wanted) & {"+", "#", "\x00"}:
            return wanted
        if wanted:
            log.warning("command_response_topic_replaced", wanted=wanted[:200], used=self.default_topic,
                        reason=f"expected a response topic under {self.default_topic}")
        return self.default_topic


def _peek_id(payload: bytes) -> str | None:
    try:
        value = json.loads(payload).get("command_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and len(value) <= 64 else None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more
