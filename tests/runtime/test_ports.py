"""Ports handed to services before they start come from outside the ephemeral range."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from agentmesh.runtime import ports


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _spare(*excluding: int) -> int:
    """A free port below the ephemeral range that this process has not handed out."""
    low, _ = ports.ephemeral_range()
    given = set(ports._GIVEN)
    return next(
        p for p in range(10000, low) if p not in excluding and p not in given and _bindable(p)
    )


def test_free_ports_are_distinct_free_and_never_ephemeral() -> None:
    low, high = ports.ephemeral_range()
    found = ports.free_ports(8)
    assert len(set(found)) == 8
    assert all(not low <= port <= high for port in found)
    assert all(_bindable(port) for port in found)


def test_a_consecutive_run_is_consecutive_and_free() -> None:
    base, *rest = ports.free_ports(4, consecutive=True)
    assert rest == [base + 1, base + 2, base + 3]
    assert all(_bindable(port) for port in (base, *rest))


def test_a_port_in_use_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        taken = _spare()
        held.bind(("127.0.0.1", taken))
        held.listen()
        spare = _spare(taken)
        offered = iter([taken, spare])  # the candidates, in the order they are drawn
        monkeypatch.setattr(random, "randint", lambda first, last: next(offered))
        assert ports.free_ports(1) == [spare]


@pytest.mark.parametrize(
    ("content", "expected"),
    [("32768\t60999\n", (32768, 60999)), ("not numbers", (32768, 60999))],
)
def test_the_range_is_the_kernels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, expected: tuple[int, int]
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text(content)
    monkeypatch.setattr(ports, "_RANGE_FILE", ranges)
    assert ports.ephemeral_range() == expected


def test_a_port_is_not_handed_out_twice_before_it_is_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = ports.free_ports(1)[0]  # checked free, not held: still free now
    spare = _spare(first)
    offered = iter([first, spare])
    monkeypatch.setattr(random, "randint", lambda first, last: next(offered))
    assert ports.free_ports(1) == [spare]
