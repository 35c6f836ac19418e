"""Silero VAD (v6, ONNX) run with ONNX Runtime and NumPy, streamed per 10 ms hop.

The model reads 16 kHz audio in chunks of CHUNK = 512 samples (32 ms), each preceded by the
last CONTEXT = 64 samples of the chunk before it (zeros before the first), and carries a
recurrent state of shape (2, batch, 128) from chunk to chunk; it returns one speech
probability (0-1) per chunk. This is exactly how silero-vad's own ``OnnxWrapper`` feeds it.

One ``SileroVad`` (one ORT session) serves every audio stream: ORT's ``run`` is thread-safe,
and one model call takes the next chunk of B streams at once, so a batcher can group the
chunks of many live sessions into one call. Two forms of that call: ``run_batch`` takes and
returns plain arrays; a ``BatchRunner`` (``SileroVad.runner(B)``) owns pre-bound input and
state buffers that are filled in place, which saves about 15% of each call (no conversion
of inputs and outputs: about 20 us of the 135-165 us a chunk takes on one core).
``VadStream``, one stream's state, runs a BatchRunner of one.

Hop alignment: hop k covers samples [160k, 160k + 160), as in ``kernels.audio.HopAnalyzer``.
Hop k is given the probability of the last chunk completed at or before the end of hop k,
chunk ``hop_chunk(k)``, so it reflects audio that ended up to 31 ms before the hop's end
(``hop_staleness_samples``); a consumer with lookahead can read a later hop's value to
centre the chunk on the hop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rtserver.kernels.audio import HOP, RATE

CHUNK = 512  # samples at RATE per model call: 32 ms, the only size the 16 kHz model takes
CONTEXT = 64  # samples of the previous chunk prepended to each chunk
STATE_SHAPE = (2, 128)  # recurrent state per stream, as (2, batch, 128) in a batch
_SR = np.array(RATE, dtype=np.int64)  # the model's "sr" input: selects its 16 kHz branch


def hop_chunk(hop: int | npt.NDArray[np.int64]) -> int | npt.NDArray[np.int64]:
    """Index of the chunk whose probability hop ``hop`` gets; -1 before the first chunk."""
    return (HOP * (hop + 1)) // CHUNK - 1


def hop_staleness_samples(hop: int | npt.NDArray[np.int64]) -> int | npt.NDArray[np.int64]:
    """Samples (at 16 kHz, 0-511) from the end of hop ``hop``'s chunk to the end of the hop.

    Before the first chunk completes (hops 0-2) this is counted from the stream's start.
    """
    return (HOP * (hop + 1)) % CHUNK


class SileroVad:
    """One ONNX Runtime session of Silero VAD, shared by every stream (thread-safe)."""

    def __init__(
        self, onnx_path: Path, threads: int = 1, sequence_path: Path | None = None
    ) -> None:
        """``threads`` is ORT's intra-op thread count. One is the default: the model is tiny
        (a chunk is well under a millisecond), and the server runs many streams in parallel
        threads already, where a per-call thread pool only adds hand-off latency.

        ``sequence_path`` is Silero's sequence export of the same model (one stream, any
        number of consecutive chunks per call, identical probabilities). With it, a stream
        runs all the chunks that one block of audio completes in one call: a call costs
        ~75 us plus ~50 us a chunk, against ~125 us a chunk one at a time."""
        import onnxruntime as ort

        if not onnx_path.is_file():
            raise FileNotFoundError(f"Silero VAD model not found: {onnx_path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.sequence = None
        if sequence_path is not None:
            if not sequence_path.is_file():
                raise FileNotFoundError(f"Silero VAD sequence model not found: {sequence_path}")
            self.sequence = ort.InferenceSession(
                str(sequence_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )

    def run_batch(
        self, chunks: np.ndarray, state: np.ndarray
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """One model call for the next chunk of B streams.

        ``chunks`` is (B, CONTEXT + CHUNK) float32: each stream's last CONTEXT samples, then
        its next CHUNK samples, 16 kHz in -1..1. ``state`` is (2, B, 128) float32, the
        streams' states (zeros for a new stream). Returns (speech probabilities (B,) 0-1,
        the new (2, B, 128) state); the inputs are not modified.
        """
        if chunks.ndim != 2 or chunks.shape[1] != CONTEXT + CHUNK:
            raise ValueError(f"chunks must be (B, {CONTEXT + CHUNK}), got {chunks.shape}")
        batch = chunks.shape[0]
        if state.shape != (STATE_SHAPE[0], batch, STATE_SHAPE[1]):
            raise ValueError(f"state must be (2, {batch}, 128), got {state.shape}")
        out, new_state = self.session.run(
            None,
            {
                "input": np.ascontiguousarray(chunks, dtype=np.float32),
                "state": np.ascontiguousarray(state, dtype=np.float32),
                "sr": _SR,
            },
        )
        probs: npt.NDArray[np.float32] = np.asarray(out, np.float32).reshape(batch)
        return probs, np.asarray(new_state, np.float32)

    def runner(self, batch: int) -> BatchRunner:
        """Pre-bound buffers for repeated calls on ``batch`` streams (zero states)."""
        return BatchRunner(self, batch)

    def stream(self) -> VadStream:
        """A new stream (zero state, zero context) on this session."""
        return VadStream(self)


class BatchRunner:
    """One model call at a time for a fixed batch of B streams, through buffers bound once.

    Write each stream's row (CONTEXT samples, then its next CHUNK samples) into ``rows`` in
    place and call ``run``; the streams' states live here and advance with each run, exactly
    as ``run_batch(rows, state)`` would advance them. One runner belongs to one thread at a
    time (its buffers are shared with ORT); the session behind it is shared freely.
    """

    def __init__(self, vad: SileroVad, batch: int) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.rows = np.zeros((batch, CONTEXT + CHUNK), np.float32)
        self._probs = np.zeros((batch, 1), np.float32)
        # The state is read from one buffer and written to the other, which then becomes the
        # input: two bindings, used in turn.
        self._states = tuple(
            np.zeros((STATE_SHAPE[0], batch, STATE_SHAPE[1]), np.float32) for _ in range(2)
        )
        self._session = vad.session
        self._bindings = (self._bind(0, 1), self._bind(1, 0))
        self._turn = 0

    def _bind(self, source: int, target: int) -> Any:
        """An IO binding reading state buffer ``source`` and writing ``target``.

        ``OrtValue.ortvalue_from_numpy`` wraps the arrays' own memory (on the CPU), so ORT
        reads what is written into ``rows`` in place and writes straight into the buffers.
        """
        import onnxruntime as ort

        binding = self._session.io_binding()
        inputs = (("input", self.rows), ("state", self._states[source]), ("sr", _SR))
        for name, array in inputs:
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        for name, array in (("output", self._probs), ("stateN", self._states[target])):
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(array))
        return binding

    @property
    def state(self) -> npt.NDArray[np.float32]:
        """The streams' current (2, B, 128) state (a view; copy it to keep it)."""
        current: npt.NDArray[np.float32] = self._states[self._turn]
        return current

    def run(self) -> npt.NDArray[np.float32]:
        """Runs the model on ``rows``; returns the B speech probabilities (0-1), a view
        that the next run overwrites."""
        self._session.run_with_iobinding(self._bindings[self._turn])
        self._turn ^= 1
        probs: npt.NDArray[np.float32] = self._probs[:, 0]
        return probs


