"""Live hints to the candidate: gentle notes about pace, loudness and long silences.

Rules are checked on each published second (media time), from its signal:

- ``pace_fast`` / ``pace_slow``: the speech rate has been outside PACE_BAND_SPS for
  PACE_AFTER_S seconds of talking (seconds whose 5 s window holds at least
  PACE_MIN_SPEECH_S of speech; a second inside the band resets the count);
- ``too_quiet``: QUIET_AFTER_S spoken seconds in a row below QUIET_DBFS;
- ``long_silence``: SILENCE_AFTER_S seconds without speech while a question is open.

Each code is sent at most once per RATE_LIMIT_S seconds: a hint is a nudge, not a nag.
"""

from __future__ import annotations

from rtserver.messages import HintMessage, SignalMessage
from rtserver.scoring.fluency import WINDOW_S

PACE_BAND_SPS = (2.5, 6.0)
PACE_AFTER_S = 10
PACE_MIN_SPEECH_S = 1.5
# The rubric's audibility band starts at -32 dBFS; a second that is mostly speech yet
# averages under -40 dBFS is hard to hear.
QUIET_DBFS = -40.0
QUIET_MIN_SPEECH = 0.5  # a second counts as spoken from this speech fraction
QUIET_AFTER_S = 5
SILENCE_AFTER_S = 8
RATE_LIMIT_S = 20

TEXTS = {
    "pace_fast": "You're speaking quite fast. Slowing down a little helps you come across clearly.",
    "pace_slow": "Take your time, but try to keep a steady pace so your answer flows.",
    "too_quiet": "We can barely hear you. Try moving closer to your microphone or speaking up.",
    "long_silence": "Take a moment if you need it. When you're ready, go ahead with your answer.",
}


class HintRules:
    """One session's hint state."""

    def __init__(self) -> None:
        self._fast = 0  # consecutive talking seconds above the band
        self._slow = 0
        self._quiet = 0
        self._silent = 0
        self._last_sent: dict[str, int] = {}

    def on_second(self, signal: SignalMessage, question_open: bool) -> list[HintMessage]:
        """Hints prompted by this second, rate-limited."""
        codes = [*self._pace(signal), *self._quiet_voice(signal)]
        if self._silence(signal, question_open):
            codes.append("long_silence")
        return [self._send(code, signal.t) for code in codes if self._allowed(code, signal.t)]

    def _pace(self, signal: SignalMessage) -> list[str]:
        fluency = signal.fluency
        if not fluency or fluency["speech_ratio"] * WINDOW_S < PACE_MIN_SPEECH_S:
            return []  # too little talking to judge a pace; the count waits
        rate = fluency["rate_sps"]
        low, high = PACE_BAND_SPS
        self._fast = self._fast + 1 if rate > high else 0
        self._slow = self._slow + 1 if rate < low else 0
        if self._fast >= PACE_AFTER_S:
            self._fast = 0
            return ["pace_fast"]
        if self._slow >= PACE_AFTER_S:
            self._slow = 0
            return ["pace_slow"]
        return []

    def _quiet_voice(self, signal: SignalMessage) -> list[str]:
        audio = signal.audio
        if audio.speech < QUIET_MIN_SPEECH or audio.loudness_dbfs is None:
            return []
        self._quiet = self._quiet + 1 if audio.loudness_dbfs < QUIET_DBFS else 0
        if self._quiet >= QUIET_AFTER_S:
            self._quiet = 0
            return ["too_quiet"]
        return []

    def _silence(self, signal: SignalMessage, question_open: bool) -> bool:
        speaking = signal.audio.speech > 0.0
        if speaking or not question_open or signal.audio.hops == 0:
            self._silent = 0
            return False
        self._silent += 1
        if self._silent >= SILENCE_AFTER_S:
            self._silent = 0
            return True
        return False

    def _allowed(self, code: str, t: int) -> bool:
        last = self._last_sent.get(code)
        return last is None or t - last >= RATE_LIMIT_S

    def _send(self, code: str, t: int) -> HintMessage:
        self._last_sent[code] = t
        return HintMessage(code=code, text=TEXTS[code], t=t)
