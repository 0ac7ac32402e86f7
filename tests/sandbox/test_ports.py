"""The loopback ports the tests, the sandbox check and the benchmarks hand to servers."""

from __future__ import annotations

import socket

import pytest

from sandbox import ports


@pytest.fixture
def fresh_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_walk", None)


def test_ports_are_below_the_kernels_ephemeral_range_in_a_block_per_worker(
    monkeypatch: pytest.MonkeyPatch, fresh_walk: None
) -> None:
    seen: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setattr(ports, "_walk", None)
        seen[worker] = {ports.free_port() for _ in range(20)}
        assert len(seen[worker]) == 20  # one process never hands out a port twice in a row
        assert all(p < ports._ephemeral_start() for p in seen[worker])
    assert not seen["gw0"] & seen["gw1"] and not seen["gw1"] & seen["gw2"]


def test_a_port_someone_holds_is_skipped(fresh_walk: None) -> None:
    first = ports.free_port()
    with socket.socket() as held:
        # The next port of this walk, bound by someone else before it is asked for.
        following = next(p for p in range(first + 1, first + 100) if _bindable(p))
        held.bind(("127.0.0.1", following))
        held.listen()
        assert ports.free_port() not in {first, following}


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
