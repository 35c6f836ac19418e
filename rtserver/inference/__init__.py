"""Running models: the engine interface, its backends, and the cross-session batcher.

``engine.py`` gives every model one ``run(batch) -> outputs`` interface over ONNX Runtime
(CPU, CUDA), TensorRT and torch; ``batcher.py`` gathers face crops from every live session
into batches; ``asr.py`` runs the speech-to-text model (Whisper, through faster-whisper)
behind its own ``transcribe(audio) -> segments`` interface; ``sentence_encoder.py`` turns
texts into vectors (all-MiniLM-L6-v2 on ONNX Runtime) behind ``encode(texts) -> vectors``.
Which model measures what, and how its output is decoded, is ``perception/``'s (what a
vector's similarity means is ``scoring/``'s); nothing here knows a face from a voice.
"""
