"""Models published as ONNX already (Silero VAD): checked and copied as they are.

Its own module because a model's manifest pins the code that made it (``converter_sha256``):
were this function in ``fetch.py``, every edit to the fetching code would mark these models
stale and fetch them again on the next start.
"""

from __future__ import annotations

from pathlib import Path


def copy_checked_onnx(source: Path, onnx_path: Path) -> None:
    """Checks ``source`` with ONNX's model checker and writes its bytes to ``onnx_path``."""
    import onnx

    onnx.checker.check_model(onnx.load(str(source)))
    onnx_path.write_bytes(source.read_bytes())
