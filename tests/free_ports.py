"""Free ports for tests whose servers listen on ports chosen before they start."""

from __future__ import annotations

import socket
from collections.abc import Collection


def free_port_pair(taken: Collection[int] = ()) -> int:
    """A free port p with p + 1 free too (balancer shards listen on consecutive ports), neither in ``taken``."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("", 0))
            port = first.getsockname()[1]
            if port in taken or port + 1 in taken:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")
