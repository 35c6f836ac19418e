"""The results: the printed table, where the lag and the CPU go, on against off, targets, plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.streams.step import SUSTAINABLE_P95_MS
from rtserver.perception.speech import LOOKAHEAD_HOPS

TARGET_CPU_RATIO = 1.25
TARGET_MAX_RATIO = 0.8
SPEECH_GATE_LOOKAHEAD_MS = LOOKAHEAD_HOPS * 10.0  # 10 ms hops
# At the most streams sustained with analysis: the sender-clock p95, and what the server adds
# to a signal's lag beyond the speech gate's declared lookahead (its lag_ms p95 less it).
TARGET_MAX_LOAD_P95_MS = 400.0
TARGET_SERVER_ADDED_P95_MS = 60.0
# On the server's own defaults (--limits defaults): streams it must sustain with none refused.
TARGET_DEFAULTS_STREAMS = 16
# Speech-to-text (mode "asr" against "on"): the CPU it adds per stream while the candidate
# speaks, and the transcript's lag p95 (end of an utterance to publication) at 8 streams.
TARGET_ASR_CPU_PER_SPEAKING_STREAM = 0.03
TARGET_ASR_LAG_P95_MS = 1500.0
TARGET_ASR_STREAMS = 8
# A burst's refusals must be these codes (503 with a reason), never a dropped connection.
BURST_REFUSAL_CODES = ("overloaded", "at_capacity")


@dataclass
class Target:
    name: str
    value: float | None
    target: float
    met: bool


def _num(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def step_label(s: dict[str, Any]) -> str:
    """A step's mode as the tables name it: ``off``, or ``off/2h`` on two hosts."""
    return s["mode"] if s.get("deployment", "embedded") == "embedded" else f"{s['mode']}/2h"


def step_line(s: dict[str, Any]) -> str:
    lag = s["lag_ms"]
    crops = sum(s["crops_dropped"].values())
    return (
        f"{step_label(s):>6} {s['streams']:>4}  {_num(lag['p50'], '.0f', 5)}"
        f" {_num(lag['p95'], '.0f', 5)} {_num(lag['p99'], '.0f', 5)}"
        f"  {s['seconds_missing']:>4} {s['seconds_duplicate']:>3}"
        f"  {_num(s['server_cpu_per_stream'], '.3f', 7)} {_num(s['rss_mb'], '.0f', 6)}"
        f" {_num(s['rss_per_stream_mb'], '.1f', 6)}  {_num(s['video_fps_decoded'], '.1f', 5)}"
        f" {s['frames_analysed_per_s']:>6.1f} {crops:>5}"
        f"  {s['generator_cpu_per_stream']:>6.4f} {s['generator_late_p99_ms']:>5.1f}"
        f" {_num(s.get('loop_lag_ms'), '.0f', 5)}  {'yes' if s['sustainable'] else 'NO'}"
    )


HEADER = (
    "                    signal lag (ms)   seconds   server   tree RSS MB  decoded frames crops"
    "  generator     loop\n"
    "  mode    N    p50   p95   p99  miss dup  cores/N  total  per N  fps/N anal/s  drop"
    "  cores/N late99  lag  ok"
)


