"""gRPC servicers: convert the request, call the engine, convert the result."""

from service.servicers.inference import InferenceServicer
from service.servicers.sentiment import SentimentServicer

__all__ = ["InferenceServicer", "SentimentServicer"]
