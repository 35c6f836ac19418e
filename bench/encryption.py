"""What encryption at rest costs the store: a message write and an hour's backfill, sealed
against plaintext.

    python -m bench.encryption [--json out.json] [--quick]

Contenders, each on its own fresh database file in a temporary directory, with the
connection settings the server uses (WAL, synchronous=NORMAL, secure_delete):

* ``plaintext``: the store's message write and read as they were before encryption (their
  statements are copied below, verbatim, as the baseline);
* ``sealed``: ``Store.append_message`` / ``Store.messages`` now (AES-GCM under the session's
  cached data key, the row-bound associated data, the erased-key guard on insert).

The write is one per-second signal message (the live path's most frequent write, about
600 bytes of JSON); the read is the backfill of a one-hour session (3600 of them). The
contenders run in turns, interleaved, so that a noisy neighbour slows them alike; each
figure is the median of the repeats, in microseconds of this thread's CPU time. The ratio
is sealed over plaintext in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rtserver.messages import AudioSecond, SignalMessage, StoredMessage, VideoSecond
from rtserver.store import Store
from rtserver.store.sqlite import open_connection


def signal_payload(session: str, t: int) -> dict[str, Any]:
    """A per-second signal as the live path stores it (all optional parts present)."""
    return SignalMessage(
        session=session,
        t=t,
        video=VideoSecond(fps=15.0, face=0.93, box=(212, 96, 188, 188), frames=15),
        audio=AudioSecond(speech=0.71, loudness_dbfs=-23.4, pitch_hz=182.5, hops=100),
        lag_ms=312.4,
        emotion={"dominant": "neutral", "scores": {"neutral": 0.62, "happy": 0.21}},
        fluency={"syllables": 4, "rate_sps": 3.9, "pause_s": 0.21, "filled": 0},
        seq=t,
        question=1,
    ).to_wire()


class PlaintextLog:
    """The message log before encryption: ``Store.append_message`` and ``Store.messages``
    as they were (commit e9ad4c0), on a connection made the way the store makes them."""

    def __init__(self, path: Path) -> None:
        self._db = open_connection(path)
        self._lock = threading.Lock()
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS messages (session_id TEXT NOT NULL, seq INTEGER NOT"
            " NULL, kind TEXT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (session_id, seq));"
        )

    def append_message(self, message: StoredMessage) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages (session_id, seq, kind, payload) VALUES (?, ?, ?, ?)",
                (message.session, message.seq, message.kind, message.encode()),
            )

    def messages(self, session_id: str, after_seq: int = -1) -> list[StoredMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq",
                (session_id, after_seq),
            ).fetchall()
        return [
            StoredMessage(row["session_id"], row["seq"], row["kind"], json.loads(row["payload"]))
            for row in rows
        ]

    def close(self) -> None:
        self._db.close()


def _cpu_us(call: Callable[[], object], n: int) -> float:
    """Microseconds of this thread's CPU per call, over ``n`` calls."""
    start = time.thread_time()
    for _ in range(n):
        call()
    return (time.thread_time() - start) / n * 1e6


def run(quick: bool) -> dict[str, Any]:
    repeats, writes, backfill = (3, 200, 600) if quick else (9, 2000, 3600)
    figures: dict[str, dict[str, list[float]]] = {
        "write_us": {"plaintext": [], "sealed": []},
        "backfill_ms": {"plaintext": [], "sealed": []},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for name in ("plaintext", "sealed") if repeat % 2 == 0 else ("sealed", "plaintext"):
                path = Path(tmp) / f"{name}-{repeat}.sqlite3"
                log: PlaintextLog | Store
                if name == "plaintext":
                    log = PlaintextLog(path)
                    session = uuid.uuid4().hex  # as long as a real id
                else:
                    log = Store(path)
                    session = log.create_session("Ada", None, [])[0].id
                messages = [
                    StoredMessage(session, t, "signal", signal_payload(session, t))
                    for t in range(max(writes, backfill))
                ]
                pending = iter(messages[:writes])
                figures["write_us"][name].append(
                    _cpu_us(lambda: log.append_message(next(pending)), writes)  # noqa: B023
                )
                for message in messages[writes:backfill]:
                    log.append_message(message)
                # The sealed store's read connection starts with its keys cached, as the
                # server's does once a session is read (one unwrap per session, ~10 us).
                read = log.messages(session)
                assert len(read) == backfill and read[7].payload == messages[7].payload
                figures["backfill_ms"][name].append(
                    _cpu_us(lambda: log.messages(session), 3) / 1000  # noqa: B023
                )
                log.close()
    medians = {
        figure: {name: statistics.median(values) for name, values in contenders.items()}
        for figure, contenders in figures.items()
    }
    return {
        "repeats": repeats,
        "message_bytes": len(json.dumps(signal_payload("0" * 32, 1), separators=(",", ":"))),
        "write_us": medians["write_us"],
        "backfill_ms": medians["backfill_ms"],
        "backfill_messages": backfill,
        "write_ratio": medians["write_us"]["sealed"] / medians["write_us"]["plaintext"],
        "backfill_ratio": medians["backfill_ms"]["sealed"] / medians["backfill_ms"]["plaintext"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    args = parser.parse_args(argv)
    result = run(args.quick)
    write, backfill = result["write_us"], result["backfill_ms"]
    print(f"message write ({result['message_bytes']} B signal), us of CPU per write:")
    print(f"  plaintext {write['plaintext']:8.1f}   sealed {write['sealed']:8.1f}"
          f"   x{result['write_ratio']:.2f}")  # fmt: skip
    print(f"backfill of {result['backfill_messages']} messages, ms of CPU:")
    print(f"  plaintext {backfill['plaintext']:8.1f}   sealed {backfill['sealed']:8.1f}"
          f"   x{result['backfill_ratio']:.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
