"""Free TCP ports on loopback for the stand-ins, the desks and the benchmarks.

Written by hand because the usual trick, ``bind(("127.0.0.1", 0))`` then close and hand the
number on, has a window: the kernel gives a released ephemeral port to the next ``bind(0)``
anywhere on the machine and to the local end of any outgoing connection (a PostgreSQL
connection, an HTTP client's), so between choosing a port and the server binding it another
test worker could take it ("address already in use", seen in CI on a desk's start). The ports
here come from below the kernel's ephemeral range, which nothing hands out by itself; each
pytest-xdist worker (and each process outside pytest) walks a block of its own, from an offset
of its process id so a child process of the same worker starts elsewhere, and every port is
checked by binding it before it is handed out.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

_FLOOR = 15000  # above the well-known and most registered services' ports
_BLOCK = 2000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def _block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    blocks = max(1, (_ephemeral_start() - _FLOOR) // _BLOCK)
    index = int(worker) % blocks if worker.isdigit() else 0
    low = _FLOOR + index * _BLOCK
    return range(low, low + _BLOCK)


def _candidates() -> Iterator[int]:
    block = _block()
    start = (os.getpid() * 131) % len(block)
    for i in itertools.count():
        yield block[(start + i) % len(block)]


_walk: Iterator[int] | None = None
_walk_pid = 0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago and that no other worker will choose."""
    global _walk, _walk_pid
    if _walk is None or _walk_pid != os.getpid():  # a forked child walks from its own offset
        _walk, _walk_pid = _candidates(), os.getpid()
    for _, port in zip(range(_BLOCK), _walk, strict=False):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_block()} on 127.0.0.1")
