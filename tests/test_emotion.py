"""The emotion model on real face crops, and the per-second emotion summary."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import color, data

from rtserver.inference.engine import EngineOptions, load_engine
from rtserver.perception.emotion import (
    CIRCUMPLEX,
    EMOTION_LABELS,
    EmotionModel,
    circumplex,
    confidence,
    summarise,
)


def one_hot(label: str) -> np.ndarray:
    probs = np.zeros(len(EMOTION_LABELS))
    probs[EMOTION_LABELS.index(label)] = 1.0
    return probs


def test_circumplex_places_each_class_at_its_documented_point() -> None:
    for label, (valence, arousal) in CIRCUMPLEX.items():
        v, a = circumplex(one_hot(label))
        assert v == pytest.approx(valence)
        assert a == pytest.approx((arousal + 1) / 2)  # arousal is reported on 0..1
    assert circumplex(one_hot("happy"))[0] > 0 > circumplex(one_hot("sad"))[0]
    assert circumplex(one_hot("neutral")) == (0.0, 0.5)


def test_confidence_runs_from_uniform_to_certain() -> None:
    assert confidence(np.full(7, 1 / 7)) == pytest.approx(0.0, abs=1e-9)
    assert confidence(one_hot("fear")) == pytest.approx(1.0)
    assert 0.0 < confidence(np.array([0.5, 0.5, 0, 0, 0, 0, 0])) < 1.0


def test_summary_of_a_second() -> None:
    assert summarise([]) is None
    summary = summarise([one_hot("happy"), one_hot("happy"), one_hot("neutral")])
    assert summary is not None
    assert summary["frames"] == 3 and summary["dominant"] == "happy"
    assert list(summary["probs"]) == list(EMOTION_LABELS)
    assert summary["probs"]["happy"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["valence"] == pytest.approx(2 / 3 * 0.81, abs=1e-3)
    assert -1.0 <= summary["valence"] <= 1.0 and 0.0 <= summary["arousal"] <= 1.0


def fer_crop(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """fer's own preprocessing: square the box, 10 px margin, 64 x 64, (x/255 - 0.5) * 2."""
    x, y, w, h = box
    side = max(w, h)
    x, y = x - (side - w) // 2 - 10, y - (side - h) // 2 - 10
    crop = gray[max(0, y) : y + side + 20, max(0, x) : x + side + 20]
    return (cv2.resize(crop, (64, 64)).astype(np.float32) / 255.0 - 0.5) * 2.0


def test_the_real_model_reads_real_faces(models_dir: Path) -> None:
    model = EmotionModel(load_engine(models_dir / "emotion.onnx", EngineOptions()))
    astronaut = (color.rgb2gray(data.astronaut()) * 255).astype(np.uint8)
    faces = np.stack(
        [fer_crop(astronaut, (165, 50, 110, 130))]
        + [(cv2.resize(img, (64, 64)) * 2.0 - 1.0).astype(np.float32) for img in
           data.lfw_subset()[:7]]
    )  # fmt: skip
    probs = model.run(faces)
    assert probs.shape == (8, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # A smiling astronaut: fer's model reads her as happy.
    assert EMOTION_LABELS[int(np.argmax(probs[0]))] == "happy"
    # Different faces get different readings: the model is not returning a constant.
    assert np.ptp(probs[:, EMOTION_LABELS.index("happy")]) > 0.1
    summary = summarise(list(probs))
    assert summary is not None and summary["frames"] == 8
