"""The server's one typed configuration object.

Precedence, highest first: CLI flags, environment variables (``RTSERVER_*``), a TOML file
(``--config`` / ``RTSERVER_CONFIG``), then the defaults below. No other module reads
``os.environ``: everything a module needs arrives through :class:`Config`.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "RTSERVER_"
# The default session ceiling per core. Decode-only costs 0.047 cores per 640x480 stream on
# a 2-core x86 machine, so no core holds more than ~20 streams even without analysis.
SESSIONS_PER_CORE = 16


@dataclass(frozen=True)
class Config:
    """Everything an operator can set. Units are in the field names or comments."""

    host: str = "127.0.0.1"
    port: int = 8080
    # Holds SQLite, the generated API key and the models.
    data_dir: Path = Path("./rtserver-data")
    # HR API key; generated on first start and stored in data_dir when empty. It is the
    # bootstrap admin token: replace it with user accounts and API tokens (accounts/).
    api_key: str = ""
    # Who must sign in with a second factor (TOTP): "admins" (always required for them) or
    # "all" users. Single users can be required to as well (rtserver users add --totp).
    totp_required: str = "admins"
    # Host addresses ICE may advertise; empty means every interface (aioice's default).
    ice_addresses: tuple[str, ...] = ()
    # UDP ports ICE host candidates bind to, "FIRST-LAST" (e.g. "40000-40999"), so a firewall
    # or a container's port mapping can open exactly them; empty: any port the kernel picks.
    # Each peer connection (a candidate, an observer) holds one while it lasts; with every
    # port taken a new one gets 503 "no_udp_port" (media/ice.py).
    udp_ports: str = ""
    # STUN/TURN URLs (stun:, turn:, turns:) for the pages and the server's own peers; empty
    # keeps every connection on host candidates, off the public internet.
    ice_servers: tuple[str, ...] = ()
    # The secret shared with the TURN server (coturn's static-auth-secret): every connection
    # gets a TURN credential made from it (media/turn.py). Never logged, nor in repr.
    turn_secret: str = field(default="", repr=False)
    # How long a TURN credential stays valid (s). The pages fetch one per connection; it must
    # outlast the longest interview, as the TURN server may check it again on refreshes.
    turn_ttl_s: float = 4 * 3600.0
    # The pages' iceTransportPolicy: "all", or "relay" to send all media through TURN (hides
    # the candidate's addresses from the server; costs the TURN server's bandwidth).
    ice_transport_policy: str = "all"
    # Public base URL used to build candidate and observer links; empty derives it.
    public_url: str = ""
    # TLS: a PEM certificate (or chain, leaf first) and its unencrypted PEM private key; with
    # both, the server speaks HTTPS and WSS itself, TLS 1.2 or later with forward-secret AEAD
    # ciphers only, and sends HSTS (rtserver/transport.py). Browsers give a page the camera
    # only on a secure origin, so production needs this or a TLS-terminating proxy.
    tls_cert: str = ""
    tls_key: str = ""
    # Reverse proxies (addresses, CIDR networks, or "*" for any peer) whose X-Forwarded-For
    # and X-Forwarded-Proto are believed: they name the client address the audit log and the
    # rate limits use, and https behind a TLS-terminating proxy. Empty believes no one: the
    # socket's peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    # Per-client rate limits (rtserver/api/rate_limits.py): requests a minute from one client
    # address (an IPv6 client by its /64), each also the burst allowed at once; past one,
    # 429 "rate_limited" with Retry-After. 0 turns a limit off. Session creation and offers
    # allow a bench's 50 sessions created and joined at once, with room to spare.
    rate_login_per_min: float = 20.0
    rate_sessions_per_min: float = 120.0
    rate_offers_per_min: float = 120.0
    rate_signals_per_min: float = 120.0
    # Client addresses each rate limit remembers (about 270 bytes each); past it, the one
    # seen least recently is forgotten and starts again with a full allowance.
    rate_limit_clients: int = 10_000
    # Receivers of the ATS webhooks (ats/webhooks.py): every completed interview and every
    # decision goes to each, signed with webhook_secret (HMAC-SHA256); jobs may add their
    # own receivers. Never logged, nor in repr.
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str = field(default="", repr=False)
    # Live sessions above this are refused with 503 "at_capacity" and Retry-After; 0 means
    # SESSIONS_PER_CORE per core. A ceiling, not the limit that binds: the CPU budget below
    # refuses first on every machine measured (a 2-core machine holds about 17 analysed
    # 640x480 streams).
    max_sessions: int = 0
    # Share (0-1) of the machine's cores that live sessions may keep busy: a new session
    # that would take the machine past it, by the measured cost per session (a prior before
    # any is measured), gets 503 "overloaded" (rtserver/server/cpu_budget.py). 0 turns it off.
    max_cpu: float = 0.9
    # What one session costs before any has been measured (cores); 0 takes the figure
    # measured for the analysis mode (rtserver/server/cpu_budget.py). A burst from idle is admitted
    # on this alone, so set it for hardware far from a 2-core x86 machine.
    session_cpu: float = 0.0
    # A process whose event loop runs this late (mean over 2 s, seconds), or whose signals go
    # out this late (mean over 3 s, seconds analysis held back), takes no new session:
    # 503 "overloaded" with Retry-After. 0 turns a check off. With analysis, signals are
    # about 0.3 s late by design (the speech gate's lookahead); decode-only, under 0.1 s.
    max_loop_lag_s: float = 0.15
    max_signal_lag_s: float = 0.75
    # Video frames analysed per second, chosen by media timestamp (fps).
    analysis_fps: float = 10.0
    # Face detector: "blazeface" (a DNN, the default) or "haar" (OpenCV's cascade, the
    # fallback that needs no model files).
    detector: str = "blazeface"
    # Full face detections per second (by media time); frames in between reuse the tracked
    # box, and a crop that stops matching the face triggers a detection at once.
    detect_fps: float = 5.0
    # Haar detector input width (pixels); the Y plane is area-downscaled to this.
    detect_width: int = 160
    # "on" runs the emotion model on face crops; "off" runs none, leaves `emotion` null and
    # keeps it out of the score (the EU AI Act, Art. 5(1)(f), bans emotion inference in
    # recruitment in the EU).
    emotion: str = "on"
    # "on" transcribes what the candidate says (rtserver/inference/asr_queue.py): live
    # transcript messages, the transcript in the final and the report. "off" loads no
    # speech-to-text model and sends none.
    transcribe: str = "on"
    # Speech-to-text never drops an utterance; a process whose queue holds more than this
    # many seconds of speech takes no new session: 503 "overloaded". 0 turns the check off.
    max_asr_backlog_s: float = 30.0
    # How long the final waits, after the media ends, for the session's last utterances to
    # be transcribed (seconds); past it the final names the spans it lacks.
    transcript_wait_s: float = 20.0
    # Where converted models live; empty means data_dir/models. Fetched on first start.
    models_dir: str = ""
    # The speech-to-text model: a CTranslate2 Whisper model directory (faster-whisper's
    # format). Empty means the pinned Whisper tiny.en fetched into the models directory;
    # a directory named here is never fetched nor downloaded.
    asr_model: str = ""
    # Where it runs: "auto" (CUDA float16 when CTranslate2 sees a CUDA device, else CPU
    # int8), "cpu" or "cuda" (refused at start when there is no CUDA device).
    asr_device: str = "auto"
    # Utterances transcribed at once on a process (each a model replica on one thread). The
    # server already runs a worker process per core, each with its own queue: on 2 cores,
    # 2 per process made 8 streams' transcripts later (lag p95 2.85 s against 2.50) and
    # their signals too (p95 611 ms against 333). More helps where processes are fewer
    # than cores (--workers 1, or a GPU that does the rest).
    asr_workers: int = 1
    # Inference backends to try, best first; the first that works here is used. torch-cuda
    # (our ONNX interpreter on torch) is left out: on an H200 it cost more server CPU per
    # stream than ONNX Runtime on the CPU (0.145 against 0.110 cores) and held fewer streams
    # (32 against 48+), since these small models are dominated by per-op dispatch in Python.
    engine: tuple[str, ...] = ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")
    # Where face crops are cut for the models: "cpu", "cuda" or "auto" (CUDA when present).
    # The CPU by default: a live batch holds a few crops, and there the Cython kernel wins
    # (on an H200 machine, 0.09 ms for one crop against 1.2 ms through CUDA's staging and
    # copies; CUDA pays off from about 64 crops a batch, 2.5x faster at 1024).
    crop_device: str = "cpu"
    # Faces per model batch, and how long the oldest crop may wait for a batch (seconds).
    max_batch: int = 64
    batch_wait_s: float = 0.004
    # Crops the cross-session batcher holds; past this the oldest are dropped and counted.
    batch_queue: int = 256
    # A live session with no media for this long is ended (seconds).
    media_timeout_s: float = 10.0
    # After the candidate's connection drops (ICE consent lost), the session stays live this
    # long for the candidate to reconnect with the same join token (seconds); then it ends
    # with "connection_lost".
    reconnect_grace_s: float = 20.0
    # A live interview is ended (end_reason "max_length") this long after it started
    # (seconds), whatever the candidate does.
    max_interview_s: float = 3600.0
    # Observers watching one session's relayed video and audio at once; more are refused.
    max_watchers: int = 4
    # Days the audit log keeps a row: six months at least (EU AI Act Art. 19 and 26(6)),
    # so 183 is the minimum. The server prunes older rows hourly; the chain stays verifiable
    # from the last pruned row (rtserver/store/audit_log.py).
    audit_retention_days: int = 183
    # How long a second may wait for late analysis before it is published anyway (seconds).
    max_signal_wait_s: float = 1.5
    # Worker threads for analysis; kernels release the GIL, so threads run in parallel.
    analysis_threads: int = 2
    # "full" analyses media; "decode" only decodes it (a baseline for benchmarks).
    analysis: str = "full"
    # Worker processes that run the live sessions (peers, media paths, models); 0 means one
    # per core (os.cpu_count()). 1 runs everything in the server's own process.
    workers: int = 0
    log_level: str = "info"
    # -- retention and candidate rights (store/retention.py) --
    # Days a candidate's data is kept after the latest decision on them (after the interview
    # ended when none was made; after the link expired when it was never used), for
    # sessions whose job sets no retention_days of its own, and sessions without a job.
    retention_days: int = 180
    # How often the server erases the sessions that are due (s); 0 turns the sweeper off
    # (then run `rtserver retention sweep`, e.g. from cron: nothing else erases them).
    retention_sweep_s: float = 3600.0
    # Whom a candidate asks for an alternative selection process or an accommodation (an
    # email address, a phone number or a URL), shown in the consent notice (NYC Local Law
    # 144); empty: the notice says to ask the person who sent the invitation.
    alternative_process_contact: str = ""
    # -- encryption at rest (rtserver/store/encryption.py) --
    # The master key, base64 of 32 bytes (RTSERVER_MASTER_KEY); during a rotation, several
    # comma-separated, the current first. Empty: the keys are in master_key_file. Never
    # logged, nor in repr.
    master_key: str = field(default="", repr=False)
    # The keyring file; empty means data_dir/master.keys, made (0600) on first start. Keep it
    # out of the data directory's backups: a backup that holds its key is not encrypted.
    master_key_file: str = ""
    # -- many hosts (rtserver/cluster/, README "Many hosts") --
    # Where durable state lives: empty for the embedded SQLite file in data_dir, or a
    # PostgreSQL URL (postgresql://user:password@host:5432/db) shared by every host.
    store: str = field(default="", repr=False)
    # How messages reach observers: empty for the in-process bus (one machine), or a Redis
    # URL (redis://:password@host:6379/0, rediss:// for TLS), which also holds the node
    # registry and carries calls from front ends to media nodes.
    bus: str = field(default="", repr=False)
    # This media node's id in the registry and on the sessions it runs; empty: the host
    # name. Keep it stable across restarts: a restarting node ends its own sessions only.
    node_id: str = ""
    # A media node that has not heartbeaten for this long is lost: a front end ends its
    # sessions with end_reason "node_lost" (s). Nodes heartbeat every node_ttl_s / 5.
    node_ttl_s: float = 5.0
    # Signs every call between front ends and media nodes (HMAC-SHA256), on top of Redis's
    # own password: whoever can write to Redis still cannot start, end or watch a session
    # (RTSERVER_CLUSTER_SECRET; the same on every host). Never logged, nor in repr.
    cluster_secret: str = field(default="", repr=False)
    # What this process is: "all" (one machine: HTTP, observers and the live sessions),
    # "front" (HTTP and observers; sessions placed on media nodes through ``bus``) or
    # "node" (a media node: runs the sessions front ends place on it; HTTP only for
    # /healthz and /metrics). front and node need ``bus``.
    role: str = "all"

    @property
    def node(self) -> str:
        """This process's node id: ``node_id``, or the host name."""
        return self.node_id or socket.gethostname()

    @property
    def clustered(self) -> bool:
        """Whether sessions run on media nodes found through Redis (``bus`` is set)."""
        return bool(self.bus)

    @property
    def session_limit(self) -> int:
        """Live sessions allowed at once: ``max_sessions``, or SESSIONS_PER_CORE per core."""
        return self.max_sessions or SESSIONS_PER_CORE * (os.cpu_count() or 1)

    @property
    def url(self) -> str:
        """Where the server is reached, for links made outside a request: ``public_url``, or
        https (with TLS) or http, the host and the port it listens on."""
        scheme = "https" if self.tls_cert else "http"
        return self.public_url.rstrip("/") or f"{scheme}://{self.host}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "rtserver.sqlite3"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "api_key"

    @property
    def master_key_path(self) -> Path:
        return Path(self.master_key_file) if self.master_key_file else self.data_dir / "master.keys"

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else self.data_dir / "models"

    @property
    def asr_model_path(self) -> Path:
        """The speech model's directory: ``asr_model``, or the fetched one."""
        if self.asr_model:
            return Path(self.asr_model)
        from rtserver.models.fetch import MODELS

        return self.models_path / MODELS["asr"].file


