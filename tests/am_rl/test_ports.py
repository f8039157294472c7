"""PortReservation: the reserved port is taken by no one else, yet the service told to use it binds it."""

import errno
import socket

import pytest

from am_rl.ports import PortReservation


def reuseaddr_socket() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s


def test_no_one_else_gets_the_port_while_it_is_reserved():
    with PortReservation() as reserved:
        with socket.socket() as other, pytest.raises(OSError) as err:
            other.bind(("127.0.0.1", reserved.port))
        assert err.value.errno == errno.EADDRINUSE
        # Ephemeral binds (what a library's "free port" or a ZMQ socket does) skip it.
        taken = set()
        for _ in range(5000):
            with reuseaddr_socket() as s:
                s.bind(("127.0.0.1", 0))
                taken.add(s.getsockname()[1])
        assert reserved.port not in taken


def test_the_service_binds_and_serves_on_the_reserved_port():
    with PortReservation() as reserved, reuseaddr_socket() as server:  # what vLLM's and uvicorn's servers do
        server.bind(("127.0.0.1", reserved.port))
        server.listen()
        with socket.create_connection(("127.0.0.1", reserved.port), timeout=5) as client:
            conn, _ = server.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.close()


def test_release_frees_the_port():
    reserved = PortReservation()
    reserved.release()
    with socket.socket() as s:
        s.bind(("127.0.0.1", reserved.port))
