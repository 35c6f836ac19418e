"""Every message that crosses a module or process boundary: one frozen dataclass each.

These are the v1 wire contract that HR observers consume. Fields may be added; existing
fields are never renamed, removed or changed in meaning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

WIRE_VERSION = 1


@dataclass(frozen=True)
class VideoSecond:
    """Video summary of one second of media."""

    fps: float  # analysed frames in this second (frames/s)
    face: float  # fraction (0-1) of analysed frames with a face
    box: tuple[int, int, int, int] | None  # last face box (x, y, w, h) in frame pixels
    frames: int = 0  # decoded frames that arrived in this second
    # Mean face exposure: {"brightness": 0-1, "contrast": 0-1}; None without a measured face.
    exposure: dict[str, float] | None = None
    # Face crops the model batcher dropped in this second because it was overloaded.
    crops_dropped: int = 0


@dataclass(frozen=True)
class AudioSecond:
    """Audio summary of one second of media."""

    speech: float  # fraction (0-1) of the second that is speech
    loudness_dbfs: float | None  # mean energy of the second (dBFS); None with no audio
    pitch_hz: float | None  # median pitch of voiced hops (Hz); None when none are voiced
    hops: int = 0  # 10 ms hops analysed in this second


@dataclass(frozen=True)
class SignalMessage:
    """One second of analysed media, published once per second index ``t``."""

    session: str
    t: int  # second index from the first media frame: 0, 1, 2... with no gaps or repeats
    video: VideoSecond
    audio: AudioSecond
    lag_ms: float  # end of that second of media -> publication (ms)
    emotion: dict[str, Any] | None = None
    fluency: dict[str, Any] | None = None
    type: Literal["signal"] = "signal"
    v: int = WIRE_VERSION
    seq: int = 0  # position in the session's message log (extension field)
    # The candidate's question index (from 0) in force when this second began, by the
    # server's clock at arrival of the page's control message; None before the first one
    # (extension field).
    question: int | None = None

    def to_wire(self) -> dict[str, Any]:
        data = asdict(self)
        if self.video.box is not None:
            data["video"]["box"] = list(self.video.box)
        return data


@dataclass(frozen=True)
class Dimension:
    """One dimension of the final rubric."""

    score: float  # 0-100
    weight: float  # 0-1; weights of a report sum to 1
    evidence: str  # plain-language reason, quoting the measured figures


@dataclass(frozen=True)
class FinalMessage:
    """The final job-fit score, sent once after the last signal of a session."""

    session: str
    score: float  # 0-100
    dimensions: dict[str, Dimension]
    duration_s: float
    end_reason: str = ""  # why the session ended (extension field)
    signals: int = 0  # signal messages published before this one (extension field)
    # "on" or "off": whether emotion inference ran and may count (extension field).
    emotion_analysis: str = "on"
    notes: tuple[str, ...] = ()  # what the score leaves out and why (extension field)
    # One entry per question answered: {"index", "text", "start_s", "end_s", "seconds",
    # "speech_ratio", "rate_sps", "syllables", "pause_count", "face", "dominant_emotion",
    # "speech_s" (added: the question's speech time, s)}; numbers are None when not
    # measured (extension field).
    questions: tuple[dict[str, Any], ...] = ()
    type: Literal["final"] = "final"
    v: int = WIRE_VERSION
    seq: int = 0
    # What the candidate said: every transcript segment of the session, in order, each as
    # {"question", "start", "end", "text", "words"} (a TranscriptMessage's fields) (extension
    # field).
    transcript: tuple[dict[str, Any], ...] = ()
    # False when the final could not wait for every utterance to be transcribed; the spans
    # not transcribed are then in transcript_missing, as {"start", "end"} (s, media clock)
    # (extension fields).
    transcript_complete: bool = True
    transcript_missing: tuple[dict[str, float], ...] = ()
    # "on" or "off": whether speech was transcribed (extension field).
    transcription: str = "off"
    # A session with a job (scoring/job_report.py; extension fields). Then ``score`` is the
    # job-fit score and ``dimensions`` the competencies; ``job`` is {"id", "version",
    # "title"}; ``recommendation`` "advance" (score >= threshold: invite to the human
    # interview) or "review" (a person looks again; never a rejection); ``competencies``
    # {id: {"name", "score", "weight", "answered", "evidence", "evidence_times"}};
    # ``answers`` per question {"question", "text", "competencies": {id: {"score", "level",
    # "answered", "evidence", "evidence_times", "reasons"}}}; ``not_answered`` the
    # competencies nothing was said to; ``delivery`` {"score", "weight", "dimensions"}: how
    # the candidate came across, for information unless the job gives it a weight. All
    # None or empty without a job.
    job: dict[str, Any] | None = None
    recommendation: str | None = None
    threshold: float | None = None
    competencies: dict[str, Any] | None = None
    answers: tuple[dict[str, Any], ...] = ()
    not_answered: tuple[str, ...] = ()
    delivery: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TranscriptWord:
    """One recognised word, with its time on the session's media clock."""

    w: str  # as the recogniser wrote it, with its leading space and punctuation
    start: float  # s, the same clock as the signals' t
    end: float  # s
    p: float  # the recogniser's probability for the word, 0-1


