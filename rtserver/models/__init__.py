"""Model files: converting third-party weights into the ONNX graphs the scorers run."""
