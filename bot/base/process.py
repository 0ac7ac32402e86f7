"""Who this process is, as leases name it: ``host:pid:boot id``; and whether another is dead.

See :mod:`bot.delivery.leases` for how the desk uses it.
"""

from __future__ import annotations

import os
import secrets
import socket

_boot_id = secrets.token_hex(4)
_boot_pid = os.getpid()


def _host() -> str:
    return socket.gethostname()[:80] or "localhost"


def this_process() -> str:
    """This process's lease owner id: ``host:pid:boot id`` (a new boot id after a fork)."""
    global _boot_id, _boot_pid
    if os.getpid() != _boot_pid:
        _boot_id, _boot_pid = secrets.token_hex(4), os.getpid()
    return f"{_host()}:{_boot_pid}:{_boot_id}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:  # a killed process its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def is_dead(owner: str) -> bool:
    """True only when ``owner`` is certainly a process of this host that no longer runs."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # not ours to judge (an older desk, or another scheme)
    host, pid = parts[0], int(parts[1])
    if host != _host() or owner == this_process():
        return False
    if pid == os.getpid():
        return True  # our pid, another boot id: an earlier process that had our pid
    return not _running(pid)
