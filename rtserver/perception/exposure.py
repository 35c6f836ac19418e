"""Face exposure: how bright and how contrasted the candidate's face is.

Poor lighting is the commonest reason a face-based signal goes wrong, and the one thing a
candidate can fix at once, so it is measured on the same normalised face crops the emotion
model reads. Brightness is the crop's mean luma (0 black, 1 white); contrast is its standard
deviation on the same 0-1 scale.
"""

from __future__ import annotations

import numpy as np


class FaceExposure:
    """A batcher model: (N, S, S) crops in [-1, 1] -> (N, 2) rows of [brightness, contrast]."""

    name = "exposure"

    def __init__(self, input_size: int = 64) -> None:
        self.input_size = input_size

    def run(self, batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(batch.shape[0], -1)
        brightness = (flat.mean(axis=1) + 1.0) / 2.0
        contrast = flat.std(axis=1) / 2.0
        return np.stack([brightness, contrast], axis=1).astype(np.float32)
