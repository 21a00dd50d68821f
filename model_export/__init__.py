"""Offline stage: train the attention Transformer sentiment classifier and export it to ONNX."""

__all__: list[str] = []
