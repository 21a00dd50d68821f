"""The HTTP door: the same calls, limits, token, TLS and drain as gRPC, on its own port. It never imports
the gRPC door."""