@dataclass(frozen=True)
class TranscriptMessage:
    """One utterance of the candidate, transcribed: sent once it is recognised, in order.

    An utterance runs from speech after a pause to the next pause of 0.5 s or more (long
    speech is cut every 15 s at its quietest moment; ``rtserver/perception/utterances.py``).
    """

    session: str
    question: int | None  # the question in force when the utterance began; None before one
    start: float  # s, media clock (the signals' t): the utterance's first speech
    end: float  # s: the end of its last speech
    text: str  # the words, joined; "" when the recogniser heard none
    words: tuple[TranscriptWord, ...]
    lag_ms: float  # end of the utterance -> publication (ms)
    type: Literal["transcript"] = "transcript"
    v: int = WIRE_VERSION
    seq: int = 0

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    def segment(self) -> dict[str, Any]:
        """The form the final and the report list it in."""
        data = self.to_wire()
        return {key: data[key] for key in ("question", "start", "end", "text", "words")}


@dataclass(frozen=True)
class HintMessage:
    """A gentle, live note to the candidate, sent on the `feedback` data channel."""

    code: str  # pace_fast, pace_slow, too_quiet, long_silence
    text: str  # what the candidate page shows
    t: int = 0  # the second of media that prompted it (extension field)
    type: Literal["hint"] = "hint"
    v: int = WIRE_VERSION

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ControlMessage:
    """What the candidate page says on the `control` data channel: a question began."""

    index: int  # question index, from 0
    at: float  # media time (s) at which it began, by the page's clock
    type: Literal["question"] = "question"


WireMessage = SignalMessage | FinalMessage | TranscriptMessage


@dataclass(frozen=True)
class StoredMessage:
    """A message as the store and bus carry it: already encoded, with its log position."""

    session: str
    seq: int
    kind: str
    payload: dict[str, Any] = field(hash=False)

    def encode(self) -> str:
        return json.dumps(self.payload, separators=(",", ":"))


def signal_from_wire(data: dict[str, Any]) -> SignalMessage:
    """Rebuilds a signal from its wire form (as stored), e.g. to score after a restart."""
    video = data["video"]
    audio = data["audio"]
    box = video.get("box")
    return SignalMessage(
        session=data["session"],
        t=int(data["t"]),
        video=VideoSecond(
            fps=float(video["fps"]),
            face=float(video["face"]),
            box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])) if box else None,
            frames=int(video.get("frames", 0)),
            exposure=video.get("exposure"),
            crops_dropped=int(video.get("crops_dropped", 0)),
        ),
        audio=AudioSecond(
            speech=float(audio["speech"]),
            loudness_dbfs=audio.get("loudness_dbfs"),
            pitch_hz=audio.get("pitch_hz"),
            hops=int(audio.get("hops", 0)),
        ),
        lag_ms=float(data["lag_ms"]),
        emotion=data.get("emotion"),
        fluency=data.get("fluency"),
        seq=int(data.get("seq", 0)),
        question=None if data.get("question") is None else int(data["question"]),
    )


