"""What is judged: measurements turned into per-second signals and a final score.

The per-second aggregator (``signals.py``), each second's fluency (``fluency.py``), the final
rubric (``rubric.py``) and the candidate's summary (``summary.py``). Competencies, the job-fit
score, calibration and bias audits belong here.

Scoring reads measurements and what the candidate said; it never reads media, models or
demographic data, and it never decides: a person does. Measuring is ``perception/``'s.
"""
