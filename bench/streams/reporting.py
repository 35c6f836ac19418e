"""The results: the printed table, where the lag and the CPU go, on against off, targets, plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.streams.step import SUSTAINABLE_P95_MS
from rtserver.scoring.speech import LOOKAHEAD_HOPS

TARGET_CPU_RATIO = 1.25
TARGET_MAX_RATIO = 0.8
TARGET_HALF_LOAD_P95_MS = 250.0
SPEECH_GATE_LOOKAHEAD_MS = LOOKAHEAD_HOPS * 10.0  # 10 ms hops


@dataclass
class Target:
    name: str
    value: float | None
    target: float
    met: bool


def _num(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def step_line(s: dict[str, Any]) -> str:
    lag = s["lag_ms"]
    crops = sum(s["crops_dropped"].values())
    return (
        f"{s['mode']:>3} {s['streams']:>4}  {_num(lag['p50'], '.0f', 5)}"
        f" {_num(lag['p95'], '.0f', 5)} {_num(lag['p99'], '.0f', 5)}"
        f"  {s['seconds_missing']:>4} {s['seconds_duplicate']:>3}"
        f"  {_num(s['server_cpu_per_stream'], '.3f', 7)} {_num(s['rss_mb'], '.0f', 6)}"
        f" {_num(s['rss_per_stream_mb'], '.1f', 6)}  {_num(s['video_fps_decoded'], '.1f', 5)}"
        f" {s['frames_analysed_per_s']:>6.1f} {crops:>5}"
        f"  {s['generator_cpu_per_stream']:>6.4f} {s['generator_late_p99_ms']:>5.1f}"
        f" {_num(s.get('loop_lag_ms'), '.0f', 5)}  {'yes' if s['sustainable'] else 'NO'}"
    )


HEADER = (
    "                 signal lag (ms)   seconds   server   tree RSS MB  decoded frames crops"
    "  generator     loop\n"
    "mode   N    p50   p95   p99  miss dup  cores/N  total  per N  fps/N anal/s  drop"
    "  cores/N late99  lag  ok"
)


def max_sustained(steps: list[dict[str, Any]], ramp: Sequence[int]) -> tuple[int, bool]:
    """Most streams sustained (0 if none) and whether that was the ramp's top (a lower bound)."""
    best = 0
    for step in steps:
        if not step["sustainable"]:
            break
        best = step["streams"]
    return best, best == max(ramp)


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


def targets(
    on: list[dict[str, Any]], off: list[dict[str, Any]], rows: list[dict[str, Any]], ramp: list[int]
) -> list[Target]:
    out = []
    both = [r for r in rows if r["both_sustainable"] and r["ratio"] is not None]
    if both:
        row = both[-1]
        name = f"analysis-on / decode-only CPU per stream at {row['streams']} streams"
        out.append(Target(name, row["ratio"], TARGET_CPU_RATIO, row["ratio"] <= TARGET_CPU_RATIO))
    else:
        out.append(
            Target(
                "analysis-on / decode-only CPU per stream (no step both sustain)",
                None,
                TARGET_CPU_RATIO,
                False,
            )
        )
    max_on, top_on = max_sustained(on, ramp)
    max_off, top_off = max_sustained(off, ramp)
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
    half = [s for s in on if s["sustainable"] and s["streams"] <= max_on / 2]
    if not half and max_on:
        half = [s for s in on if s["streams"] == min(ramp)]
    if half:
        step = half[-1]
        p95 = step["lag_ms"]["p95"]
        name = f"p95 signal lag (ms) at {step['streams']} streams, half of {max_on} (analysis on)"
        out.append(Target(name, p95, TARGET_HALF_LOAD_P95_MS, p95 <= TARGET_HALF_LOAD_P95_MS))
    else:
        out.append(
            Target(
                "p95 signal lag (ms) at half the maximum analysis-on load (none)",
                None,
                TARGET_HALF_LOAD_P95_MS,
                False,
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
    head = "".join(f"{s['mode'] + str(s['streams']):>8}" for s in steps)
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
    head = "".join(f"{s['mode'] + str(s['streams']):>8}" for s in steps)
    lines = ["where the signal lag goes (ms, p50 / p95):", f"{'':<46}{head}"]
    for label, key in rows:
        for q in ("p50", "p95"):
            cells = "".join(_num(s.get(key, {}).get(q), ".0f", 8) for s in steps)
            lines.append(f"{label + ' ' + q:<46}{cells}")
    lines.append(
        f"  with analysis, the server holds each second {SPEECH_GATE_LOOKAHEAD_MS:.0f} ms for the"
        " speech gate's lookahead (scoring/speech.py), by design"
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
    lines.append("")
    for mode, best in result["max_sustainable"].items():
        bound = " (the ramp's top: a lower bound)" if best["ramp_top"] else ""
        lines.append(f"max sustainable streams, analysis {mode}: {best['streams']}{bound}")
    lines.append(
        f"generator CPU per stream: {result['generator_cpu_per_stream']:.4f} cores"
        f" ({result['config']['generator_processes']} processes)"
    )
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


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lag_ax, cpu_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = {"on": "tab:red", "off": "tab:blue"}
    for mode in ("on", "off"):
        steps = [s for s in result["steps"] if s["mode"] == mode and s["lag_ms"]["p50"] is not None]
        if not steps:
            continue
        n = [s["streams"] for s in steps]
        for q, style in (("p50", ":"), ("p95", "-"), ("p99", "--")):
            lag_ax.plot(
                n,
                [s["lag_ms"][q] for s in steps],
                style,
                marker="o",
                color=colours[mode],
                label=f"{mode} {q}",
            )
        cpu = [s["server_cpu_per_stream"] for s in steps]
        if all(c is not None for c in cpu):
            cpu_ax.plot(n, cpu, "-o", color=colours[mode], label=f"server, analysis {mode}")
        cpu_ax.plot(
            n,
            [s["generator_cpu_per_stream"] for s in steps],
            ":x",
            color=colours[mode],
            label=f"generator ({mode} run)",
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
        TARGET_HALF_LOAD_P95_MS, color="grey", lw=0.8, ls="--", label="p95 target at half load"
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
