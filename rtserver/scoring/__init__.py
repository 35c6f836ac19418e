"""What is judged: measurements turned into per-second signals and a final score.

The per-second aggregator (``signals.py``), each second's fluency (``fluency.py``), the final
rubric (``rubric.py``) and the candidate's summary (``summary.py``). Competencies, the job-fit
score, calibration and bias audits belong here.

Scoring reads measurements and what the candidate said; it never reads media or models, and
it never decides: a person does. Measuring is ``perception/``'s. Demographic data (the
candidates' voluntary self-identification) reaches only the bias audit (``audit.py``,
``groups.py``) and a fairness-constrained calibration, handed over by their callers; nothing
that scores a candidate imports them (``tests/test_layout.py``).
"""
