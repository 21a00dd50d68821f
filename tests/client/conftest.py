"""The client's tests run against the same real servers as the end-to-end tests."""

from tests.e2e.conftest import server, stub

__all__ = ["server", "stub"]
