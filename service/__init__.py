"""Online stage: the gRPC server that batches callers' texts and runs the model with ONNX Runtime."""

__all__: list[str] = []
