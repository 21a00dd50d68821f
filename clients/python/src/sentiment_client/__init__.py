"""Client of the sentiment inference service; the generated gRPC modules live in sentiment_client.pb."""

__all__ = ["__version__"]

__version__ = "0.1.0"
