"""What is measured from media: faces and what they show, speech and how it flows.

Face detection (Haar, BlazeFace short and full range, the finder that searches a whole
frame), tracking between detections, emotion and exposure of the face crops; Silero VAD and
the speech gate, syllable nuclei and the per-hop fluency stream. Speech-to-text belongs here.

Each module turns frames or audio hops into measurements. How a model is run (backends,
batching across sessions) is ``inference/``'s; per-frame and per-hop arithmetic is in
``kernels/``; what the measurements mean for a candidate (per-second summaries, scores) is
``scoring/``'s. ``analysis.py`` builds, once per process, the measuring parts the
configuration asks for.
"""
