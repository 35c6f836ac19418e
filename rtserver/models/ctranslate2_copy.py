"""Models published in CTranslate2's format (the Whisper speech-to-text model): checked and
copied as they are, a directory of files.

Its own module for the reason ``onnx_copy`` is: a model's manifest pins the code that made
it (``converter_sha256``), so an edit to the fetching code must not mark it stale.
"""

from __future__ import annotations

from pathlib import Path

from rtserver.files import write_atomically


def copy_checked_ctranslate2(source: Path, dest: Path) -> None:
    """Checks that directory ``source`` holds a Whisper model that CTranslate2 loads and a
    tokenizer that ``tokenizers`` reads (what faster-whisper will do with them), then writes
    each of its files into directory ``dest``, each one atomically."""
    import ctranslate2
    import tokenizers

    # Loading is the check: CTranslate2 reads model.bin (its format version and every
    # weight), config.json and vocabulary.txt, and refuses a file it cannot use.
    ctranslate2.models.Whisper(str(source), device="cpu", compute_type="int8")
    tokenizers.Tokenizer.from_file(str(source / "tokenizer.json"))
    for path in sorted(source.iterdir()):
        write_atomically(dest / path.name, path.read_bytes())
