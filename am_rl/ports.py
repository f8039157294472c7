"""Ports for the services the trainer launches (vLLM servers, balancer shards, the reward service)."""

from __future__ import annotations

import socket


class PortReservation:
    """A free port that no other process can take until ``release()``, while the service told to use it still can.

    A port found free and closed at once is free only for that moment: a vLLM server binds its port some 20 s later,
    after its imports, and in CI another process's ephemeral socket took it first ("Address already in use"). This
    socket keeps the port bound (never listening), so the kernel gives it to no ``bind(0)`` and no outgoing
    connection; the service binds it anyway because both sockets set SO_REUSEADDR (vLLM's server socket and
    uvicorn's asyncio server do) and Linux lets SO_REUSEADDR sockets share a port while none of them listens."""

    def __init__(self, host: str = "127.0.0.1"):
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.port: int = self._sock.getsockname()[1]

    def release(self) -> None:
        self._sock.close()

    def __enter__(self) -> PortReservation:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
