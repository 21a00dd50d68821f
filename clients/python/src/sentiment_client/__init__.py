"""Python client of the sentiment inference service: typed predictions, attention, retries, streaming.

    from sentiment_client import SentimentClient

    with SentimentClient("127.0.0.1:50051") as client:
        prediction = client.predict("A quietly devastating film.", attention="summary")
        print(prediction.label, prediction.score, prediction.attention.tokens)

The generated gRPC modules live in sentiment_client.pb.
"""

from sentiment_client._client import AsyncSentimentClient, SentimentClient
from sentiment_client._retry import RetryPolicy
from sentiment_client.errors import (
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    Overloaded,
    Refused,
    SentimentError,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from sentiment_client.types import (
    Attention,
    AttentionMode,
    BatchInfo,
    Explain,
    Explanation,
    ModelInfo,
    ModelVersion,
    Prediction,
    Priority,
    WordContribution,
)

__all__ = [
    "AsyncSentimentClient",
    "Attention",
    "AttentionMode",
    "BatchInfo",
    "Explain",
    "Explanation",
    "DeadlineExceeded",
    "InvalidInput",
    "ModelInfo",
    "ModelVersion",
    "NotFound",
    "Overloaded",
    "Prediction",
    "Priority",
    "WordContribution",
    "Refused",
    "RetryPolicy",
    "SentimentClient",
    "SentimentError",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]

__version__ = "0.1.0"
