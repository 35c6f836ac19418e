"""The job-fit score's spread on the same answer spoken by two voices, through the live path.

    python -m bench.job_fit_voices [--answers N] [--json out.json]

Each of the first N answers of the hand-graded set (``tests/answer_set.json``, both splits,
silence left out) is spoken by two espeak-ng voices (a US male and a British female, 160
words a minute, with a pause between sentences), transcribed as a live session does
(``bench.asr.ours``: the speech gate, the utterance cutter, Whisper tiny.en with the
question as prompt) and rated against its job (``scoring/competencies.py``). Printed per
answer: the score from its written text, from each voice's transcript, and the two voices'
difference; then the mean and largest difference, and the mean difference from the written
text. The transcripts' word error rates say how much of the spread is the recogniser's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import asr_set  # noqa: E402
from answer_set import load_answers, load_jobs  # noqa: E402
from vad_speech import synth  # noqa: E402

from bench.asr import load_vad, ours  # noqa: E402
from rtserver.inference.asr import load_recognizer  # noqa: E402
from rtserver.inference.sentence_encoder import SentenceEncoder  # noqa: E402
from rtserver.models.fetch import MODELS  # noqa: E402
from rtserver.scoring.answer_features import split_sentences  # noqa: E402
from rtserver.scoring.competencies import Spoken, rate_answer  # noqa: E402
from rtserver.scoring.jobs import parse_job  # noqa: E402

VOICES = ("en-us+m3", "en+f2")
WPM = 160
PAUSE_S = 0.6  # between sentences: the cutter makes an utterance of each
LEVEL_DBFS = -23.0


def speak(text: str, voice: str) -> np.ndarray:
    pieces = []
    for sentence in split_sentences(text):
        said = synth(sentence, voice, WPM)
        said = said * 10 ** ((LEVEL_DBFS - 20 * np.log10(np.sqrt(np.mean(said**2)) + 1e-12)) / 20)
        pieces += [np.zeros(int(PAUSE_S * 16000)), said]
    pieces.append(np.zeros(int(PAUSE_S * 16000)))
    return np.concatenate(pieces).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=24)
    parser.add_argument("--models-dir", type=Path, default=ROOT / ".models")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    jobs = {stem: parse_job(body) for stem, body in load_jobs().items()}
    answers = [a for a in load_answers() if a.text.strip()][: args.answers]
    encoder = SentenceEncoder(args.models_dir / MODELS["sentence_encoder"].file)
    recognizer = load_recognizer(args.models_dir / MODELS["asr"].file, "cpu")
    vad = load_vad(args.models_dir)

    def score(job_stem: str, question: int, text: str) -> float:
        ratings = rate_answer(jobs[job_stem], question, [Spoken(text)], encoder)
        return float(np.mean([r.score for r in ratings.values()]))

    rows = []
    print(f"{'answer':<28} level  text  {VOICES[0]:>9} {VOICES[1]:>7}  diff   WER a/b")
    for answer in answers:
        prompt = jobs[answer.job].questions[answer.question].text
        heard = [" ".join(h.text for h in ours(speak(answer.text, v), prompt, recognizer, vad))
                 for v in VOICES]  # fmt: skip
        scores = [score(answer.job, answer.question, t) for t in heard]
        written = score(answer.job, answer.question, answer.text)
        wers = [asr_set.word_errors(answer.text, t).wer for t in heard]
        rows.append({"id": answer.id, "level": answer.level, "text": written,
                     "voices": scores, "wer": wers, "heard": heard})  # fmt: skip
        print(f"{answer.id:<28} {answer.level:>5} {written:5.0f}  {scores[0]:9.0f} {scores[1]:7.0f}"
              f"  {abs(scores[0] - scores[1]):4.0f}   {wers[0]:.2f}/{wers[1]:.2f}")  # fmt: skip
    spread = [abs(r["voices"][0] - r["voices"][1]) for r in rows]
    drift = [abs(v - r["text"]) for r in rows for v in r["voices"]]
    print(f"\nvoices' difference: mean {np.mean(spread):.1f}, largest {max(spread):.1f} points;"
          f" spoken against written: mean {np.mean(drift):.1f} points")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "voices": VOICES}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