def ramp_steps_only(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ramp's steps, without the burst."""
    return [step for step in steps if not step.get("burst")]


def max_sustained(steps: list[dict[str, Any]], top: int) -> tuple[int, bool]:
    """Most streams sustained, none refused (0 if none), climbing the ramp until its first
    failure, and whether that was the ramp's top (``top``: then it is only a lower bound)."""
    best = 0
    for step in ramp_steps_only(steps):
        if not step["sustainable"] or step.get("refused"):
            break
        best = step["streams"]
    return best, best >= top


def comparison(on: list[dict[str, Any]], off: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_n = {s["streams"]: s for s in off}
    rows = []
    for step in on:
        base = by_n.get(step["streams"])
        if base is None:
            continue
        a, b = step["server_cpu_per_stream"], base["server_cpu_per_stream"]
        rows.append(
            {
                "streams": step["streams"],
                "on_cpu_per_stream": a,
                "off_cpu_per_stream": b,
                "ratio": a / b if a is not None and b else None,
                "both_sustainable": step["sustainable"] and base["sustainable"],
            }
        )
    return rows


def asr_comparison(
    asr: list[dict[str, Any]], on: list[dict[str, Any]], speech_fraction: float
) -> list[dict[str, Any]]:
    """Per step both ran: the server CPU that speech-to-text adds per stream, and per
    speaking stream (divided by the share of the loop the candidate speaks), with the
    transcript's figures."""
    by_n = {s["streams"]: s for s in ramp_steps_only(on)}
    rows = []
    for step in ramp_steps_only(asr):
        base = by_n.get(step["streams"])
        a = step["server_cpu_per_stream"]
        b = base["server_cpu_per_stream"] if base else None
        added = a - b if a is not None and b is not None else None
        rows.append(
            {
                "streams": step["streams"],
                "asr_cpu_per_stream": a,
                "on_cpu_per_stream": b,
                "added_per_stream": added,
                "added_per_speaking_stream": (
                    added / speech_fraction if added is not None and speech_fraction else None
                ),
                "speech_fraction": speech_fraction,
                "both_sustainable": step["sustainable"] and bool(base and base["sustainable"]),
                **step["transcript"],
            }
        )
    return rows


def asr_targets(asr: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[Target]:
    """Speech-to-text's CPU per speaking stream (at the most streams both modes sustain)
    and its lag p95 at TARGET_ASR_STREAMS (or the most streams sustained with it)."""
    out = []
    both = [r for r in rows if r["both_sustainable"] and r["added_per_speaking_stream"] is not None]
    if both:
        row = both[-1]
        value = row["added_per_speaking_stream"]
        name = f"speech-to-text cores per speaking stream at {row['streams']} streams"
        target = TARGET_ASR_CPU_PER_SPEAKING_STREAM
        out.append(Target(name, value, target, value <= target))
    steps = [s for s in ramp_steps_only(asr) if s["sustainable"] and s["transcript"]["utterances"]]
    at = [s for s in steps if s["streams"] == TARGET_ASR_STREAMS] or steps[-1:]
    if at:
        lag = at[0]["transcript"]["lag_ms"]["p95"]
        name = f"transcript lag p95 (ms) at {at[0]['streams']} streams"
        out.append(Target(name, lag, TARGET_ASR_LAG_P95_MS, lag <= TARGET_ASR_LAG_P95_MS))
    else:
        name = "transcript lag p95 (ms): no sustained step with transcripts"
        out.append(Target(name, None, TARGET_ASR_LAG_P95_MS, False))
    return out


def targets(
    on: list[dict[str, Any]], off: list[dict[str, Any]], rows: list[dict[str, Any]], top: int
) -> list[Target]:
    """The capacity targets, from a ramp with the server's limits lifted (both modes)."""
    out = []
    both = [r for r in rows if r["both_sustainable"] and r["ratio"] is not None]
    if both:
        row = both[-1]
        name = f"analysis-on / decode-only CPU per stream at {row['streams']} streams"
        out.append(Target(name, row["ratio"], TARGET_CPU_RATIO, row["ratio"] <= TARGET_CPU_RATIO))
    else:
        name = "analysis-on / decode-only CPU per stream (no step both sustain)"
        out.append(Target(name, None, TARGET_CPU_RATIO, False))
    max_on, top_on = max_sustained(on, top)
    max_off, top_off = max_sustained(off, top)
    bounds = f"{max_on}{'+' if top_on else ''} / {max_off}{'+' if top_off else ''}"
    value = max_on / max_off if max_off else None
    out.append(
        Target(
            f"max sustainable streams analysis-on / decode-only ({bounds})",
            value,
            TARGET_MAX_RATIO,
            value is not None and value >= TARGET_MAX_RATIO,
        )
    )
    out += lag_targets(on, max_on)
    return out


def lag_targets(on: list[dict[str, Any]], max_on: int) -> list[Target]:
    """Sender-clock p95, and the server's lag beyond the gate's lookahead, at ``max_on``."""
    at_max = [s for s in ramp_steps_only(on) if s["streams"] == max_on and s["sustainable"]]
    if not at_max:
        return [
            Target("p95 signal lag (ms) at the most streams sustained (none)", None,
                   TARGET_MAX_LOAD_P95_MS, False),
            Target("server-added lag beyond the lookahead, p95 (ms) (none)", None,
                   TARGET_SERVER_ADDED_P95_MS, False),
        ]  # fmt: skip
    step = at_max[-1]
    p95 = step["lag_ms"]["p95"]
    server_p95 = step["server_lag_ms"]["p95"]
    added = None if server_p95 is None else server_p95 - SPEECH_GATE_LOOKAHEAD_MS
    return [
        Target(
            f"p95 signal lag (ms), sender clock, at {max_on} streams (the most sustained)",
            p95,
            TARGET_MAX_LOAD_P95_MS,
            p95 is not None and p95 <= TARGET_MAX_LOAD_P95_MS,
        ),
        Target(
            f"server-added lag beyond the {SPEECH_GATE_LOOKAHEAD_MS:.0f} ms lookahead, p95 (ms),"
            f" at {max_on} streams",
            added,
            TARGET_SERVER_ADDED_P95_MS,
            added is not None and added <= TARGET_SERVER_ADDED_P95_MS,
        ),
    ]


def defaults_targets(on: list[dict[str, Any]], top: int) -> list[Target]:
    """On the server's own defaults: the streams it sustains with none refused, and how a
    burst is met (the excess refused with a 503 reason; no admitted session lost)."""
    most, _ = max_sustained(on, top)
    out = [
        Target(
            "streams sustained on the server's defaults, none refused, no second missing",
            most,
            TARGET_DEFAULTS_STREAMS,
            most >= TARGET_DEFAULTS_STREAMS,
        )
    ]
    for burst in (s for s in on if s.get("burst")):
        refused = burst["refused"]
        lost = sum(n for why, n in burst["end_reasons"].items() if why != "hangup")
        clean = (
            all(code in BURST_REFUSAL_CODES for code in refused)
            and lost == 0
            and burst["seconds_missing"] == 0
        )
        out.append(
            Target(
                f"burst of {burst['streams']}: admitted {burst['admitted']}, refused {refused},"
                f" admitted sessions not ending by hangup {lost},"
                f" seconds missing {burst['seconds_missing']} (value: sessions lost)",
                lost,
                0,
                clean and burst["admitted"] > 0,
            )
        )
    return out


def breakdown_lines(steps: list[dict[str, Any]]) -> list[str]:
    """Where the server's CPU goes: one column per step, in thousandths of a core per stream."""
    if not steps:
        return []
    stages = sorted({k for s in steps for k in s["breakdown"]["stages"]})
    paths = sorted({k for s in steps for k in s["breakdown"]["paths"]})
    minus = steps[-1]["breakdown"]["other_is_tree_minus"]
    rows: list[tuple[str, str, str]] = [
        ("server tree", "", "server_cpu_per_stream"),
        *((f"  stage {k}", "stages", k) for k in stages),
        (f"  other (tree - {minus})", "", "other"),
        ("    main threads (event loop)", "", "other_main_threads"),
        ("    other threads (decode, ORT)", "", "other_rest"),
        *((f"path {k} (not added)", "paths", k) for k in paths),
    ]
    head = "".join(f"{step_label(s) + str(s['streams']):>8}" for s in steps)
    lines = [
        "where the server's CPU goes (thousandths of a core per stream, from /metrics and /proc):",
        f"{'':<34}{head}",
    ]
    for label, group, key in rows:
        cells = []
        for s in steps:
            b = s["breakdown"]
            value = b[group].get(key) if group else s.get(key, b.get(key))
            cells.append(_num(None if value is None else value * 1000, ".1f", 8))
        lines.append(f"{label:<34}{''.join(cells)}")
    return lines


def lag_lines(steps: list[dict[str, Any]]) -> list[str]:
    """Where the signal lag goes: one column per step, p50 and p95 in milliseconds."""
    if not steps:
        return []
    rows = [
        ("sender clock to observer", "lag_ms"),
        ("  before the server (network, jitter, decode)", "before_server_lag_ms"),
        ("  on the server (its lag_ms)", "server_lag_ms"),
    ]
    head = "".join(f"{step_label(s) + str(s['streams']):>8}" for s in steps)
    lines = ["where the signal lag goes (ms, p50 / p95):", f"{'':<46}{head}"]
    for label, key in rows:
        for q in ("p50", "p95"):
            cells = "".join(_num(s.get(key, {}).get(q), ".0f", 8) for s in steps)
            lines.append(f"{label + ' ' + q:<46}{cells}")
    lines.append(
        f"  with analysis, the server holds each second {SPEECH_GATE_LOOKAHEAD_MS:.0f} ms for the"
        " speech gate's lookahead (perception/speech.py), by design"
    )
    return lines


def report(result: dict[str, Any]) -> str:
    lines = [HEADER]
    lines += [step_line(s) for s in result["steps"]]
    if result["comparison"]:
        lines += ["", "   N  on cores/N  off cores/N  on/off  both sustain"]
        for row in result["comparison"]:
            lines.append(
                f"{row['streams']:>4}  {_num(row['on_cpu_per_stream'], '.4f', 10)}"
                f"  {_num(row['off_cpu_per_stream'], '.4f', 11)}  {_num(row['ratio'], '.2f', 6)}"
                f"  {'yes' if row['both_sustainable'] else 'no'}"
            )
    if result.get("asr_comparison"):
        lines += [
            "",
            "speech-to-text: asr (analysis + transcripts) against on (analysis alone)",
            "   N  asr cores/N  on cores/N  added/N  added/speaking N  utterances  words"
            "  lag p50  lag p95  lag max (ms)",
        ]
        for row in result["asr_comparison"]:
            lag = row["lag_ms"]
            lines.append(
                f"{row['streams']:>4}  {_num(row['asr_cpu_per_stream'], '.4f', 11)}"
                f"  {_num(row['on_cpu_per_stream'], '.4f', 10)}"
                f"  {_num(row['added_per_stream'], '.4f', 7)}"
                f"  {_num(row['added_per_speaking_stream'], '.4f', 16)}"
                f"  {row['utterances']:>10}  {row['words']:>5}  {_num(lag['p50'], '.0f', 7)}"
                f"  {_num(lag['p95'], '.0f', 7)}  {_num(lag['max'], '.0f', 7)}"
            )
        fraction = result["asr_comparison"][0]["speech_fraction"]
        lines.append(f"(the candidate speaks {100 * fraction:.0f} % of each loop)")
    lines.append("")
    for mode, best in result["max_sustainable"].items():
        bound = " (the ramp's top: a lower bound)" if best["ramp_top"] else ""
        lines.append(f"max sustainable streams, analysis {mode}: {best['streams']}{bound}")
    lines.append(
        f"generator CPU per stream: {result['generator_cpu_per_stream']:.4f} cores"
        f" ({result['config']['generator_processes']} processes)"
    )
    if result.get("deployments"):
        lines += ["", *deployment_lines(result["deployments"], result["steps"])]
        lines += ["", *cost_lines(result["steps"])]
    if result.get("on_paper"):
        lines += ["", *paper_lines(result["on_paper"])]
    lines += ["", *lag_lines(result["steps"])]
    lines += ["", *breakdown_lines(result["steps"])]
    if result["targets"]:
        lines += ["", "targets:"]
        for t in result["targets"]:
            value = "-" if t["value"] is None else f"{t['value']:.3g}"
            verdict = "met" if t["met"] else "MISSED"
            lines.append(f"  {t['name']}: {value} (target {t['target']:g}) {verdict}")
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def deployment_comparison(
    steps: list[dict[str, Any]], modes: list[str], top: int
) -> dict[str, Any]:
    """Per analysis mode and stream count both deployments ran: the CPU per stream of the
    embedded server and of the whole two-host deployment, and their ratio; and the most
    streams each sustained (the same criteria: p95 lag, no second missing, all connected)."""
    rows = []
    for mode in modes:
        embedded = {
            s["streams"]: s
            for s in ramp_steps_only(steps)
            if s["mode"] == mode and s["deployment"] == "embedded"
        }
        for step in ramp_steps_only(steps):
            if step["mode"] != mode or step["deployment"] != "two-hosts":
                continue
            base = embedded.get(step["streams"])
            two = step["server_cpu_per_stream"]
            one = base["server_cpu_per_stream"] if base else None
            rows.append(
                {
                    "mode": mode,
                    "streams": step["streams"],
                    "embedded_cpu_per_stream": one,
                    "two_hosts_cpu_per_stream": two,
                    "ratio": two / one if two is not None and one else None,
                    "two_hosts_parts": step.get("parts_cpu_per_stream"),
                    "both_sustainable": bool(base and base["sustainable"]) and step["sustainable"],
                }
            )
    most = {}
    for mode in modes:
        for deployment in ("embedded", "two-hosts"):
            group = [s for s in steps if s["mode"] == mode and s["deployment"] == deployment]
            if group:
                streams, at_top = max_sustained(group, top)
                most[f"{mode} {deployment}"] = {"streams": streams, "ramp_top": at_top}
    return {"rows": rows, "max_sustainable": most}


def deployment_lines(comparison: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """Embedded against two hosts: CPU per stream, whole and part by part."""
    rows = comparison["rows"]
    parts = sorted({p for r in rows for p in (r["two_hosts_parts"] or {})})
    lines = [
        "embedded (one server: SQLite, in-process bus) against two hosts (2 front ends,"
        " 2 nodes, Redis, PostgreSQL), server cores per stream:",
        f"mode     N  embedded  two-hosts  ratio  both ok  | {'  '.join(parts)}",
    ]
    for r in rows:
        cells = "  ".join(_num((r["two_hosts_parts"] or {}).get(p), ".4f", len(p)) for p in parts)
        lines.append(
            f"{r['mode']:<4} {r['streams']:>4}  {_num(r['embedded_cpu_per_stream'], '.4f', 8)}"
            f"  {_num(r['two_hosts_cpu_per_stream'], '.4f', 9)}  {_num(r['ratio'], '.2f', 5)}"
            f"  {'yes' if r['both_sustainable'] else 'no':>7}  | {cells}"
        )
    for name, best in comparison["max_sustainable"].items():
        bound = " (the ramp's top: a lower bound)" if best["ramp_top"] else ""
        lines.append(f"max sustainable streams, {name}: {best['streams']}{bound}")
    return lines


COST_ROWS = (
    ("redis ops", "redis", "ops", ".2f"),
    ("  XADD", "redis", "calls.xadd", ".2f"),
    ("  XREAD", "redis", "calls.xread", ".2f"),
    ("redis bytes in", "redis", "bytes_in", ".0f"),
    ("redis bytes out", "redis", "bytes_out", ".0f"),
    ("redis CPU (ms)", "redis", "cpu_s", ".3f"),
    ("pg commits", "postgresql", "xact_commit", ".2f"),
    ("pg rows inserted", "postgresql", "tup_inserted", ".2f"),
    ("pg rows updated", "postgresql", "tup_updated", ".2f"),
    ("pg database growth (bytes)", "postgresql", "db_bytes_grown", ".0f"),
    ("pg WAL bytes (whole server)", "postgresql", "wal_bytes_server", ".0f"),
    ("pg backends CPU (ms)", "postgresql", "backend_cpu_s", ".3f"),
)


def _cost(figures: dict[str, Any], engine: str, key: str) -> float | None:
    value: Any = figures.get(engine, {})
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return 0.0 if key.startswith("calls.") and figures.get(engine) else None
    return float(value) * (1000.0 if key.endswith("cpu_s") else 1.0)


def cost_lines(steps: list[dict[str, Any]]) -> list[str]:
    """Redis and PostgreSQL per live session-second, raw and above the idle deployment."""
    measured = [s for s in steps if s.get("costs")]
    if not measured:
        return []
    head = "".join(f"{step_label(s) + str(s['streams']):>10}{'(-idle)':>9}" for s in measured)
    lines = [
        "Redis and PostgreSQL per live session-second (raw, and less the idle deployment's"
        " rate: heartbeats, registry reads, call polls):",
        f"{'':<30}{head}",
    ]
    for name, engine, key, spec in COST_ROWS:
        cells = ""
        for s in measured:
            raw = _cost(s["costs"]["per_session_second"], engine, key)
            above = _cost(s["costs"].get("per_session_second_above_idle", {}), engine, key)
            cells += f"{_num(raw, spec, 10)}{_num(above, spec, 9)}"
        lines.append(f"{name:<30}{cells}")
    seconds = "".join(f"{s['costs']['session_seconds']:>10.0f}{'':>9}" for s in measured)
    signals = "".join(f"{s['signals_in_window']:>10}{'':>9}" for s in measured)
    lines.append(f"{'live session-seconds':<30}{seconds}")
    lines.append(f"{'  signals observed in them':<30}{signals}")
    return lines


def paper_lines(paper: dict[str, Any]) -> list[str]:
    src = paper["from_step"]
    lines = [
        f"on paper (from {src['mode']}/2h at {src['streams']} streams; hosts of a front end"
        f" and a node with {paper['sessions_per_node']} sessions):",
        f"  Redis per session-second: {paper['redis_ops_per_session_second']:.2f} ops,"
        f" {paper['redis_bytes_in_per_session_second']:.0f} B in,"
        f" {paper['redis_bytes_out_per_session_second']:.0f} B out",
        f"  Redis fixed: {paper['redis_idle_ops_per_host_s']:.1f} ops/s per host, and"
        f" {paper['redis_hgetall_per_front_per_node_s']:.2f} HGETALL/s per front end per node",
        f"  PostgreSQL: {paper['pg_commits_per_session_second']:.2f} commits per session-second,"
        f" {paper['pg_idle_commits_per_host_s']:.1f}/s per idle host,"
        f" {paper['pg_backends_per_host']:.0f} backends per host",
    ]
    capacity = paper["capacity"]
    if capacity:
        lines.append(
            f"  measured: redis-server {capacity['xadd_ops_s']:.0f} XADD/s"
            f" ({capacity['xadd_pipelined_ops_s']:.0f} pipelined), PostgreSQL"
            f" {capacity['pg_insert_commits_s']:.0f} insert commits/s,"
            f" max_connections {capacity['pg_max_connections']};"
            f" planned at {100 * paper['usable_share']:.0f} %"
        )
        for name, nodes in paper["nodes_by_limit"].items():
            lines.append(f"  nodes one primary serves by {name}: {nodes}")
        lines.append(f"  fails first as nodes are added: {paper['fails_first']}")
        split = paper["redis_ops_split_at_limit"]
        lines.append(
            f"  Redis at {split['nodes']} nodes: {split['sessions']:.0f} ops/s for sessions,"
            f" {split['fixed_per_host']:.0f} for heartbeats and polls,"
            f" {split['registry_reads']:.0f} for the front ends' registry reads"
        )
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lag_ax, cpu_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = {"on": "tab:red", "off": "tab:blue", "asr": "tab:green"}
    # One line per mode and deployment ("off", "off/2h"): the colour says the mode, the
    # marker the deployment (o: embedded, s: two hosts).
    for name in dict.fromkeys(step_label(s) for s in result["steps"]):
        steps = [
            s for s in result["steps"] if step_label(s) == name and s["lag_ms"]["p50"] is not None
        ]
        if not steps:
            continue
        mode, marker = steps[0]["mode"], "o" if name == steps[0]["mode"] else "s"
        n = [s["streams"] for s in steps]
        for q, style in (("p50", ":"), ("p95", "-"), ("p99", "--")):
            lag_ax.plot(
                n,
                [s["lag_ms"][q] for s in steps],
                style,
                marker=marker,
                color=colours[mode],
                label=f"{name} {q}",
            )
        cpu = [s["server_cpu_per_stream"] for s in steps]
        if all(c is not None for c in cpu):
            cpu_ax.plot(n, cpu, "-" + marker, color=colours[mode], label=f"server, {name}")
        cpu_ax.plot(
            n,
            [s["generator_cpu_per_stream"] for s in steps],
            ":x",
            color=colours[mode],
            label=f"generator ({name} run)",
        )
        bad = [s for s in steps if not s["sustainable"]]
        lag_ax.plot(
            [s["streams"] for s in bad],
            [s["lag_ms"]["p95"] for s in bad],
            "x",
            color="black",
            markersize=12,
        )
    lag_ax.axhline(SUSTAINABLE_P95_MS, color="grey", lw=0.8, label="sustainable p95 (1 s)")
    lag_ax.axhline(
        TARGET_MAX_LOAD_P95_MS, color="grey", lw=0.8, ls="--", label="p95 target at the most"
    )
    lag_ax.set(
        xlabel="concurrent streams",
        ylabel="signal lag, sender clock (ms)",
        yscale="log",
        title="signal lag (x: not sustainable)",
    )
    cpu_ax.set(
        xlabel="concurrent streams",
        ylabel="CPU cores per stream",
        title="CPU per stream (server process tree)",
    )
    cpu_ax.set_ylim(bottom=0)
    for ax in (lag_ax, cpu_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
