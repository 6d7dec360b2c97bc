"""Deadlines and backoff."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Awaitable, Callable

SleepFn = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the ``time.monotonic()`` clock, or none (unbounded)."""

    at: float | None
    clock: Clock = time.monotonic

    @classmethod
    def start(
        cls,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        clock: Clock = time.monotonic,
    ) -> Deadline:
        """The earlier of ``now + timeout`` and the absolute ``deadline``."""
        candidates = [] if deadline is None else [deadline]
        if timeout is not None:
            candidates.append(clock() + max(0.0, timeout))
        return cls(min(candidates) if candidates else None, clock)

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` when unbounded."""
        if self.at is None:
            return None
        return max(0.0, self.at - self.clock())

    @property
    def expired(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0.0

    def clamp(self, seconds: float) -> float:
        """``seconds``, shortened to what is left of the deadline."""
        remaining = self.remaining()
        return seconds if remaining is None else min(seconds, remaining)


def full_jitter_backoff(
    retry: int, *, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """A delay drawn uniformly from [0, min(maximum, initial * 2**retry)] ("full jitter").

    ``retry`` counts from 0 for the first retry.
    """
    cap = min(maximum, initial * (2.0 ** min(retry, 62)))
    return (rng or random).uniform(0.0, cap)
