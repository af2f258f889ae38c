"""Coverage-guided fuzzing (atheris) of the three parsers that take bytes from outside: the serial
deframer, the message codec and the MQTT payload validation of the central ingest.

    python -m bench.fuzz deframer --runs 1000000     # one target, one process (atheris owns it)
    python -m bench.fuzz all --runs 1000000          # every target in turn; figures as JSON lines

A crash is any exception other than the parser's own refusal (CodecError, a Rejected result): atheris
stops, prints the input and this exits non-zero. `make fuzz` runs 10^6 executions per target; the
short version in `make test` (tests/fuzz) runs a few thousand.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable

TARGETS = ("deframer", "codec", "payload")


def deframer_target() -> Callable[[bytes], None]:
    from firmware_py.codec import Deframer, decode_message

    def one(data: bytes) -> None:
        d = Deframer()
        half = len(data) // 2
        for frame in d.feed(data[:half]) + d.feed(data[half:]):
            assert 0 <= frame.type <= 0xFF
            try:
                decode_message(frame)
            except Exception as e:  # only the codec's own refusal is allowed
                if type(e).__name__ != "CodecError":
                    raise

    return one


def codec_target() -> Callable[[bytes], None]:
    from firmware_py.codec import MAX_PAYLOAD, MESSAGE_TYPES, CodecError, Frame, decode_message, encode_frame

    types = sorted(MESSAGE_TYPES)

    def one(data: bytes) -> None:
        if not data:
            return
        # what the frame layer lets through: at most MAX_PAYLOAD bytes (a longer frame never decodes)
        frame = Frame(data[0] & 0xFF, types[data[0] % len(types)], bytes(data[1 : 1 + MAX_PAYLOAD]))
        try:
            msg = decode_message(frame)
        except CodecError:
            return
        again = decode_message(Frame(frame.seq, msg.TYPE, msg.encode()))  # what decodes re-encodes
        assert again == msg, (msg, again)
        encode_frame(frame)

    return one


def payload_target() -> Callable[[bytes], None]:
    from datetime import UTC, datetime

    from inventory.ingest import Incoming, Parsed, Rejected, Window, classify

    topics = [
        "nalox/v1/unit-1/event/dispense", "nalox/v1/unit-1/event/restock", "nalox/v1/unit-1/event/alarm",
        "nalox/v1/unit-1/state", "nalox/v1/unit-1/status", "nalox/v1/unit-1/telemetry",
        "nalox/v1/unit-1/cmd_response/c", "nalox/v1/unit-1/event/video", "nalox/v1/x",
    ]
    window = Window(datetime(2026, 11, 1, tzinfo=UTC), 900, 400 * 86400)

    def one(data: bytes) -> None:
        if not data:
            return
        result = classify(Incoming(topics[data[0] % len(topics)], bytes(data[1:])), 65536, window)
        if isinstance(result, Parsed):
            result.model.model_dump_json()  # what is stored must serialise
        else:
            assert isinstance(result, Rejected) and result.reason
            assert bytes(data[1:]).decode("utf-8", "replace") not in result.detail or len(data) < 8

    return one


JSON_WORDS = [
    "{", "}", "[", "]", ":", ",", "null", "true", "false", "0", "-1", "1e308", "9007199254740993",
    '\\"schema_version\\"', '\\"event_id\\"', '\\"seq\\"', '\\"ts\\"', '\\"unit\\"',
    '\\"type\\"', '\\"column\\"', '\\"stock_after\\"', '\\"2026-10-31T10:00:00+00:00\\"',
    '\\"2026-10-31T10:00:00\\"', '\\"9999-12-31T23:59:59+14:00\\"', '\\"dispense\\"',
    '\\"restock\\"', '\\"alarm\\"', '\\"unit-1\\"', '\\"\\\\u0000\\"', '\\"columns\\"',
    '\\"alarms\\"', '\\"state\\"', '\\"online\\"', '\\"session\\"', '\\"last_seq\\"',
]


def seeds(target: str) -> list[bytes]:
    """A few valid inputs so coverage starts past the first checks."""
    from firmware_py.codec import Dispense, Ping, encode_frame, message_frame

    frames = [encode_frame(message_frame(1, Ping(nonce=5))), encode_frame(message_frame(2, Dispense(
        command_id=7, column=1)))]
    if target == "deframer":
        return [b"".join(frames), frames[0][:3] + b"\x00" + frames[1]]
    if target == "codec":
        return [bytes([1, m.TYPE]) + m.encode() for m in (Ping(nonce=5), Dispense(command_id=7, column=1))]
    event = {"schema_version": 1, "event_id": "unit-1-00000001", "seq": 1, "ts": "2026-10-31T10:00:00+00:00",
             "unit": "unit-1", "type": "dispense", "column": 1, "product": "naloxone 4 mg", "doses": 2,
             "command_id": 1, "via": "video", "stock_after": 3}
    return [bytes([0]) + json.dumps(event).encode()]


def run_one(target: str, runs: int) -> int:
    """atheris in this process (it never returns: it exits with libFuzzer's status)."""
    import atheris

    with atheris.instrument_imports():
        import firmware_py.codec  # noqa: F401
        import inventory.ingest  # noqa: F401
        import schemas.models  # noqa: F401
    one = {"deframer": deframer_target, "codec": codec_target, "payload": payload_target}[target]()
    import os
    import tempfile

    corpus = tempfile.mkdtemp(prefix=f"fuzz-{target}-")
    for i, s in enumerate(seeds(target)):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(s)
    crashes = tempfile.mkdtemp(prefix=f"fuzz-{target}-crashes-")
    print(f"crash inputs, if any, go to {crashes}", file=sys.stderr)
    extra = []
    if target == "payload":  # JSON and field-name tokens take the mutator past the JSON parser
        words = os.path.join(corpus, "..", f"fuzz-{target}.dict")
        with open(words, "w") as f:
            f.write("\n".join(f'"{w}"' for w in JSON_WORDS) + "\n")
        extra = [f"-dict={words}"]
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=4096", "-timeout=10", "-print_final_stats=1",
                   f"-artifact_prefix={crashes}/", *extra, corpus], one)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=(*TARGETS, "all"))
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return run_one(a.target, a.runs)
    worst = 0
    for target in TARGETS if a.target == "all" else (a.target,):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "bench.fuzz", target, "--runs", str(a.runs), "--child"],
                              capture_output=True, text=True)
        found = re.search(r"^stat::number_of_executed_units:\s*(\d+)", done.stderr, re.M)
        execs = int(found.group(1)) if found else 0
        crashed = done.returncode != 0
        print(json.dumps({"target": target, "execs": execs, "crashes": int(crashed),
                          "seconds": round(time.monotonic() - started, 1), "exit": done.returncode}))
        if crashed:
            print(done.stderr[-3000:], file=sys.stderr)
            worst = 1
    return worst


if __name__ == "__main__":
    sys.exit(main())
