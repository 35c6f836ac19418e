"""Model files: pinned third-party weights fetched, checked by sha256 and converted by our
own code into the ONNX graphs the engine runs (``rtserver models fetch``).

Running the models is ``inference/``'s, and what their outputs mean is ``perception/``'s.
"""
