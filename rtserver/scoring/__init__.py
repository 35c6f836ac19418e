"""Models and scoring: face detection, per-second signals, the final rubric."""
