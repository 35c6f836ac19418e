"""Sentences to vectors: all-MiniLM-L6-v2 on the inference engine, for job-fit scoring.

``SentenceEncoder`` opens the ``sentence_encoder/`` directory that ``rtserver models fetch``
writes (``model.onnx``, converted by ``models/minilm_safetensors.py``, and the model's own
``tokenizer.json``), tokenises with the ``tokenizers`` library and runs the graph with ONNX
Runtime (on the CPU, one thread, by default). It never downloads: a missing or incomplete
directory is a :class:`SentenceEncoderError`.

Texts are cut at :data:`MAX_TOKENS` tokens, as sentence-transformers cuts them for this
model (its ``max_seq_length``), and encoded :data:`BATCH_SIZE` at a time, longest first so
that a batch pads its texts to similar lengths. Padding does not change a text's vector (the
mask keeps padded tokens out of the attention and the mean) beyond float32 rounding: a batch
gives what one text at a time gives within 1e-5. The same texts give the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from rtserver.inference.engine import EngineOptions, OrtBackend, load_engine
from rtserver.models.minilm_safetensors import (
    ATTENTION_MASK,
    INPUT_IDS,
    ONNX_FILE,
    TOKENIZER_FILE,
)

if TYPE_CHECKING:
    import tokenizers

log = logging.getLogger(__name__)

# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (its sentence_bert_config.json),
# [CLS] and [SEP] included: the model was trained on texts this long or shorter.
MAX_TOKENS = 256
# Texts per engine call. Measured on answer-like sentences (25 tokens on average; 2-core x86,
# one ONNX Runtime thread, best of 3): one at a time 90-110 sentences/s, 8 to 32 at a time
# 130-140, 64 110, 128 92 (the attention's activations outgrow the cache). The model is
# compute-bound: batching only shares the per-call overhead.
BATCH_SIZE = 16
ORT_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda")
REQUIRED_FILES = (ONNX_FILE, TOKENIZER_FILE)


class SentenceEncoderError(RuntimeError):
    """The sentence encoder cannot be loaded: its directory is missing, lacks a file, or
    ONNX Runtime or ``tokenizers`` refuses one. The message names the directory and what
    to do."""


class SentenceEncoder:
    """all-MiniLM-L6-v2: texts to unit vectors whose dot product is their cosine similarity
    (paraphrases near 1, unrelated texts near 0). Thread-safe: ONNX Runtime sessions and
    ``tokenizers`` may be called from several threads at once."""

    def __init__(self, model_dir: Path, options: EngineOptions | None = None) -> None:
        """Opens ``model_dir`` (``model.onnx`` and ``tokenizer.json``) on the first backend
        of ``options.order`` that works (by default ONNX Runtime on the CPU, one thread).

        Raises SentenceEncoderError when the directory is missing, lacks a file, or holds
        one that cannot be loaded; ValueError when ``options.order`` names a backend other
        than ONNX Runtime's (the others take one float32 input; this model takes two int64)."""
        options = options or EngineOptions(order=("onnxruntime-cpu",), cpu_threads=1)
        others = [name for name in options.order if name not in ORT_BACKENDS]
        if others:
            raise ValueError(
                f"the sentence encoder runs on {' or '.join(ORT_BACKENDS)} only, not {others}"
            )
        missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
        if missing:
            raise SentenceEncoderError(
                f"sentence encoder {model_dir} lacks {', '.join(missing)}: run `rtserver models "
                "fetch` (it writes sentence_encoder/ in the models directory)"
            )
        self.model_dir = model_dir
        self._tokenizer = _load_tokenizer(model_dir / TOKENIZER_FILE)
        try:
            backend = load_engine(model_dir / ONNX_FILE, options)
        except Exception as exc:  # ONNX Runtime's own errors have no common public type
            raise SentenceEncoderError(f"cannot load sentence encoder {model_dir}: {exc}") from exc
        assert isinstance(backend, OrtBackend)  # the order names ONNX Runtime's only
        self._backend = backend
        self.name = f"all-MiniLM-L6-v2 {backend.name}"
        self.dimension = _output_width(backend)

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit vectors (N, :attr:`dimension`) float32 for ``texts``, in their order. An empty
        text has a vector too (that of [CLS] [SEP]); no text gives (0, dimension). Texts over
        :data:`MAX_TOKENS` tokens are encoded from their first tokens."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one str")
        out = np.empty((len(texts), self.dimension), np.float32)
        if not texts:
            return out
        ids = [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]
        # Longest first, ties in the caller's order: a batch holds texts of similar length, so
        # little of it is padding, and the order (so the bytes) is the same every call.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            input_ids, mask = pad_batch([ids[i] for i in rows])
            (embeddings,) = self._backend.run_inputs({INPUT_IDS: input_ids, ATTENTION_MASK: mask})
            out[rows] = embeddings
        return out


def pad_batch(ids: Sequence[Sequence[int]]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(input_ids, attention_mask)``, int64 (N, longest): each row's ids then 0 ([PAD]),
    and 1 for each id, 0 for each pad."""
    width = max(len(row) for row in ids)
    input_ids = np.zeros((len(ids), width), np.int64)
    mask = np.zeros((len(ids), width), np.int64)
    for index, row in enumerate(ids):
        input_ids[index, : len(row)] = row
        mask[index, : len(row)] = 1
    return input_ids, mask


def _load_tokenizer(path: Path) -> tokenizers.Tokenizer:
    """The model's own tokenizer, cut at MAX_TOKENS and without padding (``pad_batch``
    pads each batch to its longest text)."""
    import tokenizers

    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a bad file
        raise SentenceEncoderError(f"cannot read tokenizer {path}: {exc}") from exc
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    # The file asks for padding to a fixed 128 tokens (and cuts at 128); we pad ourselves.
    tokenizer.no_padding()
    return tokenizer


def _output_width(backend: OrtBackend) -> int:
    """The width of the model's one output, (N, width)."""
    shape = backend.session.get_outputs()[0].shape
    if len(shape) != 2 or not isinstance(shape[1], int):
        raise SentenceEncoderError(f"the sentence encoder's output is {shape}, not (N, width)")
    return shape[1]
