"""Ports to hand to a service before it starts, from outside the kernel's ephemeral range.

A port that ``bind((host, 0))`` returns is free at that moment, but it comes
from the range the kernel also takes outgoing connections' local ports from:
until the service binds it, any connection made on the machine (a gRPC
channel, an exporter, a browser) may take it, and the service then fails
with "address already in use". Ports below that range (above it when there is
no room below) are only ever taken by a process that binds them on purpose.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections import deque
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LINUX_DEFAULT = (32768, 60999)
_LOWEST = 10000  # below: well-known and commonly configured service ports
_TRIES = 200
# Ports handed out lately by this process: a port is only checked free, not held, so
# two calls before the first service binds could otherwise draw the same one.
_GIVEN: deque[int] = deque(maxlen=4096)
_GIVING = threading.Lock()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (Linux's default if unknown)."""
    try:
        low, high = (int(part) for part in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return _LINUX_DEFAULT
    return low, high


def free_ports(count: int, host: str = "127.0.0.1", *, consecutive: bool = False) -> list[int]:
    """``count`` distinct ports free on ``host`` right now, none in the ephemeral range
    (``consecutive``: a run of ``count``). Raises RuntimeError when none can be found."""
    low, high = ephemeral_range()
    if low - _LOWEST >= 2 * count:
        first, last = _LOWEST, low - 1
    elif 65535 - high >= 2 * count:
        first, last = high + 1, 65535
    else:  # no room outside the range: any unprivileged port
        first, last = 1024, 65535
    found: list[int] = []
    size = count if consecutive else 1
    with _GIVING:
        for _ in range(_TRIES):
            start = random.randint(first, last - size + 1)
            candidates = range(start, start + size)
            if any(p in found or p in _GIVEN for p in candidates):
                continue
            if _all_free(list(candidates), host):
                found += candidates
                if len(found) == count:
                    _GIVEN.extend(found)
                    return found
    raise RuntimeError(f"no {count} free ports on {host} between {first} and {last}")


def _all_free(ports: list[int], host: str) -> bool:
    try:
        with contextlib.ExitStack() as held:
            for port in ports:
                held.enter_context(socket.socket(_family(host))).bind((host, port))
    except OSError:
        return False
    return True


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


__all__ = ["ephemeral_range", "free_ports"]
