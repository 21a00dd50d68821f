"""The HTTP front door: the same servicers, limits, token, TLS and drain as gRPC, on its own port."""
