"""One step of the ramp: N peers stream to the server at once, and the step's figures."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from bench.streams.costs import costs
from bench.streams.measure import (
    PartsSample,
    Usage,
    percentiles,
    series,
    session_seconds,
    total,
    tree_usage,
    usage_delta,
)

if TYPE_CHECKING:
    # Only a type here: the ramp imports this module to run its steps.
    from bench.streams.ramp import Bench

# bench mode -> the server's --analysis; "asr" is "on" with speech-to-text (--transcribe on)
MODES = {"off": "decode", "on": "full", "asr": "full"}
SUSTAINABLE_P95_MS = 1000.0


class Step:
    """Runs one step of `streams` peers against a server and computes its figures.

    With ``refusals_allowed`` (a server on its own admission limits), peers the server
    refuses with a 503 are counted by error code and left out of the signal figures; the step
    is sustainable when every admitted session is. Otherwise every peer must be admitted.
    """

    def __init__(
        self,
        bench: Bench,
        mode: str,
        streams: int,
        refusals_allowed: bool = False,
        deployment: str = "embedded",
    ) -> None:
        self.bench, self.mode, self.streams = bench, mode, streams
        self.deployment = deployment
        self.refusals_allowed = refusals_allowed
        self.active = streams  # the sessions admitted: what per-stream figures divide by

    def run(self) -> dict[str, Any]:
        bench, seconds = self.bench, self.bench.args.seconds
        settle = min(bench.args.settle, seconds / 3)
        bench.wait_idle()
        log_offsets = bench.log_offsets()
        costs_start, parts_start = bench.cost_sample(), bench.sample_parts()
        with httpx.Client(trust_env=False, timeout=30.0) as http:
            sessions = [bench.create_session(http) for _ in range(self.streams)]
        conns = bench.generators.conns
        shares = {conns[i]: sessions[i :: len(conns)] for i in range(len(conns))}
        used = [conn for conn, share in shares.items() if share]
        for conn in used:
            conn.send(
                {"cmd": "connect", "sessions": shares[conn], "base": bench.base, "key": bench.key}
            )
        connected = sum(r["connected"] for r in bench.generators.collect(used, 120.0))

        # Every peer starts sending at the same instant; CPU is measured once they settle.
        start_at = time.monotonic() + 1.0
        for conn in used:
            conn.send({"cmd": "run", "start_at": start_at, "seconds": seconds})
        time.sleep(max(0.0, start_at + settle - time.monotonic()))
        # The same instants for every figure of the window: CPU, /metrics, Redis, PostgreSQL.
        costs0, server0 = bench.cost_sample(), bench.sample_parts()
        gen0, metrics0, at0 = tree_usage(bench.generators.pids), bench.scrape(), time.monotonic()
        rss_peak = 0.0
        while (left := start_at + seconds - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            rss_peak = max(rss_peak, bench.server_rss())
        costs1, server1 = bench.cost_sample(), bench.sample_parts()
        gen1, metrics1, at1 = tree_usage(bench.generators.pids), bench.scrape(), time.monotonic()
        rss_peak = max(rss_peak, bench.server_rss())
        everyone = [r for reply in bench.generators.collect(used, seconds + 120.0) for r in reply]
        results = [r for r in everyone if not r["refused"]]
        self.active = max(1, len(results))
        step = self.signal_figures(results, connected)
        step["deployment"] = self.deployment
        step["admitted"] = len(results)
        step["refused"] = dict(Counter(r["refused"] for r in everyone if r["refused"]))
        problems = bench.log_problems(log_offsets)
        step["server_log_problems"] = {"count": len(problems), "first": problems[:10]}
        window_s, per_stream = at1 - at0, 1.0 / ((at1 - at0) * self.active)
        step["window_s"] = round(window_s, 3)
        # Live session-seconds in the window: every admitted session is live through it (they
        # join before the start and hang up after its end); the signals that reached the
        # observers inside it are the check on that.
        step["session_seconds"] = len(results) * window_s
        step["signals_in_window"] = sum(
            at0 <= arrival[1] <= at1 for r in results for arrival in r["arrivals"]
        )
        parts = parts_delta(server0, server1)
        step.update(self.server_figures(parts, rss_peak, window_s))
        step.update(self.metrics_figures(metrics0, metrics1, window_s))
        step["generator_cpu_per_stream"] = (gen1.cpu_s - gen0.cpu_s) * per_stream
        step["generator_late_p99_ms"] = max(r["late_p99_ms"] for r in everyone)
        step["breakdown"] = self.breakdown(step, metrics0, metrics1, parts, per_stream)
        pg_cpu = parts["postgresql"].cpu_s if parts and "postgresql" in parts else None
        if server1 is not None and "postgresql" in server1:
            step["postgresql_backends"] = len(server1["postgresql"])
        if costs0 is not None and costs1 is not None:
            step["costs"] = costs(costs0, costs1, step["session_seconds"], pg_cpu, bench.idle_costs)
        costs_end, parts_end = bench.cost_sample(), bench.sample_parts()
        if costs_start is not None and costs_end is not None:
            # The whole step, from before the sessions were created to after their finals:
            # with the joins, ends and finals, per session.
            whole_parts = parts_delta(parts_start, parts_end) or {}
            pg = whole_parts.get("postgresql")
            whole = costs(costs_start, costs_end, float(len(results)), pg.cpu_s if pg else None)
            step["costs_whole_step_per_session"] = whole["per_session_second"]
        p95 = step["lag_ms"]["p95"]
        admitted = len(results) if self.refusals_allowed else self.streams
        step["sustainable"] = (
            p95 is not None
            and p95 <= SUSTAINABLE_P95_MS
            and step["seconds_missing"] == 0
            and connected == admitted
        )
        step["sessions"] = step.pop("sessions")  # last: the long part of the JSON
        return step

    def signal_figures(self, results: list[dict[str, Any]], connected: int) -> dict[str, Any]:
        """Lag on the sender's clock, and missing or repeated seconds."""
        seconds = self.bench.args.seconds
        lags, server_lags, before, frames, no_video, no_audio = [], [], [], [], 0, 0
        for result in results:
            for t, at, lag_ms, video_frames, hops in result["arrivals"]:
                sent = result["last_sent"].get(str(t))
                if t < seconds and sent is not None:
                    lags.append((at - sent) * 1000.0)
                    server_lags.append(lag_ms)
                    before.append(lags[-1] - lag_ms)
                    frames.append(video_frames)
                    no_video += video_frames == 0
                    no_audio += hops == 0
        sessions = [session_seconds(r, seconds) for r in results]
        return {
            "mode": self.mode,
            "server_analysis": MODES[self.mode],
            "streams": self.streams,
            "connected": connected,
            "seconds": seconds,
            "lag_ms": percentiles(lags),
            "server_lag_ms": percentiles(server_lags),
            # Per signal, sender-clock lag less the server's own: transport, the jitter buffers,
            # decoding, and the server's clock reading the second's end a little late.
            "before_server_lag_ms": percentiles(before),
            "seconds_expected": len(results) * seconds,
            "seconds_missing": sum(len([t for t in s["missing"] if t < seconds]) for s in sessions),
            "seconds_duplicate": sum(s["duplicates"] for s in sessions),
            "contiguous": all(s["contiguous"] for s in sessions),
            "finals": sum(s["final"] for s in sessions),
            "end_reasons": dict(Counter(s["end_reason"] or "none" for s in sessions)),
            # Video frames the server decoded per second of a stream (from the signals), and
            # seconds in which a track delivered nothing: a stalled decoder, not slow analysis.
            "video_fps_decoded": float(np.mean(frames)) if frames else None,
            "seconds_without_video": no_video,
            # Decode-only analyses no audio hop, so the signals cannot tell there.
            "seconds_without_audio": no_audio if self.mode != "off" else None,
            "transcript": transcript_figures(results),
            "sessions": sessions,
        }

    def server_figures(
        self, parts: dict[str, Usage] | None, rss_peak: float, window_s: float
    ) -> dict[str, Any]:
        """CPU and memory of the server's process tree, or of every part of a deployment,
        summed and part by part (None without the pids)."""
        if parts is None:
            keys = (
                "server_cpu_cores",
                "server_cpu_per_stream",
                "server_idle_cores",
                "parts_cpu_per_stream",
                "rss_mb",
                "rss_idle_mb",
                "rss_per_stream_mb",
            )
            return dict.fromkeys(keys)
        cores = sum(u.cpu_s for u in parts.values()) / window_s
        bench = self.bench
        return {
            "server_cpu_cores": cores,
            "server_cpu_per_stream": cores / self.active,
            "server_idle_cores": bench.idle_cores,
            "parts_cpu_per_stream": {
                part: u.cpu_s / window_s / self.active for part, u in parts.items()
            },
            "parts_idle_cores": dict(bench.idle_parts),
            "rss_mb": rss_peak / 2**20,
            "rss_idle_mb": bench.idle_rss / 2**20,
            "rss_per_stream_mb": (rss_peak - bench.idle_rss) / 2**20 / self.active,
        }

    def metrics_figures(
        self, before: dict[Any, float], after: dict[Any, float], window_s: float
    ) -> dict[str, Any]:
        """Rates from /metrics over the measured window."""
        analysed = total(before, after, "rtserver_frames_analysed_total") / window_s
        crops = series(before, after, "rtserver_crops_dropped_total", "reason")
        return {
            "frames_decoded_per_s": total(before, after, "rtserver_frames_decoded_total")
            / window_s,
            "frames_analysed_per_s": analysed,
            "frames_analysed_per_stream_s": analysed / self.active,
            "crops_dropped": {reason: int(n) for reason, n in crops.items() if n},
            # The latest reading of the most loaded process's event loop lag (mean over its
            # last 2 s): what admission control compares with --max-loop-lag.
            "loop_lag_ms": max(
                (
                    v * 1000.0
                    for (m, _), v in after.items()
                    if m == "rtserver_event_loop_lag_seconds"
                ),
                default=None,
            ),
            "refused_overloaded": int(
                sum(
                    v - before.get((m, k), 0.0)
                    for (m, k), v in after.items()
                    if m == "rtserver_rejected_total" and dict(k).get("code") == "overloaded"
                )
            ),
        }

    def breakdown(
        self,
        step: dict[str, Any],
        before: dict[Any, float],
        after: dict[Any, float],
        parts: dict[str, Usage] | None,
        per_stream: float,
    ) -> dict[str, Any]:
        """The server's CPU per stream by stage (its own counters), and what is left."""
        stages = series(before, after, "rtserver_stage_cpu_seconds_total", "stage")
        paths = series(before, after, "rtserver_analysis_cpu_seconds_total", "path")
        listed = sum(stages.values()) if stages else sum(paths.values())
        tree = step["server_cpu_per_stream"]
        other = event_loop = None
        if tree is not None and parts is not None:
            other = tree - listed * per_stream
            event_loop = sum(u.main_thread_s for u in parts.values()) * per_stream
        return {
            "stages": {k: v * per_stream for k, v in sorted(stages.items())},
            "paths": {k: v * per_stream for k, v in sorted(paths.items())},
            "other": other,
            "other_is_tree_minus": "stages" if stages else "paths",
            # "other" split by thread: the processes' main threads (the event loop: RTP, DTLS,
            # asyncio, publishing) and the rest (aiortc's decoder threads, ONNX Runtime's
            # pools, analysis work outside the timed stages).
            "other_main_threads": event_loop,
            "other_rest": None if other is None or event_loop is None else other - event_loop,
        }


def parts_delta(before: PartsSample | None, after: PartsSample | None) -> dict[str, Usage] | None:
    """Each part's CPU between two readings (and RSS at the later); None without them."""
    if before is None or after is None:
        return None
    return {part: usage_delta(before.get(part, {}), usages) for part, usages in after.items()}


def transcript_figures(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The transcript messages the observers got: how many, their words, and their lag
    (the server's ``lag_ms``: the end of the utterance to its publication)."""
    heard = [item for result in results for item in result.get("transcripts", ())]
    return {
        "utterances": len(heard),
        "words": sum(words for _lag, words in heard),
        "lag_ms": percentiles([lag for lag, _words in heard]),
    }