MAX_INTERVIEW_LIMIT_S = 24 * 3600.0  # the longest --max-interview accepted (s)


class ConfigError(ValueError):
    """A configuration value could not be understood."""


_TUPLE_FIELDS = {"ice_addresses", "ice_servers", "engine", "webhook_urls", "trusted_proxies"}
RATE_LIMIT_FIELDS = (
    "rate_login_per_min",
    "rate_sessions_per_min",
    "rate_offers_per_min",
    "rate_signals_per_min",
)


def _coerce(name: str, raw: Any) -> Any:
    """Converts a TOML, env or CLI value to the type the field declares."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    if name not in fields:
        raise ConfigError(f"unknown setting {name!r}")
    default = getattr(Config(), name)
    try:
        if name in _TUPLE_FIELDS:
            if isinstance(raw, str):
                return tuple(part.strip() for part in raw.split(",") if part.strip())
            return tuple(str(part) for part in raw)
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value for {name}: {raw!r}") from exc


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        key = ENV_PREFIX + f.name.upper()
        if key in environ:
            values[f.name] = _coerce(f.name, environ[key])
    return values


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    section = data.get("server", data)
    return {name: _coerce(name, value) for name, value in section.items()}


def _validate(config: Config) -> Config:
    if config.analysis not in {"full", "decode"}:
        raise ConfigError("analysis must be 'full' or 'decode'")
    if not 0.5 <= config.analysis_fps <= 60:
        raise ConfigError("analysis_fps must be between 0.5 and 60")
    if config.max_sessions < 0:
        raise ConfigError("max_sessions must be 0 (16 per core) or more")
    if not 0 <= config.max_cpu <= 1:
        raise ConfigError("max_cpu must be between 0 (off) and 1 (every core)")
    if not 0 <= config.session_cpu <= 64:
        raise ConfigError("session_cpu must be between 0 (the measured default) and 64 cores")
    if not 0 <= config.max_loop_lag_s <= 60:
        raise ConfigError("max_loop_lag_s must be between 0 (off) and 60 seconds")
    if not 0 <= config.max_signal_lag_s <= 60:
        raise ConfigError("max_signal_lag_s must be between 0 (off) and 60 seconds")
    if not 0 <= config.reconnect_grace_s <= 600:
        raise ConfigError("reconnect_grace_s must be between 0 and 600 seconds")
    if not 1 <= config.max_interview_s <= MAX_INTERVIEW_LIMIT_S:
        raise ConfigError(
            f"max_interview_s must be between 1 and {MAX_INTERVIEW_LIMIT_S:.0f} seconds"
        )
    if config.store and not config.store.startswith(("postgresql://", "postgres://")):
        raise ConfigError("store must be empty (SQLite in data_dir) or a postgresql:// URL")
    if config.bus and not config.bus.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("bus must be empty (in-process) or a redis:// or rediss:// URL")
    if config.role not in {"all", "front", "node"}:
        raise ConfigError("role must be 'all', 'front' or 'node'")
    if config.role == "all" and config.bus:
        raise ConfigError("with a bus, say which this process is: role 'front' or 'node'")
    if config.role != "all" and not config.bus:
        raise ConfigError(f"role {config.role!r} needs a bus (a redis:// URL)")
    if config.role != "all" and config.workers > 1:
        raise ConfigError(
            "workers is for role 'all': a media node is one process; run one per core, each"
            " with its own node_id"
        )
    if not 1 <= config.node_ttl_s <= 300:
        raise ConfigError("node_ttl_s must be between 1 and 300 seconds")
    if not 0 <= config.workers <= 256:
        raise ConfigError("workers must be between 0 (one per core) and 256")
    if config.max_watchers < 0:
        raise ConfigError("max_watchers must be 0 or more")
    from rtserver.store.audit_log import MIN_RETENTION_DAYS

    if config.audit_retention_days < MIN_RETENTION_DAYS:
        raise ConfigError(f"audit_retention_days must be {MIN_RETENTION_DAYS} (six months) or more")
    if config.crop_device not in {"cpu", "cuda", "auto"}:
        raise ConfigError("crop_device must be 'cpu', 'cuda' or 'auto'")
    if config.max_batch < 1:
        raise ConfigError("max_batch must be at least 1")
    if config.detect_width < 32:
        raise ConfigError("detect_width must be at least 32 pixels")
    if config.detector not in {"blazeface", "haar"}:
        raise ConfigError("detector must be 'blazeface' or 'haar'")
    if not 0.2 <= config.detect_fps <= 60:
        raise ConfigError("detect_fps must be between 0.2 and 60")
    if config.totp_required not in {"admins", "all"}:
        raise ConfigError("totp_required must be 'admins' or 'all'")
    if config.emotion not in {"on", "off"}:
        raise ConfigError("emotion must be 'on' or 'off'")
    if config.asr_device not in {"auto", "cpu", "cuda"}:
        raise ConfigError("asr_device must be 'auto', 'cpu' or 'cuda'")
    if config.transcribe not in {"on", "off"}:
        raise ConfigError("transcribe must be 'on' or 'off'")
    for url in config.webhook_urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook URL {url!r} must start with http:// or https://")
    if config.webhook_urls and len(config.webhook_secret) < 16:
        raise ConfigError("webhook_urls need a webhook_secret of 16 characters or more")
    if not 1 <= config.asr_workers <= 64:
        raise ConfigError("asr_workers must be between 1 and 64")
    if not 0 <= config.max_asr_backlog_s <= 3600:
        raise ConfigError("max_asr_backlog_s must be between 0 (off) and 3600 seconds")
    if not 0 <= config.transcript_wait_s <= 600:
        raise ConfigError("transcript_wait_s must be between 0 and 600 seconds")
    for part in config.master_key.split(",") if config.master_key else ():
        try:
            if len(base64.b64decode(part.strip(), validate=True)) != 32:
                raise ValueError
        except ValueError:
            raise ConfigError("master_key must be base64 of 32 bytes (comma-separated)") from None
    if not 0 <= config.batch_wait_s <= 1:
        raise ConfigError("batch_wait_s must be between 0 and 1 second")
    from rtserver.scoring.jobs import MAX_RETENTION_DAYS

    if not 1 <= config.retention_days <= MAX_RETENTION_DAYS:
        raise ConfigError(f"retention_days must be between 1 and {MAX_RETENTION_DAYS}")
    if config.retention_sweep_s != 0 and not 1 <= config.retention_sweep_s <= 86400:
        raise ConfigError("retention_sweep_s must be 0 (off) or between 1 and 86400 seconds")
    if len(config.alternative_process_contact) > 500:
        raise ConfigError("alternative_process_contact must be at most 500 characters")
    if config.batch_queue < config.max_batch:
        raise ConfigError("batch_queue must hold at least max_batch crops")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("tls_cert and tls_key go together: give both, or neither")
    for proxy in config.trusted_proxies:
        _check_trusted_proxy(proxy)
    for name in RATE_LIMIT_FIELDS:
        if not 0 <= getattr(config, name) <= 1_000_000:
            raise ConfigError(f"{name} must be between 0 (off) and 1000000 a minute")
    if not 1 <= config.rate_limit_clients <= 10_000_000:
        raise ConfigError("rate_limit_clients must be between 1 and 10000000")
    from rtserver.media.ice import parse_port_range
    from rtserver.media.turn import check_ice_settings

    try:
        parse_port_range(config.udp_ports)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    try:
        check_ice_settings(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    from rtserver.inference.engine import BACKENDS

    unknown = [name for name in config.engine if name not in BACKENDS]
    if unknown or not config.engine:
        raise ConfigError(f"engine must list backends from {', '.join(BACKENDS)}, got {unknown}")
    return config


def _check_trusted_proxy(proxy: str) -> None:
    """Refuses what uvicorn would silently take for a name that never matches a peer."""
    if proxy == "*":
        return
    try:
        if "/" in proxy:
            ipaddress.ip_network(proxy)
        else:
            ipaddress.ip_address(proxy)
    except ValueError as exc:
        raise ConfigError(
            f"trusted_proxies: {proxy!r} is not an IP address, a CIDR network (with no host "
            f"bits set, e.g. 10.0.0.0/8) or *: {exc}"
        ) from None


def load_config(
    cli: Mapping[str, Any], environ: Mapping[str, str], config_file: Path | None = None
) -> Config:
    """Merges defaults < TOML file < environment < CLI flags (``None`` flags are unset)."""
    file_path = config_file
    if file_path is None and environ.get(ENV_PREFIX + "CONFIG"):
        file_path = Path(environ[ENV_PREFIX + "CONFIG"])
    values: dict[str, Any] = {}
    if file_path is not None:
        values.update(_from_toml(file_path))
    values.update(_from_env(environ))
    values.update({k: _coerce(k, v) for k, v in cli.items() if v is not None})
    return _validate(Config(**values))


def config_to_wire(config: Config) -> dict[str, Any]:
    """The configuration as plain values (paths as strings, tuples as lists), e.g. to hand
    it to a worker process."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        value = getattr(config, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        values[f.name] = value
    return values


def config_from_wire(values: Mapping[str, Any]) -> Config:
    """Rebuilds what :func:`config_to_wire` wrote; ConfigError on an unknown setting."""
    return Config(**{name: _coerce(name, value) for name, value in values.items()})
