"""Per-replica failure tracking for outlier ejection."""

from __future__ import annotations

from dataclasses import dataclass

from agentmesh.gateway.policy import EjectionPolicy


@dataclass(slots=True)
class ReplicaStats:
    """What the gateway knows of one replica's recent behaviour (monotonic time)."""

    consecutive_failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    in_flight: int = 0

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self.ejections = 0

    def failed(self, now: float, policy: EjectionPolicy, *, may_eject: bool) -> bool:
        """Count a failure; True when this one ejects the replica."""
        self.consecutive_failures += 1
        if not may_eject or self.ejected(now):
            return False
        if self.consecutive_failures < policy.consecutive_failures:
            return False
        # Each ejection in a row lasts longer, up to max_time.
        duration = min(policy.max_time, policy.base_time * 2**self.ejections)
        self.ejections += 1
        self.ejected_until = now + duration
        self.consecutive_failures = 0
        return True