def transcript_from_wire(data: dict[str, Any]) -> TranscriptMessage:
    """Rebuilds a transcript message from its wire form (as stored)."""
    return TranscriptMessage(
        session=data["session"],
        question=None if data.get("question") is None else int(data["question"]),
        start=float(data["start"]),
        end=float(data["end"]),
        text=str(data["text"]),
        words=tuple(
            TranscriptWord(str(w["w"]), float(w["start"]), float(w["end"]), float(w["p"]))
            for w in data.get("words", ())
        ),
        lag_ms=float(data.get("lag_ms", 0.0)),
        seq=int(data.get("seq", 0)),
    )


# -- between the server process and its worker processes (rtserver/server/workers.py) -----------

IPC_VERSION = 1


@dataclass(frozen=True)
class WorkerStart:
    """Server -> worker, first: the worker's index, the whole configuration (as
    :func:`rtserver.config.config_to_wire` writes it) and the run's metrics directory
    (``rtserver/metrics.py``)."""

    index: int
    config: dict[str, Any]
    metrics_dir: str
    type: Literal["start"] = "start"
    v: int = IPC_VERSION


@dataclass(frozen=True)
class WorkerReady:
    """Worker -> server: models loaded and warmed up; sessions may be placed here."""

    index: int
    pid: int
    backends: dict[str, str]  # model name -> backend name
    type: Literal["ready"] = "ready"
    v: int = IPC_VERSION


@dataclass(frozen=True)
class WorkerCall:
    """Server -> worker: a request about the worker's sessions, answered by one
    :class:`WorkerReply` with the same ``id``."""

    id: int
    method: str  # join, reconnect, end, watch, live, shutdown
    args: dict[str, Any]
    type: Literal["call"] = "call"
    v: int = IPC_VERSION


@dataclass(frozen=True)
class WorkerReply:
    """Worker -> server: the result of a call, or the typed error it raised (by code)."""

    id: int
    value: Any = None
    error: str | None = None  # an rtserver.errors code; None on success
    detail: str = ""
    type: Literal["reply"] = "reply"
    v: int = IPC_VERSION


@dataclass(frozen=True)
class WorkerPublish:
    """Worker -> server: a message of a session, already in the store."""

    message: StoredMessage
    type: Literal["publish"] = "publish"
    v: int = IPC_VERSION


@dataclass(frozen=True)
class WorkerClose:
    """Worker -> server: the session has ended; its subscriptions close."""

    session: str
    type: Literal["close"] = "close"
    v: int = IPC_VERSION


IpcMessage = WorkerStart | WorkerReady | WorkerCall | WorkerReply | WorkerPublish | WorkerClose


def ipc_to_wire(message: IpcMessage) -> dict[str, Any]:
    """The plain form of an IPC message (for msgpack)."""
    if isinstance(message, WorkerPublish):
        stored = message.message
        return {
            "type": message.type,
            "v": message.v,
            "session": stored.session,
            "seq": stored.seq,
            "kind": stored.kind,
            "payload": stored.payload,
        }
    return {f.name: getattr(message, f.name) for f in fields(message)}


def ipc_from_wire(data: dict[str, Any]) -> IpcMessage:
    """Rebuilds an IPC message from its plain form; ValueError on an unknown type."""
    kind = data.get("type")
    if kind == "publish":
        stored = StoredMessage(data["session"], data["seq"], data["kind"], data["payload"])
        return WorkerPublish(stored)
    cls = _IPC_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown IPC message type {kind!r}")
    return cls(**data)


_IPC_TYPES: dict[str, Any] = {
    "start": WorkerStart,
    "ready": WorkerReady,
    "call": WorkerCall,
    "reply": WorkerReply,
    "close": WorkerClose,
}
