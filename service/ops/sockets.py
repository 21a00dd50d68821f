"""Listening sockets the process binds itself (the HTTP door, a group of workers' shared port): TCP
by name, and a clear error naming the flag when the address is taken."""

from __future__ import annotations

import socket

from service.core.errors import StartupError


def bind(host: str, port: int, option: int, flag: str = "--port") -> socket.socket:
    """A TCP socket with the socket option `option` on, bound to host:port; StartupError naming the
    flags (`flag` for the port) when the address is taken or is not this machine's."""
    # named TCP, not protocol 0: asyncio sets TCP_NODELAY only on sockets it recognises as TCP, and
    # without it an answer's head and body wait on the caller's delayed acknowledgement (Nagle)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise StartupError(
            f"--host {host} {flag} {port}: {err.strerror or err} (another server, or another group of "
            "workers, already serves it?)"
        ) from err
    return sock


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """StartupError when something listens on host:port already (port 0 is always free): a bind
    without SO_REUSEPORT fails beside any listener, SO_REUSEPORT ones included; SO_REUSEADDR lets it
    past connections of an earlier server still in TIME_WAIT."""
    if port:
        bind(host, port, socket.SO_REUSEADDR, flag).close()
