"""The retry budget. Retry timing is the kernel's :class:`~agentmesh.runtime.resilience.Backoff`
(:attr:`RetryPolicy.backoff <agentmesh.gateway.resilience.policy.RetryPolicy.backoff>`)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RetryBudget:
    """Retries allowed as a share of recent calls, so retries cannot multiply an outage.

    Over the last ``window`` seconds, retries may not exceed
    ``ratio * calls + min_per_second * window``: with the defaults (0.2, 10/s,
    10 s) a healthy agent's occasional failures are always retried, while an
    agent failing every call gets at most 20 % more load plus 10 retries a
    second. Time comes from ``clock`` (monotonic seconds), injectable for tests.
    """

    _SLOTS = 10

    def __init__(
        self,
        *,
        ratio: float,
        min_per_second: float,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._clock = clock
        self._slot_length = window / self._SLOTS
        # (slot index, calls, retries), oldest first.
        self._slots: deque[list[int]] = deque()
        self._calls = 0
        self._retries = 0

    def record_call(self) -> None:
        """Count one call (its first attempt) towards the budget."""
        self._current()[1] += 1
        self._calls += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        slot = self._current()
        if self._retries + 1 > self.ratio * self._calls + self.min_per_second * self.window:
            return False
        slot[2] += 1
        self._retries += 1
        return True

    @property
    def calls(self) -> int:
        self._current()
        return self._calls

    @property
    def retries(self) -> int:
        self._current()
        return self._retries

    def _current(self) -> list[int]:
        index = int(self._clock() / self._slot_length)
        slots = self._slots
        while slots and slots[0][0] <= index - self._SLOTS:
            _, calls, retries = slots.popleft()
            self._calls -= calls
            self._retries -= retries
        if not slots or slots[-1][0] != index:
            slots.append([index, 0, 0])
        return slots[-1]
