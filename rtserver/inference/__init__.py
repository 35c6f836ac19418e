"""Running models: the engine interface, its backends, and the cross-session batcher.

``engine.py`` gives every model one ``run(batch) -> outputs`` interface over ONNX Runtime
(CPU, CUDA), TensorRT and torch; ``batcher.py`` gathers face crops from every live session
into batches. Which model measures what, and how its output is decoded, is ``perception/``'s;
nothing here knows a face from a voice.
"""
