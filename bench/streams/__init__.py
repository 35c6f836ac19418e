"""The concurrent-streams bench, ``python -m bench.streams``: cli.py's docstring is its manual.

Its modules, in the order the media flows: media (the face video and speech, encoded once and
replayed), generator (the processes of peers that send it, each with its observer), step (one
step of N streams and its figures, taken with measure: /proc and /metrics), ramp (a server per
mode, climbed step by step), reporting (the table, the targets, the plot) and cli (the flags
and main). Every name the single-file bench had is re-exported here.
"""

from bench.streams.cli import ROOT, main, parse_args, server_has_workers
from bench.streams.generator import (
    EXTRA_MEDIA_S,
    FINAL_TIMEOUT_S,
    ClientPeer,
    Generators,
    generator_main,
)
from bench.streams.measure import (
    Usage,
    parse_metrics,
    percentiles,
    process_tree,
    series,
    session_seconds,
    total,
    tree_usage,
)
from bench.streams.media import (
    AUDIO_PACKET,
    AUDIO_RATE_HZ,
    KEYFRAME_INTERVAL_S,
    SCRIPT,
    TESTS,
    EncodedMedia,
    EncodedTrack,
    ReplayTrack,
    SendClock,
    encode_media,
)
from bench.streams.ramp import Bench
from bench.streams.reporting import (
    HEADER,
    SPEECH_GATE_LOOKAHEAD_MS,
    TARGET_CPU_RATIO,
    TARGET_DEFAULTS_STREAMS,
    TARGET_MAX_LOAD_P95_MS,
    TARGET_MAX_RATIO,
    TARGET_SERVER_ADDED_P95_MS,
    Target,
    breakdown_lines,
    comparison,
    defaults_targets,
    lag_lines,
    max_sustained,
    plot,
    report,
    step_line,
    targets,
)
from bench.streams.step import MODES, SUSTAINABLE_P95_MS, Step

__all__ = [
    "AUDIO_PACKET",
    "AUDIO_RATE_HZ",
    "EXTRA_MEDIA_S",
    "FINAL_TIMEOUT_S",
    "HEADER",
    "KEYFRAME_INTERVAL_S",
    "MODES",
    "ROOT",
    "SCRIPT",
    "SPEECH_GATE_LOOKAHEAD_MS",
    "SUSTAINABLE_P95_MS",
    "TARGET_CPU_RATIO",
    "TARGET_DEFAULTS_STREAMS",
    "TARGET_MAX_LOAD_P95_MS",
    "TARGET_MAX_RATIO",
    "TARGET_SERVER_ADDED_P95_MS",
    "TESTS",
    "Bench",
    "ClientPeer",
    "EncodedMedia",
    "EncodedTrack",
    "Generators",
    "ReplayTrack",
    "SendClock",
    "Step",
    "Target",
    "Usage",
    "breakdown_lines",
    "comparison",
    "defaults_targets",
    "encode_media",
    "generator_main",
    "lag_lines",
    "main",
    "max_sustained",
    "parse_args",
    "parse_metrics",
    "percentiles",
    "plot",
    "process_tree",
    "report",
    "series",
    "server_has_workers",
    "session_seconds",
    "step_line",
    "targets",
    "total",
    "tree_usage",
]