class VadStream:
    """One audio stream's Silero VAD, giving one speech probability per 10 ms hop.

    Samples are 16 kHz mono floats in -1..1; leftovers wait for the next call, so any split
    of a stream gives the same probabilities as one call on the whole of it.
    """

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad
        self._runner = vad.runner(1) if vad.sequence is None else None
        self._h = np.zeros((1, 1, STATE_SHAPE[1]), np.float32)  # the sequence model's state
        self._c = np.zeros((1, 1, STATE_SHAPE[1]), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)  # the last chunk's last samples
        self._tail = np.zeros(0, np.float32)  # samples of the next, incomplete chunk
        self.samples_in = 0  # samples fed so far
        self.chunks_done = 0  # chunks run through the model so far
        self.last_prob = 0.0  # probability of the last chunk run (0.0 before the first)

    @property
    def hops_done(self) -> int:
        """Hops completed (and returned) so far."""
        return self.samples_in // HOP

    def process(self, samples: np.ndarray) -> npt.NDArray[np.float32]:
        """Speech probabilities (float32, 0-1) of the hops that ``samples`` completes.

        Returns as many values as ``HopAnalyzer.process`` does for the same split of the
        stream; hop k's value is that of chunk ``hop_chunk(k)`` (0.0 while it is -1).
        """
        x = np.asarray(samples, np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono (n,) samples, got {x.shape}")
        first_hop, first_chunk = self.hops_done, self.chunks_done
        data = np.concatenate([self._tail, x]) if self._tail.size else x
        count = data.shape[0] // CHUNK
        # Chunk probabilities this call's hops may read: the last one from before (chunk
        # first_chunk - 1, or the initial 0.0), then every chunk completed now.
        probs = np.empty(count + 1, np.float32)
        probs[0] = self.last_prob
        if count:
            probs[1:] = self._run(self._rows(data, count))
            self.last_prob = float(probs[-1])
            self.chunks_done += count
        self._tail = data[count * CHUNK :].copy()
        self.samples_in += x.shape[0]
        hops = np.arange(first_hop, self.hops_done)
        return probs[(HOP * (hops + 1)) // CHUNK - first_chunk]

    def _rows(self, data: np.ndarray, count: int) -> npt.NDArray[np.float32]:
        """The model's (count, CONTEXT + CHUNK) input rows for the chunks completed in
        ``data``: each chunk after the last CONTEXT samples of the one before it."""
        chunks = data[: count * CHUNK].reshape(count, CHUNK)
        rows = np.empty((count, CONTEXT + CHUNK), np.float32)
        rows[:, CONTEXT:] = chunks
        rows[0, :CONTEXT] = self._context
        rows[1:, :CONTEXT] = chunks[:-1, CHUNK - CONTEXT :]
        self._context = chunks[-1, CHUNK - CONTEXT :].copy()
        return rows

    def _run(self, rows: np.ndarray) -> npt.NDArray[np.float32]:
        """Each row's speech probability, the stream's state carried through in order."""
        if self.vad.sequence is not None:
            probs, self._h, self._c = self.vad.sequence.run(
                ["speech_probs", "hn", "cn"], {"input": rows, "h": self._h, "c": self._c}
            )
            return np.asarray(probs, np.float32).reshape(-1)
        assert self._runner is not None
        out = np.empty(len(rows), np.float32)
        for k, row in enumerate(rows):
            self._runner.rows[0] = row
            out[k] = self._runner.run()[0]
        return out
